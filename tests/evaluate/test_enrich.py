"""Enrichment on real faces: the edit photo engine "edits" by returning sample photos, and the
real measures decide what is kept: Obama turned as asked is kept as `enriched` with its
provenance; Biden (another person), a head that did not turn and a wrong expression are
rejected with their reasons; an engine failure is retried by the next run."""

from __future__ import annotations

import json
import re

import pytest

from likeness.curate.ingest import Ingester
from likeness.data import FACES
from likeness.evaluate import enrich_store
from likeness.evaluate.coverage import card_grid, choose_images
from likeness.evaluate.edit_recipe import EditRecipe
from likeness.evaluate.enrich import (
    coverage_with_enrichments,
    edit_key,
    judge_edit,
    plan_for,
    run_enrich,
)
from likeness.evaluate.enrich_plan import (
    KEEP_IDENTITY,
    Plan,
    PlanEdit,
    default_instruction,
    load_plan,
)
from likeness.jobs import job_key
from likeness.pnginfo import read_pnginfo
from likeness.store.images import get_image, list_images

from .edit_engine import EditPhotoEngine, by_keywords

RECIPE = EditRecipe(model="photos", steps=1, seed=3, max_side=256)


def source_shas(ws) -> dict[str, str]:
    """Original file name -> sha256 of the workspace's source photos."""
    return {r.original_name: r.sha256 for r in list_images(ws.db, origins=["source"])}


def asked(source: str, angle: str | None, expression: str | None, text: str = "") -> PlanEdit:
    return PlanEdit(source, angle, expression, text or default_instruction(angle, expression))


def run(ws, scorer, edits, engine=None, recipe=RECIPE):
    plan = Plan(edits=tuple(edits), origin="test")
    engine = engine or EditPhotoEngine()
    key = job_key("enrich", plan.plan_hash(), recipe.recipe_hash())
    return run_enrich(ws, plan, engine, recipe, scorer, key=key), engine


def test_edits_are_kept_or_rejected_on_real_faces(face_ws, scorer):
    src = source_shas(face_ws)
    obama, obama3 = src["obama.jpg"], src["obama3.jpg"]
    edits = [
        asked(obama, "half_right", "smiling"),  # -> obama_partial_face2: Obama turned right
        asked(obama, "front", "angry"),  # -> biden: another person
        asked(obama, "profile_right", "smiling"),  # -> obama.jpg: the head did not turn
        asked(obama3, "half_left", "smiling"),  # -> obama2: turned left, not smiling
        asked(obama3, "half_right", "smiling"),  # -> the photo the first edit already gave
    ]
    result, engine = run(face_ws, scorer, edits)
    by_cell = {(o.edit.source, o.edit.cell): o for o in result.outcomes}
    assert [o.verdict for o in result.outcomes] == ["kept", *["rejected"] * 4]
    assert (result.kept, result.rejected, result.failed) == (1, 4, 0)

    # Kept: stored as `enriched`, with its provenance in the database and in the PNG.
    kept = by_cell[(obama, "half_right/smiling")]
    image = get_image(face_ws.db, kept.image_sha)
    assert image.origin == "enriched" and image.original_name.startswith(f"enrich-{obama[:8]}")
    (row,) = [r for r in enrich_store.get_edits(face_ws.db, [kept.key]).values()]
    prov = row.provenance
    assert prov["source_sha256"] == obama and prov["cell"] == {
        "angle": "half_right",
        "expression": "smiling",
    }
    assert prov["instruction"] == edits[0].instruction and KEEP_IDENTITY in prov["instruction"]
    assert prov["model"] == "photos" and prov["seed"] == 0 and prov["recipe"]["seed"] == 3
    assert prov["score"]["pass"] is True and prov["score"]["angle"] == "half_right"
    assert prov["score"]["match"] >= 7.0
    assert read_pnginfo(face_ws.blobs.read(kept.image_sha)) is not None

    # Another person: identity fails (Biden also faces the other way and is not angry).
    biden = by_cell[(obama, "front/angry")]
    assert biden.image_sha is None and biden.result_sha is not None
    assert any(r.startswith("identity: match ") and r.endswith("< 5") for r in biden.reasons)
    # The head did not turn: identity holds, the angle is the reason.
    still = by_cell[(obama, "profile_right/smiling")]
    (turn,) = [r for r in still.reasons if r.startswith(("identity", "angle"))]
    assert turn.startswith("angle: front (yaw ") and turn.endswith("), asked profile_right")
    # Turned as asked but not smiling: only the expression fails.
    (reason,) = by_cell[(obama3, "half_left/smiling")].reasons
    assert reason.startswith("expression: ") and reason.endswith(", asked smiling")
    # The same photo again: not stored twice.
    (again,) = by_cell[(obama3, "half_right/smiling")].reasons
    assert again == f"unchanged: the edit returned a stored enriched image ({kept.image_sha[:12]})"
    assert len(list_images(face_ws.db, origins=["enriched"])) == 1

    # Sources were shrunk to max_side before the edit.
    assert all(max(size) <= RECIPE.max_side for _, size in engine.calls)

    # The same plan again: every edit is found decided, nothing is made or stored.
    second, engine2 = run(face_ws, scorer, edits)
    assert not engine2.calls and second.resumed is False
    assert [o.verdict for o in second.outcomes] == [o.verdict for o in result.outcomes]
    assert not any(o.fresh for o in second.outcomes)
    assert face_ws.db.execute("SELECT COUNT(*) FROM enrich_edits").fetchone()[0] == 5


