"""ComfyUIEngine end to end against the test server: images, provenance, checks, refusals."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from fake_server import FakeComfyUI
from PIL import Image

from likeness.engines import Engine, EngineCannotHonour, ProgressUpdate, get_engine
from likeness.engines.comfyui import ComfyUIEngine, RetryPolicy, ServerLacks
from likeness.engines.comfyui.pngtext import read_text_chunks
from likeness.pnginfo import read_pnginfo
from likeness.recipes import Recipe

FAST = RetryPolicy(reconnect_attempts=10, backoff=0.05, max_backoff=0.3, idle_poll=2.0, timeout=30)
FACE = Path(__file__).resolve().parents[3] / "src/likeness/data/samples/faces/obama.jpg"


def engine(url: str) -> ComfyUIEngine:
    return ComfyUIEngine(url, policy=FAST)


def test_is_an_engine(fake: FakeComfyUI) -> None:
    eng = get_engine("comfyui", comfy_url=fake.url)
    assert isinstance(eng, ComfyUIEngine) and isinstance(eng, Engine)
    with pytest.raises(NotImplementedError, match="edit"):
        eng.edit(Image.new("RGB", (8, 8)), "smile")


def test_close_closes_only_the_client_it_opened(fake: FakeComfyUI) -> None:
    own = ComfyUIEngine(fake.url)
    own.close()
    assert own.http.is_closed
    import httpx

    with httpx.Client(base_url=fake.url) as shared:
        ComfyUIEngine(fake.url, http=shared).close()
        assert not shared.is_closed


def test_generate_returns_pngs_with_provenance(fake: FakeComfyUI, recipe: Recipe) -> None:
    updates: list[ProgressUpdate] = []
    images = engine(fake.url).generate(recipe, 2, progress=updates.append)
    assert [img.seed for img in images] == [42, 43]
    assert len(fake.state.submissions) == 2 and len(set(fake.state.submissions)) == 2
    for img in images:
        assert img.image().size == (64, 96)
        prov = img.provenance
        assert prov["engine"]["name"] == "comfyui" and prov["engine"]["version"] == "0.3.64"
        assert prov["comfyui"]["prompt_id"] in fake.state.submissions
        assert prov["recipe"]["seed"] == img.seed and prov["seed"] == img.seed
        assert prov["loras"][0]["sha256"] is None and prov["model"]["sha256"] is None
        assert {"run_s", "download_s", "total_s", "execute_s"} <= set(prov["timings"])
        assert (prov["width"], prov["height"]) == (64, 96)
        text = read_text_chunks(img.png)
        assert json.loads(text["likeness"]) == json.loads(json.dumps(prov))
        graph = json.loads(text["prompt"])  # ComfyUI's own chunk is kept
        assert any(n["class_type"] == "KSampler" for n in graph.values())
        info = read_pnginfo(img.png)  # what the rest of the project reads back
        assert info.provenance == json.loads(json.dumps(prov))
        assert (info.prompt, info.negative) == ("zk1, a photo of a woman, zk1 portrait, park", "blurry")  # fmt: skip
        assert info.params["Seed"] == str(img.seed) and info.params["Sampler"] == "DPM++ 2M"
        assert info.params["Engine"] == "comfyui 0.3.64"
        assert info.params["Lora weights"] == "tiny_sd15_slim_lora: 0.7"
    stages = [(u.image, u.stage) for u in updates if u.step]
    assert stages[0] == (0, "sample") and stages[-1] == (1, "refiner")
    assert {u.images for u in updates} == {2}
    sample = [u for u in updates if u.stage == "sample" and u.image == 0]
    assert [(u.step, u.steps) for u in sample] == [(0, 3), (1, 3), (2, 3), (3, 3)]


def test_batch_shares_one_prompt(fake: FakeComfyUI, recipe: Recipe) -> None:
    images = engine(fake.url).generate(recipe.with_overrides({"batch": 2}), 3)
    assert len(images) == 3 and len(fake.state.submissions) == 2
    assert [i.seed for i in images] == [42, 42, 44]
    assert [i.provenance["comfyui"]["batch_index"] for i in images] == [0, 1, 0]
    assert images[0].image().getpixel((0, 0)) != images[1].image().getpixel((0, 0))


def test_random_seed_is_resolved_and_recorded(fake: FakeComfyUI, recipe: Recipe) -> None:
    (img,) = engine(fake.url).generate(recipe.with_overrides({"seed": -1}), 1)
    assert img.seed >= 0 and img.provenance["recipe"]["seed"] == img.seed
    submitted = json.loads(read_text_chunks(img.png)["prompt"])
    assert img.seed in [n["inputs"].get("seed") for n in submitted.values()]


def test_check_lists_everything_missing_before_any_work(fake: FakeComfyUI, recipe: Recipe) -> None:
    r = recipe.with_overrides(
        {"model": "bigLove.safetensors", "detailer.enabled": True, "upscale.enabled": True,
         "upscale.model": "4x-UltraSharp.pth"}
    )  # fmt: skip
    eng = engine(fake.url)
    with pytest.raises(ServerLacks) as info:
        eng.check(r)
    lines = info.value.lines
    assert len(lines) == 5 and str(info.value) == "\n".join(lines)
    assert lines[0].startswith(
        "missing model file 'bigLove.safetensors' for CheckpointLoaderSimple"
    )
    assert any(line.startswith("missing node class FaceDetailer") for line in lines)
    with pytest.raises(ServerLacks):
        eng.generate(r, 1)
    assert fake.state.submissions == [] and fake.state.files == {}
    eng.check(recipe)  # the server has everything the plain recipe needs


def test_recipe_fields_refused_up_front(fake: FakeComfyUI, recipe: Recipe, tmp_path: Path) -> None:
    eng = engine(fake.url)
    ref = tmp_path / "ref.png"
    ref.write_bytes(b"x")
    with pytest.raises(ServerLacks) as lacks:  # FaceID runs, on a server with cubiq's nodes
        eng.check(recipe.with_overrides({"identity.enabled": True, "identity.method": "ipadapter_faceid",
                                         "identity.references": [str(ref)]}))  # fmt: skip
    assert "missing node class IPAdapterFaceID (slot 'identity_apply'): install ComfyUI_IPAdapter_plus (cubiq)" in lacks.value.lines  # fmt: skip
    with pytest.raises(EngineCannotHonour, match="identity.references: '/nope.png' is not a file"):
        eng.check(recipe.with_overrides({"identity.enabled": True, "identity.references": ["/nope.png"]}))  # fmt: skip
    with pytest.raises(Exception, match="model"):
        eng.check(recipe.with_overrides({"model": ""}))


def test_every_pass_runs_with_the_node_packs(fake_full: FakeComfyUI, recipe: Recipe) -> None:
    r = recipe.with_overrides(
        {"detailer.enabled": True, "upscale.enabled": True, "upscale.model": "4x-UltraSharp.pth",
         "upscale.factor": 2.0, "identity.enabled": True, "identity.references": [str(FACE)]}
    )  # fmt: skip
    eng = engine(fake_full.url)
    eng.check(r)
    (img,) = eng.generate(r, 1)
    assert img.image().size == (128, 192) == (img.provenance["width"], img.provenance["height"])
    assert fake_full.state.files[("input", "likeness", "obama.jpg")] == FACE.read_bytes()
    graph = json.loads(read_text_chunks(img.png)["prompt"])
    loads = [n["inputs"]["image"] for n in graph.values() if n["class_type"] == "LoadImage"]
    assert loads == ["likeness/obama.jpg"]
    classes = {n["class_type"] for n in graph.values()}
    assert {"ApplyInstantID", "FaceDetailer", "ImageUpscaleWithModel", "ImageScale"} <= classes
    with Image.open(io.BytesIO(img.png)) as decoded:
        assert decoded.mode == "RGB"


def test_ipadapter_faceid_runs_on_the_face_with_cubiqs_nodes(
    fake_full: FakeComfyUI, recipe: Recipe
) -> None:
    r = recipe.with_overrides(
        {"identity.enabled": True, "identity.method": "ipadapter_faceid",
         "identity.references": [str(FACE)], "identity.adapter": "/m/ip-adapter-faceid_sdxl.bin",
         "identity.insightface": "/m/insightface/buffalo_l"}
    )  # fmt: skip
    eng = engine(fake_full.url)
    eng.check(r)
    (img,) = eng.generate(r, 1)
    graph = json.loads(read_text_chunks(img.png)["prompt"])
    by_class = {n["class_type"]: n["inputs"] for n in graph.values()}
    assert by_class["IPAdapterModelLoader"]["ipadapter_file"] == "ip-adapter-faceid_sdxl.bin"
    assert by_class["IPAdapterFaceID"]["weight"] == 0.85
    assert by_class["FaceDetailer"]["denoise"] == 0.4
    assert img.provenance["recipe"]["identity"]["method"] == "ipadapter_faceid"


def test_home_relative_reference_is_checked_and_uploaded(
    fake_full: FakeComfyUI, recipe: Recipe, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(FACE.parent))
    r = recipe.with_overrides({"identity.enabled": True, "identity.references": [f"~/{FACE.name}"]})
    engine(fake_full.url).generate(r, 1)
    assert fake_full.state.files[("input", "likeness", FACE.name)] == FACE.read_bytes()


def test_release_frees_server_memory(fake: FakeComfyUI) -> None:
    eng = engine(fake.url)
    eng.release()
    assert fake.state.free_requests == [{"unload_models": True, "free_memory": True}]
    report = eng.report()
    assert report.to_dict()["ok"] and report.system.devices[0].name == "cpu"


def test_running_a_job_again_reuses_the_servers_images(fake: FakeComfyUI, recipe: Recipe) -> None:
    first = engine(fake.url).generate(recipe, 1)
    again = engine(fake.url).generate(recipe, 1)  # a new process: a new client id
    assert len(fake.state.submissions) == 1
    assert again[0].provenance["comfyui"]["reused"] is True
    assert again[0].image().tobytes() == first[0].image().tobytes()
    for key in [k for k in fake.state.files if k[0] == "output"]:
        del fake.state.files[key]  # the server's outputs were cleaned up: run it again
    third = engine(fake.url).generate(recipe, 1)
    assert len(fake.state.submissions) == 2 and third[0].provenance["comfyui"]["reused"] is False


def test_generate_survives_a_restart(recipe: Recipe) -> None:
    with FakeComfyUI(step_delay=0.01) as fake:
        fake.faults.restart_at_step = 2
        fake.faults.restart_keep_history = False
        (img,) = engine(fake.url).generate(recipe, 1)
        assert img.provenance["comfyui"]["resubmits"] == 1
        assert img.provenance["comfyui"]["reconnects"] == 1
        assert img.image().size == (64, 96)
