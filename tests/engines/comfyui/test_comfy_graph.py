"""Recipe -> API graph: named slots, the passes in order, and checks against /object_info."""

from __future__ import annotations

import json

import pytest
from fake_server import DATA, custom_nodes
from fake_validation import validate_prompt

from likeness.engines.comfyui.checks import (
    check_graph,
    complete_defaults,
    resolve_name,
    resolve_names,
)
from likeness.engines.comfyui.graph import GraphOptions, build_graph, model_inputs
from likeness.recipes import Recipe

CORE = json.loads((DATA / "object_info_core.json").read_text())


def full_info(**models: list[str]) -> dict:
    info = {**CORE, **custom_nodes()}
    info = json.loads(json.dumps(info))
    lists = {
        ("UpscaleModelLoader", "model_name"): models.get("upscale", []),
        ("ControlNetLoader", "control_net_name"): models.get("controlnet", []),
        ("CLIPVisionLoader", "clip_name"): models.get("clip_vision", []),
    }
    for (cls, name), files in lists.items():
        spec = info[cls]["input"]["required"][name]
        if spec[0] == "COMBO":
            spec[1]["options"] = files
        else:
            spec[0] = files
    info["LoadImage"]["input"]["required"]["image"][0] = [
        "likeness/ref.png",
        *models.get("inputs", []),
    ]
    return info


def link_target(graph, value) -> str:  # noqa: ANN001
    assert isinstance(value, list) and len(value) == 2
    assert value[0] in graph.nodes, f"dangling link {value}"
    return graph.slot_of(value[0])


def test_txt2img_with_lora_and_refiner(recipe: Recipe) -> None:
    g = build_graph(recipe)
    assert list(g.slots) == [
        "checkpoint", "lora_0", "positive", "negative", "latent", "sampler", "refiner", "decode", "save",
    ]  # fmt: skip
    assert g.node("checkpoint")["inputs"] == {"ckpt_name": "tiny_sd15_slim.safetensors"}
    lora = g.node("lora_0")["inputs"]
    assert (lora["strength_model"], lora["strength_clip"]) == (0.7, 0.7)
    assert link_target(g, g.node("positive")["inputs"]["clip"]) == "lora_0"
    assert g.node("positive")["inputs"]["text"] == "zk1, a photo of a woman, zk1 portrait, park"
    sampler = g.node("sampler")["inputs"]
    assert (sampler["seed"], sampler["steps"], sampler["cfg"], sampler["denoise"]) == (
        42,
        3,
        4.0,
        1.0,
    )
    assert (sampler["sampler_name"], sampler["scheduler"]) == ("dpmpp_2m", "karras")
    assert link_target(g, sampler["model"]) == "lora_0"
    refiner = g.node("refiner")["inputs"]
    assert link_target(g, refiner["latent_image"]) == "sampler"
    assert (refiner["denoise"], refiner["steps"]) == (0.25, 2)
    assert link_target(g, g.node("decode")["inputs"]["samples"]) == "refiner"
    assert g.node("decode")["inputs"]["vae"] == [g.id("checkpoint"), 2]
    assert link_target(g, g.node("save")["inputs"]["images"]) == "decode"
    assert all(node["_meta"]["title"] == g.slot_of(nid) for nid, node in g.nodes.items())
    assert g.output_size == (64, 96)
    ok, error, outputs, node_errors = validate_prompt(g.api(), CORE)
    assert ok, (error, node_errors)
    assert outputs == [g.id("save")]


def test_two_loras_chain_and_no_refiner(recipe: Recipe) -> None:
    r = recipe.with_overrides({"loras.1.path": "b.safetensors", "loras.1.strength": 1.0, "refiner.enabled": False})  # fmt: skip
    g = build_graph(r)
    assert link_target(g, g.node("lora_1")["inputs"]["model"]) == "lora_0"
    assert link_target(g, g.node("lora_1")["inputs"]["clip"]) == "lora_0"
    assert link_target(g, g.node("sampler")["inputs"]["model"]) == "lora_1"
    assert "refiner" not in g.slots
    assert link_target(g, g.node("decode")["inputs"]["samples"]) == "sampler"