def test_a_failed_edit_is_made_again_by_the_next_run(face_ws, scorer):
    obama = source_shas(face_ws)["obama.jpg"]
    edit = asked(obama, "half_right", "smiling")
    first, _ = run(face_ws, scorer, [edit], engine=EditPhotoEngine(lambda text: "error"))
    (failed,) = first.outcomes
    assert failed.verdict == "failed" and failed.reasons[0].startswith("engine: EngineError")
    working = EditPhotoEngine(lambda text: "obama_partial_face2.jpg")
    second, engine = run(face_ws, scorer, [edit], engine=working)
    assert len(engine.calls) == 1 and second.outcomes[0].verdict == "kept"
    rows = face_ws.db.execute("SELECT verdict FROM enrich_edits").fetchall()
    assert [r[0] for r in rows] == ["kept"]


def test_another_recipe_makes_new_edits(face_ws, scorer):
    obama = source_shas(face_ws)["obama.jpg"]
    edit = asked(obama, "half_left", "smiling")
    assert edit_key(edit, RECIPE) != edit_key(edit, EditRecipe(model="photos", seed=4))
    run(face_ws, scorer, [edit])
    _, engine = run(face_ws, scorer, [edit], recipe=EditRecipe(model="photos", seed=4))
    assert len(engine.calls) == 1


def test_judge_names_every_failing_reason():
    edit = PlanEdit("a" * 64, "half_left", "sad", "x")
    score = {"faces": 1, "match": 3.26, "pass": False, "angle": "front", "yaw": 4.4,
             "expression": "smiling"}  # fmt: skip
    assert judge_edit(score, edit, 5.0) == [
        "identity: match 3.3 < 5",
        "angle: front (yaw +4), asked half_left",
        "expression: smiling, asked sad",
    ]
    assert judge_edit({"faces": 0, "match": None}, edit, 5.0)[0] == "identity: no face found"
    fix = PlanEdit("a" * 64, None, None, "restore natural skin texture")
    assert judge_edit({**score, "match": 7.0, "pass": True}, fix, 5.0) == []
    # A workspace that asks for more than the backend's bar.
    assert judge_edit({**score, "match": 6.0, "pass": True}, fix, 7.0) == [
        "identity: match 6.0 < 7"
    ]


