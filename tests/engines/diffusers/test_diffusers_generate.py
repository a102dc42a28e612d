"""Text-to-image, latent refiner, seeds and progress on tiny SDXL and FLUX pipelines."""

from __future__ import annotations

import numpy as np
import pytest

from likeness.engines.base import ProgressUpdate
from likeness.engines.diffusers import DiffusersEngine, passes
from likeness.pnginfo import read_pnginfo

SIZE = 64  # width and height of the tiny recipe in conftest.py


def pixels(generated) -> np.ndarray:
    return np.asarray(generated.image(), dtype=np.int16)


def test_txt2img_makes_n_images_with_provenance(engine, tiny_recipe):
    recipe = tiny_recipe.with_overrides({"refiner.enabled": False, "batch": 2})
    images = engine.generate(recipe, 3)
    assert [g.seed for g in images] == [7, 8, 9]
    for g in images:
        assert g.image().size == (SIZE, SIZE)
        assert pixels(g).std() > 1.0  # not a blank image
        prov = g.provenance
        assert prov["seed"] == g.seed and prov["recipe"]["seed"] == g.seed
        assert prov["engine"]["name"] == "diffusers"
        assert prov["model"]["sha256"] is None  # a folder has no single file hash
        assert prov["timings"]["sample_s"] > 0
        info = read_pnginfo(g.png)
        assert info.provenance == prov
        assert info.params["Seed"] == str(g.seed)
        assert info.prompt == "a photo of a person" and info.negative == "blurry"
    assert not np.array_equal(pixels(images[0]), pixels(images[1]))


def test_image_depends_only_on_its_seed_not_the_batch(engine, tiny_recipe):
    recipe = tiny_recipe.with_overrides({"batch": 3})
    batch = engine.generate(recipe, 3)
    alone = engine.generate(recipe.with_overrides({"seed": 8, "batch": 1}), 1)
    # Batched matrix products may round differently: at most one level on a pixel.
    assert np.abs(pixels(batch[1]) - pixels(alone[0])).max() <= 1
    other = engine.generate(recipe.with_overrides({"seed": 9, "batch": 1}), 1)
    assert np.abs(pixels(batch[1]) - pixels(other[0])).mean() > 5


def test_refiner_runs_img2img_on_the_first_pass_latents(engine, tiny_recipe, monkeypatch):
    seen = {}
    original = passes.refine_latents

    def spy(img2img, latents, **kwargs):
        seen["latents"] = latents
        seen["kwargs"] = kwargs
        return original(img2img, latents, **kwargs)

    monkeypatch.setattr(passes, "refine_latents", spy)
    refined = engine.generate(tiny_recipe, 1)[0]
    plain = engine.generate(tiny_recipe.with_overrides({"refiner.enabled": False}), 1)[0]
    latents = seen["latents"]
    assert tuple(latents.shape) == (1, 4, SIZE // 8, SIZE // 8)  # latents, not pixels
    assert seen["kwargs"]["steps"] == 2 and seen["kwargs"]["denoise"] == 0.5
    assert "refiner_s" in refined.provenance["timings"]
    assert not np.array_equal(pixels(refined), pixels(plain))


@pytest.mark.parametrize("steps,denoise", [(15, 0.25), (20, 0.4), (7, 0.3), (4, 1.0), (3, 0.9)])
def test_denoise_schedule_runs_exactly_the_asked_steps(steps, denoise):
    total, strength = passes.denoise_schedule(steps, denoise)
    # diffusers' img2img runs min(int(total * strength), total) steps.
    assert min(int(total * strength), total) == steps
    assert abs(strength - denoise) < 0.1


def test_sampler_and_scheduler_map_to_diffusers(engine, tiny_recipe):
    recipe = tiny_recipe.with_overrides(
        {"sampler": "euler_ancestral", "scheduler": "normal", "refiner.enabled": False}
    )
    engine.generate(recipe, 1)
    scheduler = engine.pipeline(recipe).scheduler
    assert type(scheduler).__name__ == "EulerAncestralDiscreteScheduler"
    engine.generate(tiny_recipe.with_overrides({"refiner.enabled": False}), 1)
    scheduler = engine.pipeline(tiny_recipe).scheduler
    assert type(scheduler).__name__ == "DPMSolverMultistepScheduler"
    assert scheduler.config.use_karras_sigmas is True


def test_progress_reports_each_stage(engine, tiny_recipe):
    updates: list[ProgressUpdate] = []
    engine.generate(tiny_recipe, 1, progress=updates.append)
    stages = [u.stage for u in updates]
    assert stages[0] == "load"
    assert stages.count("sample") == 4 and stages.count("refiner") == 2
    assert updates[-1].step == updates[-1].steps == 2


def test_flux_txt2img_and_latent_refiner(tiny_models, tiny_recipe):
    engine = DiffusersEngine()
    recipe = tiny_recipe.with_overrides(
        {
            "model": str(tiny_models.flux),
            "family": "flux",
            "sampler": "euler",
            "scheduler": "simple",
            "negative": "",
            "cfg": 3.5,
        }
    )
    refined = engine.generate(recipe, 1)[0]
    plain = engine.generate(recipe.with_overrides({"refiner.enabled": False}), 1)[0]
    assert refined.image().size == (SIZE, SIZE)
    assert pixels(plain).std() > 1.0
    assert not np.array_equal(pixels(refined), pixels(plain))
    assert refined.provenance["recipe"]["family"] == "flux"
    engine.release()
