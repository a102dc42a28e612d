"""Check a graph against a server's ``/object_info`` before submitting it.

``/object_info`` lists every installed node class with its inputs; an input whose choices are
files (``ckpt_name``, ``lora_name``, ``model_name``...) lists the files the server has. So one
look tells whether a graph can run: each missing node class and each missing file is reported
on its own line, naming the slot, the value and what to install, before any work starts.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import PureWindowsPath
from typing import Any

import httpx

from likeness.engines.comfyui import client
from likeness.engines.comfyui.graph import Graph

# Inputs whose choices are files in a models folder, and the folder a person copies them into.
FILE_INPUTS = {
    ("CheckpointLoaderSimple", "ckpt_name"): "models/checkpoints",
    ("LoraLoader", "lora_name"): "models/loras",
    ("UpscaleModelLoader", "model_name"): "models/upscale_models",
    ("ControlNetLoader", "control_net_name"): "models/controlnet",
    ("InstantIDModelLoader", "instantid_file"): "models/instantid",
    ("IPAdapterModelLoader", "ipadapter_file"): "models/ipadapter",
    ("CLIPVisionLoader", "clip_name"): "models/clip_vision",
    ("UltralyticsDetectorProvider", "model_name"): "models/ultralytics",
    ("SAMLoader", "model_name"): "models/sams",
}
# Where the node classes this project uses come from.
NODE_PACKS = {
    "FaceDetailer": "ComfyUI-Impact-Pack",
    "SAMLoader": "ComfyUI-Impact-Pack",
    "UltralyticsDetectorProvider": "ComfyUI-Impact-Subpack",
    "InstantIDModelLoader": "ComfyUI_InstantID (cubiq)",
    "InstantIDFaceAnalysis": "ComfyUI_InstantID (cubiq)",
    "ApplyInstantID": "ComfyUI_InstantID (cubiq)",
    "IPAdapterModelLoader": "ComfyUI_IPAdapter_plus (cubiq)",
    "IPAdapterInsightFaceLoader": "ComfyUI_IPAdapter_plus (cubiq)",
    "IPAdapterFaceID": "ComfyUI_IPAdapter_plus (cubiq)",
}
_SHOWN = 6


def choices(spec: Any) -> list[str] | None:
    """The allowed values of an input spec: ``[[a, b], {...}]`` or ``["COMBO", {"options": [...]}]``."""
    if not isinstance(spec, list) or not spec:
        return None
    if isinstance(spec[0], list):
        return [str(v) for v in spec[0]]
    if spec[0] == "COMBO" and len(spec) > 1 and isinstance(spec[1], Mapping):
        return [str(v) for v in spec[1].get("options", [])]
    return None


def input_spec(info: Mapping[str, Any], class_type: str, name: str) -> Any:
    node = info.get(class_type) or {}
    inputs = node.get("input") or {}
    for category in ("required", "optional"):
        if name in (inputs.get(category) or {}):
            return inputs[category][name]
    return None


def _listing(values: list[str]) -> str:
    if not values:
        return "it has none"
    shown = ", ".join(values[:_SHOWN])
    more = f" and {len(values) - _SHOWN} more" if len(values) > _SHOWN else ""
    return f"it has: {shown}{more}"


def check_graph(graph: Graph, info: Mapping[str, Any]) -> list[str]:
    """One line per node class the server lacks and per file/value it does not offer."""
    lines: list[str] = []
    missing_classes: set[str] = set()
    for node_id, node in graph.nodes.items():
        cls = str(node["class_type"])
        slot = graph.slot_of(node_id) or node_id
        if cls not in info:
            if cls not in missing_classes:
                pack = NODE_PACKS.get(cls)
                fix = f"install {pack}" if pack else "install the custom node pack that provides it"
                lines.append(f"missing node class {cls} (slot '{slot}'): {fix}")
                missing_classes.add(cls)
            continue
        for name, value in node["inputs"].items():
            if isinstance(value, list):
                continue
            if (cls, name) == ("LoadImage", "image"):
                continue  # uploads live in input subfolders the list does not show
            allowed = choices(input_spec(info, cls, name))
            if allowed is None or str(value) in allowed:
                continue
            folder = FILE_INPUTS.get((cls, name))
            if folder is not None:
                lines.append(
                    f"missing model file '{value}' for {cls}.{name} (slot '{slot}'): copy it into "
                    f"{folder} on the server; {_listing(allowed)}"
                )
            else:
                lines.append(
                    f"value '{value}' for {cls}.{name} (slot '{slot}') is not accepted by this "
                    f"server; {_listing(allowed)}"
                )
    return lines


def fetch_object_info(http: httpx.Client, classes: Iterable[str]) -> dict[str, Any]:
    """``/object_info/{class}`` for each class (unknown classes are simply absent)."""
    info: dict[str, Any] = {}
    for cls in sorted(set(classes)):
        info.update(client.object_info(http, cls))
    return info


def resolve_name(value: str, available: list[str]) -> str | None:
    """The server's name for a recipe value: itself, or a unique file with the same base name
    (so a local path ``/models/zk1.safetensors`` finds ``chars/zk1.safetensors``)."""
    if value in available:
        return value
    base = PureWindowsPath(value).name
    matches = [a for a in available if PureWindowsPath(a).name == base]
    return matches[0] if len(matches) == 1 else None


def resolve_names(wanted: Iterable[tuple[str, str]], info: Mapping[str, Any]) -> dict[str, str]:
    """Map each (folder, recipe value) to the server's file name where one matches."""
    lists = {
        "checkpoints": choices(input_spec(info, "CheckpointLoaderSimple", "ckpt_name")) or [],
        "loras": choices(input_spec(info, "LoraLoader", "lora_name")) or [],
        "upscale_models": choices(input_spec(info, "UpscaleModelLoader", "model_name")) or [],
        "instantid": choices(input_spec(info, "InstantIDModelLoader", "instantid_file")) or [],
        "ipadapter": choices(input_spec(info, "IPAdapterModelLoader", "ipadapter_file")) or [],
        "controlnet": choices(input_spec(info, "ControlNetLoader", "control_net_name")) or [],
        "clip_vision": choices(input_spec(info, "CLIPVisionLoader", "clip_name")) or [],
    }
    names: dict[str, str] = {}
    for folder, value in wanted:
        found = resolve_name(value, lists.get(folder, []))
        if found is None and folder == "controlnet" and not PureWindowsPath(value).suffix:
            # A diffusers ControlNet folder: the server holds its weights file.
            weights = f"{value.rstrip('/')}/diffusion_pytorch_model.safetensors"
            found = resolve_name(weights, lists["controlnet"])
        if found is not None and found != value:
            names[value] = found
    return names


def complete_defaults(graph: Graph, info: Mapping[str, Any]) -> Graph:
    """Fill required widget inputs the graph leaves out with the server's defaults.

    Custom node packs add inputs between versions (FaceDetailer has gained several); a value
    the recipe does not govern should not make the graph fail on a newer pack.
    """
    nodes = graph.api()
    for node in nodes.values():
        spec_in = (info.get(node["class_type"]) or {}).get("input") or {}
        for name, spec in (spec_in.get("required") or {}).items():
            if name in node["inputs"] or not isinstance(spec, list) or not spec:
                continue
            opts = spec[1] if len(spec) > 1 and isinstance(spec[1], Mapping) else {}
            if "default" in opts:
                node["inputs"][name] = opts["default"]
            elif (allowed := choices(spec)) and isinstance(spec[0], list):
                node["inputs"][name] = allowed[0]
    return Graph(nodes=nodes, slots=graph.slots, output_size=graph.output_size)