def test_auto_plan_on_real_sources_asks_for_empty_cells_first(face_ws, instruments):
    chosen = choose_images(face_ws, origins=["source"])
    coverage, _ = coverage_with_enrichments(face_ws, chosen.shas, card_grid(), 3,
                                            instruments=instruments, workers=1)  # fmt: skip
    plan = plan_for(face_ws, chosen, RECIPE, thin_below=3, per_source=100,
                    instruments=instruments, workers=1)  # fmt: skip
    src = source_shas(face_ws)
    # obama.jpg is front/smiling (thin); obama3.jpg is front and not smiling. The first round
    # asks every empty cell once in card order, then the thin ones.
    empty = [(c.angle, c.expression) for c in coverage.empty]
    thin = [(c.angle, c.expression) for c in coverage.thin]
    assert len(empty) >= 18 and ("front", "smiling") in thin
    cells = [(e.angle, e.expression) for e in plan.edits]
    assert cells[: len(empty)] == empty
    assert cells[len(empty) : len(empty) + len(thin)] == thin
    # Each source at most once per cell, never the source already in the cell.
    pairs = [(e.source, e.angle, e.expression) for e in plan.edits]
    assert len(pairs) == len(set(pairs))
    assert (src["obama.jpg"], "front", "smiling") not in pairs
    # Two sources: every empty cell gets both, each from the better source first.
    assert len(plan.edits) == 2 * len(empty) + len(thin)
    # Both sources are frontal: for a half turn keeping the smile, obama.jpg needs one change.
    half_left = [e for e in plan.edits if (e.angle, e.expression) == ("half_left", "smiling")]
    assert half_left[0].source == src["obama.jpg"]
    assert half_left[0].instruction == default_instruction(
        "half_left", "smiling", "front", "smiling"
    )
    assert "smile" not in half_left[0].instruction  # the expression is already there

    # A budget of one edit per source plans two edits, for the first two empty cells.
    small = plan_for(face_ws, chosen, RECIPE, thin_below=3, per_source=1,
                     instruments=instruments, workers=1)  # fmt: skip
    assert [(e.angle, e.expression) for e in small.edits] == empty[:2]
    assert {e.source for e in small.edits} == set(src.values())


def test_plan_toml_round_trip_and_errors(face_ws, tmp_path):
    src = source_shas(face_ws)
    plan = Plan(
        edits=(
            asked(src["obama.jpg"], "half_left", "neutral", 'turn "left", then\ttilt'),
            asked(src["obama3.jpg"], None, "sad"),
        ),
        selection="origin source",
        thin_below=3,
        per_source=2,
        unfilled=("profile_left/sad",),
    )
    path = tmp_path / "plan.toml"
    path.write_text(plan.to_toml(), encoding="utf-8")
    back = load_plan(path, face_ws.db)
    assert back.edits == plan.edits and back.plan_hash() == plan.plan_hash()
    assert (back.thin_below, back.per_source, back.selection) == (3, 2, "origin source")

    # A short sha prefix resolves; an instruction left out gets the default text.
    path.write_text(
        f'[[edits]]\nsource = "{src["obama.jpg"][:10]}"\nangle = "half_right"\n', encoding="utf-8"
    )
    (edit,) = load_plan(path, face_ws.db).edits
    assert edit.source == src["obama.jpg"] and edit.instruction == default_instruction(
        "half_right", None
    )

    for text, message in [
        ('[[edits]]\nsource = "abc"\n', "must be a sha256 or a prefix of 6"),
        ('[[edits]]\nsource = "ffffffffff"\n', "matches no stored image"),
        (f'[[edits]]\nsource = "{src["obama.jpg"]}"\nangle = "left"\n', "'left' is not one of"),
        (f'[[edits]]\nsource = "{src["obama.jpg"]}"\nmood = "sad"\n', "unknown key 'mood'"),
        ("edits = 3\n", "edits must be [[edits]] tables"),
        ("[[edits\n", "not valid TOML"),
    ]:
        path.write_text(text, encoding="utf-8")
        with pytest.raises(ValueError, match=re.escape(message)):
            load_plan(path, face_ws.db)


