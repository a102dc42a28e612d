"""A Qwen-Image-Edit LoRA (family ``qwen_image_edit``) trained on a dataset version's edit
pairs, on a tiny random-weight edit pipeline: the loss falls on a fixed batch, the file's keys
come from the model's own module names in the layout ComfyUI maps for Qwen-Image, the file
reloads in diffusers and edits as the in-memory model does, a second run encodes nothing, and
checkpoints are judged by edit probes of the source photos."""

from __future__ import annotations

import math

import pytest

from likeness.recipes import RecipeError
from likeness.train.recipe import TrainRecipe
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

    # Other judge settings: the trained run is judged again, from its file this time.
    rejudged = train_lora(
        train_ws, recipe.with_overrides({"judge": {**judge, "strength": 0.5}}), device="cpu"
    )
    assert rejudged.already_trained
    (checkpoint,) = rejudged.checkpoints
    assert checkpoint["metrics"]["via"] == "file" and checkpoint["metrics"]["failed"] == 0


RELOAD_TOLERANCE = 1e-5
"""Largest absolute difference between the transformer's output with the saved file loaded by
diffusers and with the trainer's in-memory peft layers (fp32 files, fp32 model)."""


def _transformer_inputs(transformer):
    import torch

    generator = torch.Generator().manual_seed(0)
    hidden = torch.randn((1, 8, transformer.config.in_channels), generator=generator)
    text = torch.randn((1, 5, transformer.config.joint_attention_dim), generator=generator)
    return {
        "hidden_states": hidden,
        "encoder_hidden_states": text,
        "timestep": torch.tensor([0.6]),
        "img_shapes": [[(1, 2, 2), (1, 2, 2)]],
        "return_dict": False,
    }


def test_the_file_has_comfyui_keys_from_the_modules_and_reloads_in_diffusers(
    train_ws, qwen_edit_model
):
    import torch
    from diffusers import QwenImageEditPipeline
    from peft.tuners.lora import LoraLayer
    from safetensors import safe_open

    from likeness.engines.diffusers.edit import pipeline_overrides
    from likeness.train import store
    from likeness.train.loop import TrainHooks

    seen = {}

    def at_checkpoint(event):
        denoiser = event.model.denoiser
        seen["modules"] = {n for n, m in denoiser.named_modules() if isinstance(m, LoraLayer)}
        seen["weights"] = set(denoiser.state_dict())
        denoiser.eval()
        with torch.no_grad():
            seen[event.step] = denoiser(**_transformer_inputs(denoiser))[0]
        return None

    recipe = edit_recipe(qwen_edit_model, steps=12, checkpoint_every=4, learning_rate=5e-3)
    result = train_lora(train_ws, recipe, device="cpu",
                        hooks=TrainHooks(on_checkpoint=at_checkpoint))  # fmt: skip

    # The loss on a fixed batch falls.
    fixed = [c.fixed_loss for c in store.list_checkpoints(train_ws.db, result.run_id)]
    assert all(math.isfinite(v) for v in fixed)
    assert fixed[-1] < fixed[0], f"the fixed-batch loss did not fall: {fixed}"

    # Keys: diffusion_model.<module path> of every LoRA layer the model holds, nothing else.
    with safe_open(result.final_lora, framework="pt") as handle:
        keys, metadata = set(handle.keys()), handle.metadata()
        alphas = {float(handle.get_tensor(k)) for k in keys if k.endswith(".alpha")}
    suffixes = (".lora_A.weight", ".lora_B.weight", ".alpha")
    modules = {k.removeprefix("diffusion_model.").rsplit(".lora_", 1)[0].removesuffix(".alpha")
               for k in keys}  # fmt: skip
    assert all(k.startswith("diffusion_model.") and k.endswith(suffixes) for k in keys)
    assert modules == seen["modules"] and len(keys) == 3 * len(modules)
    # ComfyUI maps "diffusion_model.<path>" onto its weight "diffusion_model.<path>.weight":
    # the base weight of every named module exists under that path.
    for module in modules:
        assert f"{module}.base_layer.weight" in seen["weights"]
    assert alphas == {8.0}  # the trained alpha, not the rank (4)
    assert metadata["likeness_family"] == "qwen_image_edit"
    assert metadata["ss_network_dim"] == "4" and metadata["likeness_dataset"] == "edits@v1"
    assert metadata["modelspec.architecture"] == "qwen-image-edit/lora"
    from pathlib import Path

    from likeness.store.loras import lora_by_sha256
    from likeness.train.lora_files import guess_family, inspect_lora

    info = inspect_lora(Path(result.final_lora))
    assert (info.family, info.rank, info.alpha) == ("qwen_image_edit", 4, 8.0)
    assert guess_family({k: {} for k in keys}, {}) == ("qwen_image_edit", "keys")
    recorded = lora_by_sha256(train_ws.db, result.checkpoints[-1]["sha256"])
    assert recorded is not None and recorded.family == "qwen_image_edit"

    # The file loads with diffusers' own loader and gives the in-memory model's output.
    pipe = QwenImageEditPipeline.from_pretrained(
        str(qwen_edit_model), local_files_only=True,
        **pipeline_overrides(qwen_edit_model, "QwenImageEditPipeline"),
    )  # fmt: skip
    transformer = pipe.transformer.eval()
    with torch.no_grad():
        base = transformer(**_transformer_inputs(transformer))[0]
        pipe.load_lora_weights(result.final_lora, adapter_name="trained")
        loaded = transformer(**_transformer_inputs(transformer))[0]
    expected = seen[12]
    assert (loaded - base).abs().max() > 1e-3, "the LoRA changes the output"
    assert torch.allclose(loaded, expected, atol=RELOAD_TOLERANCE, rtol=0)


