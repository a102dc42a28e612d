"""LoRAs in diffusers and kohya formats (both block-name layouts), strengths, several at once."""

from __future__ import annotations

import numpy as np
import pytest

from likeness.engines.diffusers.loras import (
    DIFFUSERS,
    KOHYA_DIFFUSERS,
    KOHYA_ORIGINAL,
    lora_format,
    safetensors_keys,
)


def render(engine, recipe, loras=()):
    recipe = recipe.with_overrides(
        {"refiner.enabled": False, "loras": [{"path": str(p), "strength": s} for p, s in loras]}
    )
    return np.asarray(engine.generate(recipe, 1)[0].image(), dtype=np.float64)


@pytest.fixture(scope="module")
def base_image(engine, tiny_recipe):
    return render(engine, tiny_recipe)


@pytest.mark.parametrize(
    "attr,fmt",
    [
        ("lora_diffusers", DIFFUSERS),
        ("lora_kohya_original", KOHYA_ORIGINAL),
        ("lora_kohya_diffusers", KOHYA_DIFFUSERS),
    ],
)
def test_lora_strengths_from_each_format(engine, tiny_recipe, tiny_models, base_image, attr, fmt):
    path = getattr(tiny_models, attr)
    assert lora_format(safetensors_keys(path)) == fmt
    zero = render(engine, tiny_recipe, [(path, 0.0)])
    mid = render(engine, tiny_recipe, [(path, 0.7)])
    full = render(engine, tiny_recipe, [(path, 1.0)])
    assert np.array_equal(zero, base_image)
    d_mid, d_full = np.abs(mid - base_image).mean(), np.abs(full - base_image).mean()
    assert 0.5 < d_mid < d_full
    # Every format carries the same LoRA: the same pixels as the diffusers file.
    reference = render(engine, tiny_recipe, [(tiny_models.lora_diffusers, 0.7)])
    assert np.abs(mid - reference).max() <= 1.0


def test_kohya_alpha_is_honoured(engine, tiny_recipe, tiny_models):
    # alpha 4 at rank 4 scales by 1; alpha 8 scales by 2: strength 1.0 of the first is 0.5
    # of the second.
    half_alpha = render(engine, tiny_recipe, [(tiny_models.lora_kohya_alpha4, 1.0)])
    full_alpha = render(engine, tiny_recipe, [(tiny_models.lora_kohya_original, 0.5)])
    other = render(engine, tiny_recipe, [(tiny_models.lora_kohya_original, 1.0)])
    assert np.abs(half_alpha - full_alpha).max() <= 1.0
    assert np.abs(half_alpha - other).mean() > 0.5


def test_text_encoder_loras_in_kohya_and_diffusers_formats(
    engine, tiny_recipe, tiny_models, base_image
):
    keys = safetensors_keys(tiny_models.lora_te_kohya)
    assert any(k.startswith("lora_te1_text_model_encoder_layers_0") for k in keys)
    assert any(k.startswith("lora_te2_text_model_encoder_layers_0") for k in keys)
    kohya = render(engine, tiny_recipe, [(tiny_models.lora_te_kohya, 1.0)])
    diffusers = render(engine, tiny_recipe, [(tiny_models.lora_te_diffusers, 1.0)])
    assert np.abs(kohya - base_image).mean() > 0.3  # the text encoders changed
    assert np.abs(kohya - diffusers).max() <= 1.0


def test_several_loras_at_once_add_up(engine, tiny_recipe, tiny_models, base_image):
    both = render(
        engine,
        tiny_recipe,
        [(tiny_models.lora_kohya_original, 0.35), (tiny_models.lora_diffusers, 0.35)],
    )
    single = render(engine, tiny_recipe, [(tiny_models.lora_kohya_original, 0.7)])
    assert np.abs(both - single).max() <= 2.0
    assert np.abs(both - base_image).mean() > 0.5
    # Dropping the LoRAs from the recipe gives the base model back.
    assert np.array_equal(render(engine, tiny_recipe), base_image)


def test_lora_hashes_reach_provenance_and_pnginfo(engine, tiny_recipe, tiny_models):
    from likeness.engines.base import sha256_file
    from likeness.pnginfo import read_pnginfo

    recipe = tiny_recipe.with_overrides(
        {"refiner.enabled": False, "loras": [{"path": str(tiny_models.lora_kohya_original)}]}
    )
    g = engine.generate(recipe, 1)[0]
    sha = sha256_file(tiny_models.lora_kohya_original)
    assert g.provenance["loras"][0]["sha256"] == sha
    assert g.provenance["loras"][0]["strength"] == 0.7
    info = read_pnginfo(g.png)
    assert info.params["Lora hashes"] == f"lora-kohya-original: {sha[:12]}"


def test_flux_lora_from_a_diffusers_file(tiny_models, tiny_recipe):
    from likeness.engines.diffusers import DiffusersEngine

    engine = DiffusersEngine()
    recipe = tiny_recipe.with_overrides(
        {
            "model": str(tiny_models.flux),
            "family": "flux",
            "sampler": "euler",
            "scheduler": "simple",
            "negative": "",
        }
    )
    base = render(engine, recipe)
    zero = render(engine, recipe, [(tiny_models.flux_lora, 0.0)])
    mid = render(engine, recipe, [(tiny_models.flux_lora, 0.7)])
    full = render(engine, recipe, [(tiny_models.flux_lora, 1.0)])
    assert np.array_equal(zero, base)
    assert 0.5 < np.abs(mid - base).mean() < np.abs(full - base).mean()
    engine.release()


def test_home_relative_paths_load_and_hash(engine, tiny_recipe, tiny_models, monkeypatch):
    from likeness.engines.base import sha256_file

    lora = tiny_models.lora_kohya_original
    assert tiny_models.sdxl.parent == lora.parent
    monkeypatch.setenv("HOME", str(lora.parent))
    recipe = tiny_recipe.with_overrides(
        {"refiner.enabled": False, "model": "~/sdxl", "loras": [{"path": f"~/{lora.name}"}]}
    )
    engine.check(recipe)
    g = engine.generate(recipe, 1)[0]
    assert g.provenance["loras"][0]["sha256"] == sha256_file(lora)