def test_all_passes_validate_against_the_node_packs(recipe: Recipe) -> None:
    r = recipe.with_overrides(
        {"detailer.enabled": True, "upscale.enabled": True, "upscale.model": "4x-UltraSharp.pth",
         "upscale.factor": 2.0, "identity.enabled": True, "identity.references": ["ref.png"]}
    )  # fmt: skip
    g = build_graph(r, references=["likeness/ref.png"])
    order = list(g.slots)
    assert order.index("refiner") < order.index("decode") < order.index("identity")
    assert order.index("identity") < order.index("detailer") < order.index("upscale") < order.index("save")  # fmt: skip
    ident = g.node("identity_apply")["inputs"]
    assert link_target(g, ident["model"]) == "checkpoint"  # identity fix on the base model
    assert ident["weight"] == 0.85
    face = g.node("identity")["inputs"]  # region "face": a FaceDetailer with the adapter
    assert g.node("identity")["class_type"] == "FaceDetailer"
    assert link_target(g, face["model"]) == "identity_apply"
    assert link_target(g, face["positive"]) == "identity_apply"
    assert link_target(g, face["image"]) == "decode"
    assert (face["denoise"], face["steps"], face["guide_size"], face["bbox_crop_factor"]) == (0.4, 20, 1024.0, 3.0)  # fmt: skip
    assert link_target(g, g.node("detailer")["inputs"]["image"]) == "identity"
    det = g.node("detailer")["inputs"]
    assert (det["guide_size"], det["denoise"], det["feather"], det["bbox_crop_factor"]) == (512.0, 0.4, 5, 3.0)  # fmt: skip
    assert link_target(g, det["sam_model_opt"]) == "detailer_sam"
    assert link_target(g, g.node("upscale")["inputs"]["image"]) == "detailer"
    resize = g.node("resize")["inputs"]
    assert (resize["width"], resize["height"]) == (128, 192) == g.output_size
    info = full_info(
        upscale=["4x-UltraSharp.pth"], controlnet=[GraphOptions().instantid_controlnet]
    )
    assert check_graph(g, info) == []
    ok, error, _, node_errors = validate_prompt(g.api(), info)
    assert ok, (error, node_errors)


def test_identity_on_the_whole_image_resamples_the_latent_with_its_own_keypoints(
    recipe: Recipe,
) -> None:
    r = recipe.with_overrides(
        {"identity.enabled": True, "identity.references": ["ref.png"], "identity.region": "image",
         "identity.denoise": 0.35, "identity.steps": 12}
    )  # fmt: skip
    g = build_graph(r, references=["likeness/ref.png"])
    order = list(g.slots)
    assert order.index("refiner") < order.index("identity") < order.index("decode")
    sample = g.node("identity")["inputs"]
    assert link_target(g, sample["latent_image"]) == "refiner"
    assert (sample["denoise"], sample["steps"]) == (0.35, 12)
    # InstantID's keypoints come from the image being fixed, not from the reference.
    assert link_target(g, g.node("identity_apply")["inputs"]["image_kps"]) == "identity_kps"
    assert link_target(g, g.node("identity_kps")["inputs"]["samples"]) == "refiner"
    info = full_info(controlnet=[GraphOptions().instantid_controlnet])
    assert check_graph(g, info) == []
    ok, error, _, node_errors = validate_prompt(g.api(), info)
    assert ok, (error, node_errors)


def test_ipadapter_faceid_graph_validates_against_cubiqs_nodes(recipe: Recipe) -> None:
    r = recipe.with_overrides(
        {"identity.enabled": True, "identity.method": "ipadapter_faceid", "identity.weight": 0.7,
         "identity.references": ["a.png", "b.png"],
         "identity.adapter": "/models/ip-adapter-faceid_sdxl.bin",
         "identity.insightface": "/models/insightface/antelopev2/"}
    )  # fmt: skip
    info = full_info(
        clip_vision=[GraphOptions().clip_vision], inputs=["likeness/a.png", "likeness/b.png"]
    )
    names = resolve_names(model_inputs(r), info)
    assert names["/models/ip-adapter-faceid_sdxl.bin"] == "ip-adapter-faceid_sdxl.bin"
    g = build_graph(r, references=["likeness/a.png", "likeness/b.png"], names=names)
    apply = g.node("identity_apply")
    assert apply["class_type"] == "IPAdapterFaceID"
    inputs = apply["inputs"]
    assert link_target(g, inputs["model"]) == "checkpoint"
    assert link_target(g, inputs["image"]) == "references_1"
    assert (inputs["weight"], inputs["combine_embeds"]) == (0.7, "average")
    assert g.node("identity_model")["inputs"]["ipadapter_file"] == "ip-adapter-faceid_sdxl.bin"
    assert g.node("identity_faces")["inputs"]["model_name"] == "antelopev2"
    assert link_target(g, g.node("identity")["inputs"]["model"]) == "identity_apply"
    assert link_target(g, g.node("identity")["inputs"]["positive"]) == "identity_positive"
    assert check_graph(g, info) == []
    ok, error, _, node_errors = validate_prompt(g.api(), info)
    assert ok, (error, node_errors)
    lines = check_graph(g, {**CORE, **{k: v for k, v in info.items() if k != "IPAdapterFaceID"}})
    assert lines == [
        "missing node class IPAdapterFaceID (slot 'identity_apply'): install "
        "ComfyUI_IPAdapter_plus (cubiq)"
    ]
    bare = full_info()
    text = "\n".join(check_graph(g, bare))
    assert f"missing model file '{GraphOptions().clip_vision}' for CLIPVisionLoader" in text
    assert "copy it into models/clip_vision" in text


