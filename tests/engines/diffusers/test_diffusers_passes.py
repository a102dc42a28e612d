"""Face detailer on a real photo, upscale, and the fields the engine refuses up front."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from likeness.data import FACES
from likeness.engines.base import EngineCannotHonour
from likeness.engines.diffusers import DiffusersEngine, passes
from likeness.recipes import DetailerPass, LoraSpec

SIZE = 64  # width and height of the tiny recipe in conftest.py


@pytest.fixture(scope="module")
def inpaint(engine, tiny_recipe):
    engine.pipeline(tiny_recipe)
    return engine._view("inpaint")


@pytest.fixture(scope="module")
def obama():
    img = Image.open(FACES / "obama.jpg").convert("RGB")
    return img.resize((img.width // 2, img.height // 2), Image.Resampling.LANCZOS)


def test_detailer_resamples_the_real_face_and_keeps_the_rest(inpaint, obama):
    import torch

    settings = DetailerPass(enabled=True, guide_size=64, steps=2, denoise=0.4, feather=4)
    result = passes.detail_face(
        inpaint,
        obama,
        settings,
        prompt="a man",
        negative="",
        cfg=4.0,
        generator=torch.Generator().manual_seed(0),
    )
    assert result.face is not None and result.region is not None
    x0, y0, x1, y1 = result.face
    # The face dlib finds in this photo: upper middle, about a quarter of the width.
    assert 0.25 < (x0 + x1) / 2 / obama.width < 0.75
    assert 0.15 < (x1 - x0) / obama.width < 0.45
    before, after = np.asarray(obama, dtype=int), np.asarray(result.image, dtype=int)
    assert after.shape == before.shape
    outside = np.ones(before.shape[:2], bool)
    rx0, ry0, rx1, ry1 = result.region
    outside[ry0:ry1, rx0:rx1] = False
    assert np.array_equal(before[outside], after[outside])
    # The face box itself was re-sampled (strongly, with random weights); its edge is blended.
    inner = (slice(int(y0) + 8, int(y1) - 8), slice(int(x0) + 8, int(x1) - 8))
    assert np.abs(before[inner] - after[inner]).mean() > 10
    border = np.abs(before - after)[ry0 : ry0 + 2, rx0:rx1]
    assert border.max() == 0


def test_detailer_without_a_face_returns_the_image_unchanged(inpaint):
    import torch

    blank = Image.new("RGB", (SIZE, SIZE), (120, 120, 120))
    result = passes.detail_face(
        inpaint,
        blank,
        DetailerPass(enabled=True, guide_size=64),
        prompt="a man",
        negative=None,
        cfg=4.0,
        generator=torch.Generator().manual_seed(0),
        find_face=lambda image: None,
    )
    assert result.face is None and np.array_equal(np.asarray(result.image), np.asarray(blank))


def test_engine_runs_the_detailer_and_records_the_region(tiny_models, tiny_recipe):
    engine = DiffusersEngine(find_face=lambda image: (16.0, 16.0, 48.0, 48.0))
    recipe = tiny_recipe.with_overrides(
        {"detailer.enabled": True, "detailer.guide_size": 64, "detailer.steps": 2}
    )
    g = engine.generate(recipe, 1)[0]
    plain = engine.generate(recipe.with_overrides({"detailer.enabled": False}), 1)[0]
    assert g.provenance["detailer"]["face"] == [16.0, 16.0, 48.0, 48.0]
    assert g.provenance["detailer"]["region"] == [0, 0, 64, 64]
    assert "detailer_s" in g.provenance["timings"]
    a, b = np.asarray(g.image(), dtype=int), np.asarray(plain.image(), dtype=int)
    assert np.abs(a - b)[24:40, 24:40].mean() > 1
    engine.release()


def test_upscale_by_factor_and_with_a_spandrel_model(tmp_path):
    from safetensors.torch import save_file

    spandrel = passes.import_spandrel()
    from spandrel.architectures.ESRGAN import ESRGAN

    net = ESRGAN(in_nc=3, out_nc=3, num_filters=8, num_blocks=1, scale=2)
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, tmp_path / "x2.safetensors")
    model = passes.load_upscaler(str(tmp_path / "x2.safetensors"), "cpu")
    assert isinstance(model, spandrel.ImageModelDescriptor) and model.scale == 2
    image = Image.new("RGB", (32, 24), (200, 40, 90))
    assert passes.upscale_image(image, 2.0, model).size == (64, 48)
    assert passes.upscale_image(image, 4.0, model).size == (128, 96)
    plain = passes.upscale_image(image, 1.5)
    assert plain.size == (48, 36) and plain.getpixel((10, 10)) == (200, 40, 90)


def test_tiled_upscale_matches_the_whole_image(tmp_path):
    from safetensors.torch import save_file

    passes.import_spandrel()
    from spandrel.architectures.ESRGAN import ESRGAN

    net = ESRGAN(in_nc=3, out_nc=3, num_filters=8, num_blocks=1, scale=2)
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, tmp_path / "x2.safetensors")
    model = passes.load_upscaler(str(tmp_path / "x2.safetensors"), "cpu")
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 255, (50, 70, 3), dtype=np.uint8))
    whole = np.asarray(passes.upscale_image(image, 2.0, model, tile=512), dtype=int)
    # 24 px of context around each tile covers this network's receptive field.
    tiled = np.asarray(passes.upscale_image(image, 2.0, model, tile=64, overlap=24), dtype=int)
    assert whole.shape == tiled.shape == (100, 140, 3)
    assert np.abs(whole - tiled).max() <= 1
    small_tiles = np.asarray(passes.upscale_image(image, 2.0, model, tile=8, overlap=0), dtype=int)
    assert np.abs(whole - small_tiles).max() > 5  # without context the seams show


def test_engine_upscales_by_factor_and_with_a_model(engine, tiny_recipe, tmp_path):
    from safetensors.torch import save_file

    passes.import_spandrel()
    from spandrel.architectures.ESRGAN import ESRGAN

    recipe = tiny_recipe.with_overrides(
        {"refiner.enabled": False, "upscale.enabled": True, "upscale.factor": 2.0}
    )
    g = engine.generate(recipe, 1)[0]
    assert g.image().size == (2 * SIZE, 2 * SIZE)
    assert (g.provenance["width"], g.provenance["height"]) == (2 * SIZE, 2 * SIZE)
    net = ESRGAN(in_nc=3, out_nc=3, num_filters=8, num_blocks=1, scale=4)
    model = tmp_path / "x4.safetensors"
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, model)
    g = engine.generate(recipe.with_overrides({"upscale.model": str(model)}), 1)[0]
    assert g.image().size == (2 * SIZE, 2 * SIZE)  # the model's 4x, resized to the factor
    assert len(g.provenance["upscaler_sha256"]) == 64


# -- refused up front -----------------------------------------------------------------
def _refusal(engine, recipe) -> EngineCannotHonour:
    with pytest.raises(EngineCannotHonour) as info:
        engine.check(recipe)
    assert "\n" not in str(info.value)
    return info.value


@pytest.mark.parametrize("suffix", [".ckpt", ".pt", ".bin"])
def test_pickle_checkpoints_are_refused_unless_allowed(tmp_path, tiny_recipe, suffix):
    ckpt = tmp_path / f"model{suffix}"
    ckpt.write_bytes(b"not really a pickle")
    recipe = tiny_recipe.with_overrides({"model": str(ckpt)})
    err = _refusal(DiffusersEngine(), recipe)
    assert err.field == "model" and "--allow-pickle" in str(err)
    DiffusersEngine(allow_pickle=True).check(recipe)  # allowed: no refusal


def test_pickle_lora_and_upscaler_are_refused(tmp_path, tiny_recipe):
    lora = tmp_path / "lora.pt"
    lora.write_bytes(b"x")
    err = _refusal(DiffusersEngine(), tiny_recipe.with_overrides({"loras": [{"path": str(lora)}]}))
    assert err.field == "loras.0.path"
    upscaler = tmp_path / "4x.pth"
    upscaler.write_bytes(b"x")
    recipe = tiny_recipe.with_overrides({"upscale.enabled": True, "upscale.model": str(upscaler)})
    assert _refusal(DiffusersEngine(), recipe).field == "upscale.model"


def test_folder_with_only_pickle_weights_is_refused(tmp_path, tiny_models, tiny_recipe):
    import shutil

    folder = tmp_path / "pickled"
    shutil.copytree(tiny_models.sdxl, folder)
    for weights in (folder / "unet").glob("*.safetensors"):
        weights.rename(weights.with_suffix(".bin"))
    err = _refusal(DiffusersEngine(), tiny_recipe.with_overrides({"model": str(folder)}))
    assert err.field == "model" and "unet" in str(err)


def test_identity_step_without_its_files_is_refused_in_one_line(tiny_recipe):
    recipe = tiny_recipe.with_overrides(
        {"identity.enabled": True, "identity.references": ["face.png"]}
    )
    err = _refusal(DiffusersEngine(), recipe)
    assert err.field == "identity.references" and "not a file" in str(err)
    assert "\n" not in str(err)


def test_other_refusals_name_their_field(tmp_path, tiny_models, tiny_recipe):
    engine = DiffusersEngine()
    missing = tiny_recipe.with_overrides({"model": str(tmp_path / "nope.safetensors")})
    assert _refusal(engine, missing).field == "model"
    assert _refusal(engine, tiny_recipe.with_overrides({"family": "flux"})).field == "family"
    flux = tiny_recipe.with_overrides(
        {
            "model": str(tiny_models.flux),
            "family": "flux",
            "sampler": "euler",
            "scheduler": "simple",
        }
    )
    assert _refusal(engine, flux).field == "negative"
    flux = flux.with_overrides({"negative": "", "sampler": "dpmpp_2m"})
    assert _refusal(engine, flux).field == "sampler"
    single_flux = flux.with_overrides({"sampler": "euler", "model": str(tiny_models.sdxl_single)})
    assert _refusal(engine, single_flux).field == "model"
    assert _refusal(engine, tiny_recipe.with_overrides({"scheduler": "kl_optimal"})).field == (
        "scheduler"
    )
    assert _refusal(engine, tiny_recipe.with_overrides({"engine": "comfyui"})).field == "engine"
    not_lora = tmp_path / "empty.safetensors"
    import torch
    from safetensors.torch import save_file

    save_file({"weight": torch.zeros(1)}, not_lora)
    recipe = tiny_recipe.with_overrides({"loras": [LoraSpec(str(not_lora)).__dict__]})
    assert _refusal(engine, recipe).field == "loras.0.path"


def test_release_drops_the_cached_pipeline(tiny_recipe):
    engine = DiffusersEngine()
    first = engine.pipeline(tiny_recipe)
    assert engine.pipeline(tiny_recipe) is first  # cached between calls
    engine.release()
    assert engine._pipe is None and engine._views == {}
    assert engine.pipeline(tiny_recipe) is not first
    engine.release()


def test_single_file_of_another_family_or_broken_is_refused(tmp_path, tiny_models, tiny_recipe):
    import torch
    from safetensors.torch import save_file

    from likeness.engines.base import EngineError

    engine = DiffusersEngine()
    wrong = tiny_recipe.with_overrides({"model": str(tiny_models.sdxl_single), "family": "sd15"})
    err = _refusal(engine, wrong)
    assert err.field == "family" and "sdxl" in str(err)
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\x01\x02")
    assert _refusal(engine, tiny_recipe.with_overrides({"model": str(garbage)})).field == "model"
    unknown = tmp_path / "unknown.safetensors"
    save_file({"weight": torch.zeros(2)}, unknown)
    recipe = tiny_recipe.with_overrides({"model": str(unknown)})
    engine.check(recipe)  # the names say nothing; loading decides
    with pytest.raises(EngineError, match="unknown.safetensors could not be loaded as sdxl"):
        engine.generate(recipe, 1)


def test_broken_model_index_is_refused_naming_the_field(tmp_path):
    from likeness.engines.diffusers.edit import check_edit_model
    from likeness.engines.diffusers.loading import resolve_model

    for text in ("{not json", "[1]"):
        (tmp_path / "model_index.json").write_text(text)
        with pytest.raises(EngineCannotHonour, match="model_index.json") as err:
            resolve_model(str(tmp_path), "sdxl")
        assert err.value.field == "model"
        with pytest.raises(EngineCannotHonour, match="model_index.json") as err:
            check_edit_model(str(tmp_path))
        assert err.value.field == "edit_model"
