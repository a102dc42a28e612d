"""The identity pass (IP-Adapter FaceID, InstantID) on a tiny SDXL with tiny InsightFace models."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from likeness.data import FACES
from likeness.engines.base import EngineCannotHonour, sha256_file
from likeness.engines.diffusers import DiffusersEngine, adapters, identity

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

REGION = (16.0, 16.0, 48.0, 48.0)  # the "face" the tests' face finder reports


@dataclass(frozen=True)
class IdentityFiles:
    faceid_bin: Path
    faceid: Path
    instantid_bin: Path
    instantid: Path
    controlnet: Path
    insightface: Path


@pytest.fixture(scope="module")
def files(tiny_models, tmp_path_factory) -> IdentityFiles:
    import torch
    from diffusers import UNet2DConditionModel

    from likeness.engines.diffusers.tiny_identity import (
        faceid_state,
        instantid_state,
        save_controlnet,
    )
    from likeness.faces.tiny_insightface import save_tiny_insightface

    root = tmp_path_factory.mktemp("identity")
    unet = UNet2DConditionModel.from_pretrained(tiny_models.sdxl, subfolder="unet")
    torch.save(faceid_state(unet), root / "ip-adapter-faceid_tiny.bin")
    torch.save(instantid_state(unet), root / "ip-adapter.bin")
    return IdentityFiles(
        faceid_bin=root / "ip-adapter-faceid_tiny.bin",
        faceid=adapters.convert_to_safetensors(root / "ip-adapter-faceid_tiny.bin"),
        instantid_bin=root / "ip-adapter.bin",
        instantid=adapters.convert_to_safetensors(root / "ip-adapter.bin"),
        controlnet=save_controlnet(unet, root / "ControlNetModel"),
        insightface=save_tiny_insightface(root / "buffalo_tiny"),
    )


def identity_recipe(tiny_recipe, files: IdentityFiles, **fields):
    values = {
        "identity.enabled": True,
        "identity.method": "ipadapter_faceid",
        "identity.references": [str(FACES / "obama.jpg"), str(FACES / "obama2.jpg")],
        "identity.adapter": str(files.faceid),
        "identity.insightface": str(files.insightface),
        "identity.guide_size": 64,
        "identity.steps": 2,
        "identity.denoise": 0.5,
        "refiner.enabled": False,
    }
    values.update({f"identity.{k}": v for k, v in fields.items()})
    return tiny_recipe.with_overrides(values)


@pytest.fixture(scope="module")
def face_engine():
    eng = DiffusersEngine(find_face=lambda image: REGION)
    yield eng
    eng.release()


def pixels(generated) -> np.ndarray:
    return np.asarray(generated.image(), dtype=int)


def test_faceid_pass_changes_only_the_face_region_and_records_provenance(
    face_engine, tiny_recipe, files
):
    recipe = identity_recipe(tiny_recipe, files)
    plain = recipe.with_overrides({"identity.enabled": False})
    (before,) = face_engine.generate(plain, 1)
    (after,) = face_engine.generate(recipe, 1)
    a, b = pixels(before), pixels(after)
    prov = after.provenance["identity"]
    x0, y0, x1, y1 = prov["region_box"]
    outside = np.ones(a.shape[:2], bool)
    outside[y0:y1, x0:x1] = False
    assert np.array_equal(a[outside], b[outside])
    assert np.abs(a[20:44, 20:44] - b[20:44, 20:44]).mean() > 1
    assert prov["method"] == "ipadapter_faceid" and prov["weight"] == 0.85
    assert prov["region"] == "face" and prov["face"] == list(REGION)
    assert prov["files"]["adapter"] == {
        "path": str(files.faceid),
        "sha256": sha256_file(files.faceid),
    }
    assert set(prov["files"]["insightface"]["files"]) == {"det_10g.onnx", "w600k_r50.onnx"}
    refs = prov["references"]
    assert [r["path"] for r in refs] == list(recipe.identity.references)
    assert all(r["embedded"] == "face_crop" and r["crop"]["size"] == 1024 for r in refs)
    assert refs[0]["sha256"] == sha256_file(FACES / "obama.jpg")
    assert "identity_s" in after.provenance["timings"]
    # The adapter is swapped out again: the next plain run is the same image as before.
    (again,) = face_engine.generate(plain, 1)
    assert np.array_equal(pixels(again), a)


def test_the_weight_moves_the_result(face_engine, tiny_recipe, files):
    weak = identity_recipe(tiny_recipe, files, weight=0.0, region="image")
    strong = identity_recipe(tiny_recipe, files, weight=2.0, region="image")
    (w,) = face_engine.generate(weak, 1)
    (s,) = face_engine.generate(strong, 1)
    assert np.abs(pixels(w) - pixels(s)).mean() > 0.5
    assert w.provenance["identity"]["region_box"] == [0, 0, 64, 64]


def test_instantid_runs_its_controlnet_on_face_tokens_and_keypoints(
    face_engine, tiny_recipe, files
):
    recipe = identity_recipe(
        tiny_recipe,
        files,
        method="instantid",
        adapter=str(files.instantid),
        controlnet=str(files.controlnet),
        region="image",
    )
    seen: list[tuple] = []
    face_engine.check(recipe)
    (plain,) = face_engine.generate(recipe.with_overrides({"identity.enabled": False}), 1)
    controlnet = face_engine._controlnet(str(files.controlnet))
    handle = controlnet.register_forward_hook(  # sees the inputs after the engine's swap
        lambda m, args, kwargs, output: seen.append(
            (kwargs["encoder_hidden_states"].clone(), kwargs["controlnet_cond"].clone())
        ),
        with_kwargs=True,
    )
    try:
        (out,) = face_engine.generate(recipe, 1)
    finally:
        handle.remove()
    assert seen, "the ControlNet did not run"
    tokens, cond = seen[0]
    assert tokens.shape == (2, 16, 80)  # [uncond, cond] x 16 face tokens x cross-attention
    assert not np.allclose(tokens[0].numpy(), tokens[1].numpy())
    assert cond.abs().sum() > 0  # the keypoint drawing, not a blank image
    prov = out.provenance["identity"]
    assert len(prov["keypoints"]) == 5
    assert prov["files"]["controlnet"]["sha256"] == sha256_file(
        files.controlnet / "diffusion_pytorch_model.safetensors"
    )
    assert np.abs(pixels(out) - pixels(plain)).mean() > 1


def test_references_are_face_cropped_before_they_are_embedded(files, monkeypatch):
    from likeness.faces import DlibAnalyzer, reference_crop, select_subject
    from likeness.faces.insightface_backend import InsightFaceAnalyzer

    seen: list[np.ndarray] = []
    original = InsightFaceAnalyzer.analyze

    def recording(self, rgb):
        seen.append(rgb.copy())
        return original(self, rgb)

    monkeypatch.setattr(InsightFaceAnalyzer, "analyze", recording)
    faces = InsightFaceAnalyzer(files.insightface)
    emb = identity.embed_references((str(FACES / "obama.jpg"),), faces)
    photo = Image.open(FACES / "obama.jpg").convert("RGB")
    found = DlibAnalyzer().analyze(np.asarray(photo))
    crop = reference_crop(photo, found[select_subject(found, photo.width, photo.height)])
    assert len(seen) == 1 and np.array_equal(seen[0], np.asarray(crop))
    assert seen[0].shape == (1024, 1024, 3) != np.asarray(photo).shape
    (record,) = emb.records
    assert record["embedded"] == "face_crop"
    (face,) = original(faces, np.asarray(crop))
    assert emb.normed == pytest.approx(face.embedding, abs=1e-5)
    assert np.linalg.norm(emb.raw) != pytest.approx(1.0)  # InstantID reads the raw embedding


def test_a_reference_without_a_face_is_named(files):
    from likeness.engines.base import EngineError
    from likeness.faces.insightface_backend import InsightFaceAnalyzer

    blank = Path(files.insightface).parent / "blank.png"
    Image.new("RGB", (200, 200), (90, 90, 90)).save(blank)
    with pytest.raises(EngineError, match="blank.png: no face found"):
        identity.embed_references((str(blank),), InsightFaceAnalyzer(files.insightface))


def test_pickle_adapters_are_refused_unless_allowed(tiny_recipe, files):
    recipe = identity_recipe(tiny_recipe, files, adapter=str(files.faceid_bin))
    with pytest.raises(EngineCannotHonour, match="identity.adapter: .*likeness models convert"):
        DiffusersEngine().check(recipe)
    DiffusersEngine(allow_pickle=True).check(recipe)
    with pytest.raises(EngineCannotHonour, match="pickle"):
        adapters.read_adapter(files.faceid_bin, allow_pickle=False)


def test_converted_adapter_holds_the_same_tensors_and_makes_the_same_image(tiny_recipe, files):
    import torch
    from safetensors.torch import load_file

    original = torch.load(files.faceid_bin, weights_only=True)
    flat = load_file(str(files.faceid))
    assert set(flat) == set(adapters.flatten(original))
    assert all(k.startswith(("image_proj.", "ip_adapter.")) for k in flat)
    for section, tensors in original.items():
        for key, tensor in tensors.items():
            assert torch.equal(flat[f"{section}.{key}"], tensor)
    assert adapters.nest(flat).keys() == original.keys()
    recipe = identity_recipe(tiny_recipe, files, region="image")
    pickled = DiffusersEngine(allow_pickle=True)
    (from_bin,) = pickled.generate(
        recipe.with_overrides({"identity.adapter": str(files.faceid_bin)}), 1
    )
    pickled.release()
    converted = DiffusersEngine()
    (from_st,) = converted.generate(recipe, 1)
    converted.release()
    assert np.array_equal(pixels(from_bin), pixels(from_st))


def test_conversion_refuses_non_tensor_pickles(tmp_path):
    import torch

    torch.save({"image_proj": {"w": torch.ones(2)}, "note": "text"}, tmp_path / "odd.bin")
    with pytest.raises(ValueError, match="note: holds a str"):
        adapters.convert_to_safetensors(tmp_path / "odd.bin")
    (tmp_path / "evil.bin").write_bytes(b"\x80\x04cos\nsystem\n.")
    with pytest.raises(ValueError, match="not a weights-only pickle"):
        adapters.convert_to_safetensors(tmp_path / "evil.bin")


def test_missing_and_mismatched_identity_files_are_named(tiny_recipe, files, tmp_path):
    recipe = identity_recipe(
        tiny_recipe,
        files,
        method="instantid",
        adapter=str(tmp_path / "nope.safetensors"),
        insightface=str(tmp_path),
        controlnet="",
        references=[str(tmp_path / "me.jpg")],
    )
    problems = adapters.identity_problems(recipe.identity, allow_pickle=False)
    fields = [p.field for p in problems]
    assert fields == [
        "identity.references",
        "identity.adapter",
        "identity.insightface",
        "identity.controlnet",
    ]
    assert "does not exist" in str(problems[1]) and "no .onnx files" in str(problems[2])
    wrong = identity_recipe(tiny_recipe, files, method="instantid", adapter=str(files.faceid))
    with pytest.raises(EngineCannotHonour, match="holds a ipadapter_faceid adapter, not instantid"):
        DiffusersEngine().check(
            wrong.with_overrides({"identity.controlnet": str(files.controlnet)})
        )
    flux = identity_recipe(tiny_recipe, files).with_overrides({"family": "flux"})
    with pytest.raises(EngineCannotHonour, match="identity.method"):
        DiffusersEngine()._check_identity(flux)


def test_keypoint_image_draws_five_coloured_points():
    points = np.array([[20, 20], [44, 20], [32, 32], [24, 44], [40, 44]], float)
    image = np.asarray(identity.draw_keypoints((64, 64), points))
    assert image.shape == (64, 64, 3)
    assert tuple(image[20, 20]) == (255, 0, 0) and tuple(image[32, 32]) == (0, 0, 255)
    assert np.asarray(identity.draw_keypoints((64, 64), None)).max() == 0