def test_several_references_are_batched(recipe: Recipe) -> None:
    r = recipe.with_overrides({"identity.enabled": True, "identity.references": ["a.png", "b.png", "c.png"]})  # fmt: skip
    g = build_graph(r, references=["a.png", "b.png", "c.png"])
    assert link_target(g, g.node("identity_apply")["inputs"]["image"]) == "references_2"
    assert link_target(g, g.node("references_2")["inputs"]["image1"]) == "references_1"
    with pytest.raises(ValueError, match="upload"):
        build_graph(r)


def test_flux_guidance_and_plain_upscale(recipe: Recipe) -> None:
    r = recipe.with_overrides({"family": "flux", "cfg": 3.5, "sampler": "euler", "scheduler": "simple",
                               "upscale.enabled": True, "upscale.factor": 1.5, "loras": []})  # fmt: skip
    g = build_graph(r)
    assert g.node("sampler")["inputs"]["cfg"] == 1.0
    assert g.node("positive_guidance")["inputs"]["guidance"] == 3.5
    assert link_target(g, g.node("sampler")["inputs"]["positive"]) == "positive_guidance"
    assert "upscale_model" not in g.slots
    assert (g.node("resize")["inputs"]["width"], g.output_size) == (96, (96, 144))


def test_seed_must_be_resolved(recipe: Recipe) -> None:
    with pytest.raises(ValueError, match="seed"):
        build_graph(recipe.with_overrides({"seed": -1}))
    assert build_graph(recipe, seed=7, batch=3).node("latent")["inputs"]["batch_size"] == 3


def test_check_names_every_missing_class_and_file(recipe: Recipe) -> None:
    r = recipe.with_overrides(
        {"model": "bigLove.safetensors", "loras.0.path": "zk1.safetensors", "detailer.enabled": True,
         "upscale.enabled": True, "upscale.model": "4x-UltraSharp.pth", "identity.enabled": True,
         "identity.references": ["ref.png"]}
    )  # fmt: skip
    g = build_graph(r, references=["likeness/ref.png"])
    lines = check_graph(g, CORE)
    text = "\n".join(lines)
    for missing in ("FaceDetailer", "SAMLoader", "UltralyticsDetectorProvider", "ApplyInstantID",
                    "InstantIDModelLoader", "InstantIDFaceAnalysis", "'bigLove.safetensors'",
                    "'zk1.safetensors'", "'4x-UltraSharp.pth'",
                    f"'{GraphOptions().instantid_controlnet}'"):  # fmt: skip
        assert sum(missing in line for line in lines) == 1, (missing, text)
    assert "install ComfyUI-Impact-Pack" in text and "install ComfyUI_InstantID (cubiq)" in text
    assert "copy it into models/checkpoints" in text
    assert "it has: tiny_sd15_micro_UNLOADABLE.safetensors, tiny_sd15_slim.safetensors" in text
    assert all("\n" not in line for line in lines)
    bad = build_graph(recipe.with_overrides({"sampler": "dpmpp_2m_sde"}))
    assert check_graph(bad, CORE) == []
    info = json.loads(json.dumps(CORE))
    info["KSampler"]["input"]["required"]["sampler_name"][0] = ["euler"]
    assert check_graph(bad, info) == [
        "value 'dpmpp_2m_sde' for KSampler.sampler_name (slot 'sampler') is not accepted by this "
        "server; it has: euler",
        "value 'dpmpp_2m_sde' for KSampler.sampler_name (slot 'refiner') is not accepted by this "
        "server; it has: euler",
    ]


def test_local_paths_resolve_to_server_names(recipe: Recipe) -> None:
    assert resolve_name("/home/me/models/tiny_sd15_slim.safetensors", ["tiny_sd15_slim.safetensors"]) == "tiny_sd15_slim.safetensors"  # fmt: skip
    assert resolve_name("zk1.safetensors", ["a/zk1.safetensors", "b/zk1.safetensors"]) is None
    assert resolve_name("zk1.safetensors", ["chars\\zk1.safetensors"]) == "chars\\zk1.safetensors"
    r = recipe.with_overrides({"model": "/m/tiny_sd15_slim.safetensors", "loras.0.path": "C:\\l\\tiny_sd15_slim_lora.safetensors"})  # fmt: skip
    names = resolve_names(model_inputs(r), CORE)
    g = build_graph(r, names=names)
    assert check_graph(g, CORE) == []
    assert g.node("lora_0")["inputs"]["lora_name"] == "tiny_sd15_slim_lora.safetensors"


def test_complete_defaults_fills_inputs_a_newer_pack_added(recipe: Recipe) -> None:
    r = recipe.with_overrides({"detailer.enabled": True})
    info = full_info()
    info["FaceDetailer"]["input"]["required"]["cycle_extra"] = ["BOOLEAN", {"default": False}]
    g = build_graph(r)
    ok, _, _, node_errors = validate_prompt(g.api(), info)
    assert not ok and "required_input_missing" in json.dumps(node_errors)
    done = complete_defaults(g, info)
    assert done.node("detailer")["inputs"]["cycle_extra"] is False
    assert validate_prompt(done.api(), info)[0]
    assert "cycle_extra" not in g.node("detailer")["inputs"]  # the original is unchanged
