"""One loop turn on real faces: generate, score, auto-filter, dedup, queue; then wait."""

from __future__ import annotations

import pytest

from likeness.evaluate.current import RECIPE_FILE, current_recipe
from likeness.evaluate.loop import LOOP_REVIEWER, run_loop_turn, status
from likeness.recipes import Recipe, RecipeError
from likeness.review.decisions import decide, get_review, history
from likeness.store.images import get_image

from .photo_engine import PhotoEngine

# seed -> photo: Obama at a new angle (kept), Biden (wrong person), Obama with his face cut
# off (flag), a copy of a source photo (duplicate), a second new Obama (kept).
TURN1 = {0: "obama2.jpg", 1: "biden.jpg", 2: "obama_partial_face.jpg", 3: "obama.jpg",
         4: "obama_partial_face2.jpg"}  # fmt: skip


def run(ws, scorer, engine, recipe, **kw):
    return run_loop_turn(ws, recipe, lambda: engine, lambda: scorer, **kw)


def test_loop_turn_filters_queues_and_waits(face_ws, scorer):
    Recipe(model="photos", prompt="photo of a man").write_toml(face_ws.root / RECIPE_FILE)
    recipe = current_recipe(face_ws)
    assert recipe.trigger == face_ws.settings.character.trigger
    engine = PhotoEngine(lambda r, seed: TURN1.get(seed, "obama2.jpg"))

    result = run(face_ws, scorer, engine, recipe, n=4)
    outcomes = [c.outcome for c in result.candidates]
    assert outcomes == ["queued", "filtered", "filtered", "duplicate"]
    by_pos = {c.position: c for c in result.candidates}
    assert by_pos[1].reason.startswith("identity: match")
    assert by_pos[2].reason == "flags: face_cut_off"
    assert by_pos[3].reason.startswith("same face and shot as")
    # Auto-rejections are review decisions a person can see and undo; duplicates are set aside.
    rejected = get_review(face_ws.db, by_pos[1].image_sha)
    assert rejected.decision == "rejected" and rejected.reviewer == LOOP_REVIEWER
    assert "wrong_identity" in rejected.tags
    assert get_image(face_ws.db, by_pos[3].image_sha).excluded
    assert get_review(face_ws.db, by_pos[0].image_sha).decision == "undecided"
    assert result.waiting_for == "review" and "likeness review" in result.next_step

    # Called again while the review waits: reports, generates nothing.
    calls = len(engine.calls)
    waiting = run(face_ws, scorer, engine, recipe, n=4)
    assert waiting.turn == result.turn and waiting.generated == 0
    assert len(engine.calls) == calls
    # A person accepts the queued image: now training is what is missing.
    decide(face_ws.db, by_pos[0].image_sha, "accepted", reviewer="ana")
    after = status(face_ws)
    assert after.waiting_for == "training" and "to-dataset" in after.next_step
    # A new recipe (a new LoRA, say) starts the next turn with fresh seeds.
    newer = recipe.with_overrides({"cfg": 5.0})
    nxt = run(face_ws, scorer, engine, newer, n=2)
    assert nxt.turn == result.turn + 1
    assert [c.seed for c in nxt.candidates] == [4, 5]
    # Seed 4: face cut off; seed 5: the very image the person accepted (left as it is).
    assert [c.outcome for c in nxt.candidates] == ["filtered", "duplicate"]
    assert nxt.candidates[1].image_sha == by_pos[0].image_sha
    assert get_review(face_ws.db, by_pos[0].image_sha).decision == "accepted"
    assert not get_image(face_ws.db, by_pos[0].image_sha).excluded
    assert history(face_ws.db, by_pos[0].image_sha)[-1].reviewer == "ana"


def test_interrupted_turn_resumes_without_regenerating(face_ws, scorer):
    recipe = Recipe(model="photos", prompt="photo of a man", trigger="zq1x")
    engine = PhotoEngine(lambda r, seed: "obama2.jpg" if seed % 2 == 0 else "biden.jpg",
                         fail_after=2)  # fmt: skip
    with pytest.raises(KeyboardInterrupt):
        run(face_ws, scorer, engine, recipe, n=4)
    stopped = status(face_ws)
    assert stopped.waiting_for == "generation" and len(stopped.candidates) == 2
    engine.fail_after = None
    resumed = run(face_ws, scorer, engine, recipe, n=4)
    assert resumed.turn == stopped.turn and len(resumed.candidates) == 4
    assert resumed.generated == 2 and len(engine.calls) == 4
    # The engine repeats itself (same bytes for seeds 2 and 3): never queued or judged twice.
    assert [c.outcome for c in resumed.candidates] == ["queued", "filtered", "duplicate",
                                                       "duplicate"]  # fmt: skip


def test_allowed_flags_do_not_reject(face_ws, scorer):
    recipe = Recipe(model="photos", prompt="photo of a man", trigger="zq1x")
    engine = PhotoEngine(lambda r, seed: "obama_partial_face.jpg")
    result = run(face_ws, scorer, engine, recipe, n=1, allow_flags=("face_cut_off",))
    assert [c.outcome for c in result.candidates] == ["queued"]


def test_missing_recipe_names_the_file(face_ws):
    with pytest.raises(RecipeError, match="recipe.toml"):
        current_recipe(face_ws)
