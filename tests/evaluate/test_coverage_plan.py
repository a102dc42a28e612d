"""Coverage counting and the automatic plan on score dicts (no models): where each image is
counted, which cells are empty or thin, and which edits the plan asks for, in which order,
from which sources."""

from __future__ import annotations

import pytest

from likeness.evaluate.card_spec import load_card_spec
from likeness.evaluate.coverage import (
    CoverageError,
    angle_steps,
    card_grid,
    count_coverage,
)
from likeness.evaluate.enrich_plan import PlanEdit, auto_plan, source_rank

GRID = card_grid()


def score(sha, angle="front", expression="neutral", *, faces=1, ok=True, sharp=100.0,
          match=8.0, flags=(), error=None):  # fmt: skip
    return {"sha256": sha, "faces": faces, "angle": angle if faces else None,
            "expression": expression if faces else None, "pass": ok, "sharpness": sharp,
            "match": match, "flags": list(flags), "error": error}  # fmt: skip


def test_the_grid_is_the_cards_twenty_portraits_in_card_order():
    spec = load_card_spec()
    assert len(GRID.cells) == 20 and GRID.cells[0] == ("front", "neutral")
    assert GRID.cells == tuple((s.angle, s.expression) for s in spec.shots if s.kind == "portrait")
    assert GRID.angles == ("front", "half_left", "profile_left", "half_right", "profile_right")
    assert GRID.expressions == ("neutral", "smiling", "angry", "sad")
    assert angle_steps("front", "profile_left") == 2
    assert angle_steps("half_right", "half_left") == 2


def test_images_are_counted_in_their_cell_or_off_the_grid_with_a_reason():
    scores = [
        score("a", "front", "smiling"),
        score("b", "front", "smiling"),
        score("b", "front", "smiling"),  # the same image twice counts once
        score("c", "half_left", "neutral"),
        score("d", faces=0),
        score("e", "front", "unsure"),
        score("f", "profile_right", "other"),
        score("g", error="cannot read g.png"),
    ]
    coverage = count_coverage(scores, GRID, thin_below=2)
    assert coverage.cell("front", "smiling").images == ("a", "b")
    assert coverage.cell("front", "smiling").state == "ok"
    assert coverage.cell("half_left", "neutral").state == "thin"
    assert coverage.cell("profile_left", "sad").state == "empty"
    assert len(coverage.empty) == 18 and len(coverage.thin) == 1
    assert coverage.off_grid == {"no face": 1, "expression unsure": 1, "expression other": 1,
                                 "unreadable": 1}  # fmt: skip
    data = coverage.to_json()
    assert (data["images"], data["counted"], data["empty"], data["thin"]) == (7, 3, 18, 1)
    assert [p["cell"] for p in data["placements"]][:3] == [
        ["front", "smiling"],
        ["front", "smiling"],
        ["half_left", "neutral"],
    ]
    with pytest.raises(CoverageError, match="at least 1"):
        count_coverage(scores, GRID, thin_below=0)


def test_the_plan_asks_for_empty_cells_first_then_thin_ones_round_by_round():
    covered = [score("x", "front", "smiling"), score("y", "front", "neutral"),
               score("z", "front", "neutral")]  # fmt: skip
    coverage = count_coverage(covered, GRID, thin_below=3)
    sources = [score("x", "front", "smiling", sharp=300), score("y", "front", "neutral"),
               score("z", "front", "neutral", sharp=50)]  # fmt: skip
    plan = auto_plan(coverage, sources, per_source=100)
    cells = [(e.angle, e.expression) for e in plan.edits]
    empty = [c for c in GRID.cells if c not in {("front", "smiling"), ("front", "neutral")}]
    # Round one: each empty cell once in card order, then the thin ones (fewest first).
    assert cells[:18] == empty
    assert cells[18:20] == [("front", "smiling"), ("front", "neutral")]
    # Round two starts again with the empty cells.
    assert cells[20] == empty[0]
    # Never twice the same source for a cell; never a source already in the cell.
    pairs = [(e.source, e.angle, e.expression) for e in plan.edits]
    assert len(pairs) == len(set(pairs))
    assert ("x", "front", "smiling") not in pairs and ("y", "front", "neutral") not in pairs
    # Fewest changes first: a neutral source for a neutral half turn, a smiling one for a smile.
    first = {(e.angle, e.expression): e for e in reversed(plan.edits)}
    assert first[("half_left", "neutral")].source == "y"  # 1 change, sharper than z
    assert first[("half_left", "smiling")].source == "x"
    assert first[("profile_left", "angry")].source == "x"  # 3 changes for all: sharpest
    assert "toward the left side" in first[("half_left", "neutral")].instruction
    assert "neutral" not in first[("half_left", "neutral")].instruction.split(";")[0]


def test_the_plan_respects_the_budget_and_skips_unusable_or_tried_sources():
    coverage = count_coverage([], GRID, thin_below=1)
    sources = [
        score("ok", "front", "neutral", sharp=50),
        score("other", "front", "neutral", ok=False, sharp=400),  # identity fails
        score("group", "front", "neutral", flags=["multiple_faces"], sharp=400),
        score("blurry", "front", "neutral", flags=["blurry"], sharp=400),
        score("noface", faces=0),
    ]
    assert source_rank(sources[1], "half_left", "neutral") is None
    assert source_rank(sources[2], "half_left", "neutral") is None
    assert source_rank(sources[4], "half_left", "neutral") is None
    assert source_rank(sources[0], "front", "neutral") is None  # already there
    plan = auto_plan(coverage, sources, per_source=2)
    # A flagged source comes after a clean one needing as many changes.
    assert [e.source for e in plan.edits] == ["ok", "ok", "blurry", "blurry"]
    assert [(e.angle, e.expression) for e in plan.edits] == list(GRID.cells[1:5])
    # front/neutral: every usable source is already there; the rest: the budget is spent.
    assert plan.unfilled == tuple(
        f"{a}/{x} (0 of 1 edits)" for a, x in (GRID.cells[0], *GRID.cells[5:])
    )

    def tried(edit: PlanEdit) -> bool:
        return edit.source == "ok" and edit.angle == "front"

    again = auto_plan(coverage, sources, per_source=1, tried=tried)
    assert [(e.source, e.angle, e.expression) for e in again.edits] == [
        ("blurry", "front", "smiling"),
        ("ok", "half_left", "neutral"),
    ]