def test_edit_recipe_checks_its_fields(tmp_path):
    path = tmp_path / "edit.toml"
    path.write_text('model = "~/qwen"\nsteps = 8\nloras = [{ path = "a.safetensors" }]\n')
    recipe = EditRecipe.from_toml_file(path)
    assert recipe.steps == 8 and recipe.loras[0].strength == 1.0
    assert EditRecipe.from_dict(recipe.to_dict()) == recipe
    for text, message in [
        ('model = "m"\nstep = 3\n', "did you mean 'steps'"),
        ('model = "m"\nengine = "comfyui"\n', "has no instruction-edit model"),
        ("steps = 3\n", "model: '' is empty"),
        ('model = "m"\nmax_side = 10\n', "must be between 64 and 8192"),
        ('model = "m"\nloras = ["a"]\n', "must be a table with a path"),
        ('model = "m"\nseed = 1.5\n', "must be a whole number"),
    ]:
        path.write_text(text)
        with pytest.raises(ValueError, match=re.escape(message)):
            EditRecipe.from_toml_file(path)


def test_enriched_images_count_in_coverage_but_are_never_sources(face_ws, scorer, instruments):
    obama = source_shas(face_ws)["obama.jpg"]
    result, _ = run(face_ws, scorer, [asked(obama, "half_right", "smiling")])
    kept = result.outcomes[0].image_sha
    chosen = choose_images(face_ws, origins=["source"])
    plan = plan_for(face_ws, chosen, None, thin_below=1, per_source=100,
                    instruments=instruments, workers=1)  # fmt: skip
    cells = {(e.angle, e.expression) for e in plan.edits}
    assert ("half_right", "smiling") not in cells  # filled by the kept edit
    assert kept not in {e.source for e in plan.edits}
    # A dataset holding the enriched image: counted, still not a source.
    with_enriched = choose_images(face_ws, origins=["source", "enriched"])
    plan = plan_for(face_ws, with_enriched, None, thin_below=1, per_source=100,
                    instruments=instruments, workers=1)  # fmt: skip
    assert kept not in {e.source for e in plan.edits}


def test_a_synthetic_photo_can_be_a_source(face_ws, scorer):
    ingester = Ingester(face_ws, origin="synthetic")
    extra = ingester.ingest_file(FACES / "obama2.jpg").sha256
    result, _ = run(face_ws, scorer, [asked(extra, "half_right", "smiling")])
    assert result.outcomes[0].verdict == "kept"
    assert (
        json.loads(face_ws.db.execute("SELECT provenance FROM enrich_edits").fetchone()[0])[
            "source_sha256"
        ]
        == extra
    )


def test_default_instructions_only_ask_for_what_changes():
    text = default_instruction("profile_left", "angry", "front", "neutral")
    assert text.startswith("turn the head 90 degrees toward the left side")
    assert "angry" in text and text.endswith(KEEP_IDENTITY)
    assert default_instruction("front", "smiling", "front", "neutral").startswith(
        "make the person smile"
    )
    assert by_keywords(default_instruction("half_right", "neutral", "front", "neutral")) == (
        "obama_partial_face2.jpg"
    )
    assert by_keywords(default_instruction("profile_right", "smiling", "front", "smiling")) == (
        "obama.jpg"
    )


def test_a_source_whose_file_is_gone_fails_its_edit_only(face_ws, scorer):
    lost = Ingester(face_ws, origin="synthetic").ingest_file(FACES / "obama2.jpg").sha256
    face_ws.blobs.path(lost).unlink()
    obama = source_shas(face_ws)["obama.jpg"]
    result, engine = run(
        face_ws, scorer, [asked(lost, "front", "smiling"), asked(obama, "half_right", "smiling")]
    )
    gone, turned = result.outcomes
    assert gone.verdict == "failed" and gone.reasons[0].startswith("source: ")
    assert turned.verdict == "kept" and len(engine.calls) == 1
