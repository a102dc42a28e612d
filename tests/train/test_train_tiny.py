"""Training tiny random-weight SDXL, SD1.5 and FLUX models on the sample face photos, in a real
workspace: the loss on a fixed batch falls, checkpoints are kohya files recorded with their
lineage, captions are used as stored, excluded duplicates are never trained on, the cache
makes a second run encode nothing, ComfyUI is asked to free its memory first."""

from __future__ import annotations

import math

import pytest
from safetensors import safe_open

from likeness.train import store
from likeness.train.loop import TrainHooks
from likeness.train.run import train_lora
from tests.train.conftest import CAPTIONS, fast_recipe


@pytest.mark.parametrize(
    ("case", "family", "extra"),
    [
        ("sdxl-folder-text-encoders", "sdxl", {"train_text_encoder": True}),
        ("sdxl-single-file", "sdxl", {"gradient_checkpointing": True, "noise_offset": 0.05}),
        ("sd15-v-prediction", "sd15", {"sample_every": 20, "sample_steps": 2}),
        ("flux-guidance", "flux", {"timestep_sampling": "sigmoid"}),
    ],
)
def test_a_single_image_is_overfitted_and_each_checkpoint_is_a_recorded_kohya_file(
    case, family, extra, train_ws, train_models
):
    model = {
        "sdxl": train_models.sdxl_single if case == "sdxl-single-file" else train_models.sdxl,
        "sd15": train_models.sd15_vpred,
        "flux": train_models.flux,
    }[family]
    recipe = fast_recipe(
        model, family, "one@v1", steps=20, checkpoint_every=5, learning_rate=5e-3, **extra
    )
    config = train_models.sdxl if case == "sdxl-single-file" else None
    result = train_lora(train_ws, recipe, device="cpu", config=config)

    assert result.state == "done" and result.steps == 20
    checkpoints = store.list_checkpoints(train_ws.db, result.run_id)
    assert [c.step for c in checkpoints] == [5, 10, 15, 20]
    fixed = [c.fixed_loss for c in checkpoints]
    assert all(math.isfinite(v) for v in fixed)
    assert fixed[-1] < fixed[0], f"the fixed-batch loss did not fall: {fixed}"
    curve = store.losses(train_ws.db, result.run_id)
    assert [s for s, _, _ in curve] == list(range(1, 21))
    assert all(math.isfinite(loss) for _, loss, _ in curve)

    with safe_open(result.final_lora, framework="pt") as handle:
        keys, metadata = list(handle.keys()), handle.metadata()
    prefix = "transformer." if family == "flux" else "lora_unet_"
    assert any(k.startswith(prefix) for k in keys)
    if extra.get("train_text_encoder"):
        assert any(k.startswith("lora_te1_") for k in keys)
        assert any(k.startswith("lora_te2_") for k in keys)
    assert metadata["ss_network_dim"] == "4" and metadata["ss_network_alpha"] == "8"
    assert metadata["ss_steps"] == "20" and metadata["likeness_dataset"] == "one@v1"
    assert metadata["likeness_trigger"] == "vrexoq123"

    from likeness.store.loras import lora_by_sha256

    lora = lora_by_sha256(train_ws.db, checkpoints[-1].sha256)
    assert lora is not None and lora.source == "trained"
    assert (lora.train_run, lora.dataset, lora.steps) == (result.run_id, "one@v1", 20)
    assert checkpoints[-1].lora_id == lora.id
    if extra.get("sample_every"):
        samples = sorted((train_ws.root / "training").rglob("samples/*.png"))
        assert [p.name for p in samples] == ["step000020-00.png", "step000020-01.png"]
    job = train_ws.db.execute("SELECT state FROM jobs WHERE id = ?", (result.job_id,)).fetchone()
    assert job[0] == "done"


def test_captions_are_used_as_stored_and_excluded_duplicates_never_trained(
    train_ws, train_models, template_ws
):
    seen: list[tuple[str, str]] = []

    def watch(step, batch):
        seen.extend(zip(batch.images, batch.captions, strict=True))
        return batch

    recipe = fast_recipe(train_models.flux, "flux", "faces@v1", steps=8, checkpoint_every=8)
    result = train_lora(train_ws, recipe, device="cpu", hooks=TrainHooks(on_batch=watch))

    assert result.skipped == (template_ws.excluded,)
    assert any("excluded" in w for w in result.warnings)
    assert result.cache["latents_encoded"] == 4  # the excluded copy is not even encoded
    assert template_ws.excluded not in {sha for sha, _ in seen}
    assert {sha for sha, _ in seen} == set(template_ws.names) - {template_ws.excluded}
    for sha, caption in seen:
        assert caption == CAPTIONS[template_ws.names[sha]]


def test_a_second_run_encodes_nothing_and_comfyui_is_freed_first(train_ws, train_models):
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parents[1] / "engines" / "comfyui"))
    from fake_server import FakeComfyUI

    recipe = fast_recipe(train_models.flux, "flux", "faces@v1", steps=2, checkpoint_every=2)
    with FakeComfyUI() as comfy:
        first = train_lora(train_ws, recipe, device="cpu", comfy_url=comfy.url)
        assert comfy.state.free_requests == [{"unload_models": True, "free_memory": True}]
    assert first.cache == {
        "latents_encoded": 4,
        "latents_cached": 0,
        "texts_encoded": 5,  # four captions and the empty one (caption dropout)
        "texts_cached": 0,
    }
    # The same recipe again is reported, not retrained; --again trains it from the cache.
    assert train_lora(train_ws, recipe, device="cpu").already_trained
    dead = "http://127.0.0.1:9"  # nothing listens there
    second = train_lora(train_ws, recipe, device="cpu", again=True, comfy_url=dead)
    assert second.run_id != first.run_id
    assert second.cache["latents_encoded"] == 0 and second.cache["latents_cached"] == 4
    assert second.cache["texts_encoded"] == 0
    assert any("did not free its memory" in w for w in second.warnings)
    # Another learning rate on the same model and data: still nothing to encode.
    other = train_lora(train_ws, recipe.with_overrides({"learning_rate": 2e-4}), device="cpu")
    assert other.cache["latents_encoded"] == 0 and other.cache["texts_encoded"] == 0