def test_family_defaults_and_refusals_name_the_field(qwen_edit_model):
    recipe = TrainRecipe.from_dict(
        {"model": str(qwen_edit_model), "family": "qwen_image_edit", "dataset": "edits@v1"}
    )
    assert (recipe.rank, recipe.alpha, recipe.learning_rate) == (16, 16.0, 1e-4)
    assert (recipe.steps, recipe.warmup_steps, recipe.timestep_sampling) == (3000, 0, "sigmoid")
    assert recipe.judge.probes == ("half_left", "smiling")
    assert "attn.add_q_proj" in recipe.unet_targets()
    assert not recipe.warnings()
    overridden = TrainRecipe.from_dict({"family": "qwen_image_edit", "rank": 32,
                                        "judge": {"seeds": [3]}})  # fmt: skip
    assert overridden.rank == 32 and overridden.judge.probes == ("half_left", "smiling")
    assert TrainRecipe.from_dict({"family": "sdxl"}).rank == 64  # others keep theirs
    refused = {
        "train_text_encoder": True,
        "mixed_precision": "fp16",
        "noise_offset": 0.03,
        "sample_every": 100,
    }
    for field, value in refused.items():
        with pytest.raises(RecipeError) as caught:
            TrainRecipe.from_dict({"family": "qwen_image_edit", field: value})
        assert caught.value.field == field and "\n" not in str(caught.value)


def test_train_new_writes_the_edit_family_defaults(tmp_path):
    from typer.testing import CliRunner

    from likeness.cli.main import app

    out = tmp_path / "angles.toml"
    result = CliRunner().invoke(
        app, ["train", "new", str(out), "--family", "qwen_image_edit", "--dataset", "edits@v1"]
    )
    assert result.exit_code == 0, result.output
    recipe = TrainRecipe.from_toml_file(out)
    assert (recipe.family, recipe.rank, recipe.alpha, recipe.steps) == (
        "qwen_image_edit", 16, 16.0, 3000,
    )  # fmt: skip
    assert recipe.judge.probes == ("half_left", "smiling")
    assert "qwen_image_edit" in CliRunner().invoke(app, ["train", "new", "--help"]).output
