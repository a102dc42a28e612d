"""A Qwen-Image-Edit LoRA (family ``qwen_image_edit``) trained on a dataset version's edit
pairs, on a tiny random-weight edit pipeline: the loss falls on a fixed batch, the file's keys
come from the model's own module names in the layout ComfyUI maps for Qwen-Image, the file
reloads in diffusers and edits as the in-memory model does, a second run encodes nothing, and
checkpoints are judged by edit probes of the source photos."""

from __future__ import annotations

from likeness.train.run import train_lora
from tests.train.conftest import fast_recipe


def edit_recipe(model, **fields):
    return fast_recipe(model, "qwen_image_edit", "edits@v1", **fields)


def test_a_run_trains_on_the_edit_pairs_and_a_second_run_encodes_nothing(train_ws, qwen_edit_model):
    recipe = edit_recipe(qwen_edit_model, steps=6, checkpoint_every=3, batch=2)
    result = train_lora(train_ws, recipe, device="cpu")
    assert result.state == "done"
    assert result.cache == {"latents_encoded": 4, "latents_cached": 0,
                            "texts_encoded": 4, "texts_cached": 0}  # fmt: skip
    again = train_lora(train_ws, recipe.with_overrides({"seed": 7}), device="cpu")
    assert again.cache["latents_encoded"] == 0 and again.cache["texts_encoded"] == 0


def test_checkpoints_are_judged_by_edits_of_the_source_photos(train_ws, qwen_edit_model):
    from tests.train.conftest import TINY_JUDGE

    judge = {**TINY_JUDGE, "probes": ["half_left"], "seeds": [1]}
    recipe = edit_recipe(qwen_edit_model, steps=2, checkpoint_every=2, judge=judge)
    result = train_lora(train_ws, recipe, device="cpu")
    (checkpoint,) = result.checkpoints
    metrics = checkpoint["metrics"]
    assert metrics["via"] == "in-memory" and metrics["probes"] == 1 and metrics["failed"] == 0
    for key in ("match", "pass_rate", "grain", "plastic", "memorised", "objective"):
        assert key in metrics
    assert result.best is not None and result.best["step"] == 2
    (probe,) = train_ws.db.execute("SELECT shot, prompt, image_sha FROM train_probes").fetchall()
    assert probe["shot"] == "half_left" and probe["prompt"].startswith("turn the head halfway")
    from PIL import Image

    with Image.open(train_ws.blobs.path(probe["image_sha"])) as image:
        assert image.size == (64, 64)  # the judge's width and height
