"""Generation metadata inside PNG files: the A1111 ``parameters`` chunk and our own JSON chunk.

Model sites, A1111/Forge and ComfyUI read the ``parameters`` text chunk::

    zk1, a woman in a park, zk1 portrait
    Negative prompt: blurry
    Steps: 30, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 4.0, Seed: 42, Size: 832x1216,
    Model hash: 0123456789, Model: bigLove, Lora hashes: "zk1: 0123456789ab", Version: likeness 0.1.0

(the last line is one line). The ``likeness`` chunk holds the full provenance dict as JSON
(see :mod:`likeness.engines.base`). Example::

    png = encode_png(image, provenance)
    info = read_pnginfo(png)   # PngInfo(parameters=..., provenance={...})
"""

from __future__ import annotations

import io
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import PurePath
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from PIL import Image, PngImagePlugin

PARAMETERS_KEY = "parameters"
PROVENANCE_KEY = "likeness"

# ComfyUI sampler / scheduler names -> the names A1111 writes.
A1111_SAMPLERS = {
    "euler": "Euler",
    "euler_ancestral": "Euler a",
    "heun": "Heun",
    "dpm_2": "DPM2",
    "dpm_2_ancestral": "DPM2 a",
    "lms": "LMS",
    "dpm_fast": "DPM fast",
    "dpm_adaptive": "DPM adaptive",
    "dpmpp_2s_ancestral": "DPM++ 2S a",
    "dpmpp_sde": "DPM++ SDE",
    "dpmpp_2m": "DPM++ 2M",
    "dpmpp_2m_sde": "DPM++ 2M SDE",
    "dpmpp_3m_sde": "DPM++ 3M SDE",
    "ddim": "DDIM",
    "uni_pc": "UniPC",
    "lcm": "LCM",
    "deis": "DEIS",
    "ipndm": "IPNDM",
}
A1111_SCHEDULES = {
    "normal": "Normal",
    "karras": "Karras",
    "exponential": "Exponential",
    "sgm_uniform": "SGM Uniform",
    "simple": "Simple",
    "ddim_uniform": "DDIM",
    "beta": "Beta",
    "kl_optimal": "KL Optimal",
    "linear_quadratic": "Linear Quadratic",
}
# A1111's own parser (modules/infotext_utils.py re_param).
_PARAM = re.compile(r'\s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)')


@dataclass(frozen=True)
class PngInfo:
    """What :func:`read_pnginfo` finds: the raw ``parameters`` text, its parsed form, and the
    ``likeness`` provenance dict (None when a chunk is absent)."""

    parameters: str | None
    prompt: str | None = None
    negative: str | None = None
    params: dict[str, str] = field(default_factory=dict)
    provenance: dict[str, Any] | None = None


def a1111_parameters(provenance: dict[str, Any]) -> str:
    """The A1111 ``parameters`` text for one image's provenance dict (a generation, or an
    edit: ``kind = "edit"`` with the instruction as prompt and no recipe)."""
    if "recipe" not in provenance:
        return _edit_parameters(provenance)
    recipe = provenance["recipe"]
    lines = [provenance.get("prompt", "")]
    if provenance.get("negative"):
        lines.append(f"Negative prompt: {provenance['negative']}")
    fields: list[tuple[str, Any]] = [
        ("Steps", recipe["steps"]),
        ("Sampler", A1111_SAMPLERS.get(recipe["sampler"], recipe["sampler"])),
        ("Schedule type", A1111_SCHEDULES.get(recipe["scheduler"], recipe["scheduler"])),
        ("CFG scale", recipe["cfg"]),
        ("Seed", provenance["seed"]),
        ("Size", f"{recipe['width']}x{recipe['height']}"),
    ]
    model = provenance.get("model") or {}
    if model.get("sha256"):
        fields.append(("Model hash", model["sha256"][:10]))
    if model.get("name"):
        fields.append(("Model", PurePath(model["name"]).stem))
    refiner = recipe.get("refiner") or {}
    if refiner.get("enabled"):
        fields += [("Refiner denoise", refiner["denoise"]), ("Refiner steps", refiner["steps"])]
    detailer = recipe.get("detailer") or {}
    if detailer.get("enabled"):
        fields.append(("Detailer denoise", detailer["denoise"]))
    upscale = recipe.get("upscale") or {}
    if upscale.get("enabled"):
        fields.append(("Upscale", f"{upscale['factor']}x"))
    fields += _lora_fields(provenance.get("loras") or [])
    engine = provenance.get("engine") or {}
    fields.append(("Engine", f"{engine.get('name', '')} {engine.get('version', '')}".strip()))
    fields.append(("Version", f"likeness {provenance.get('likeness_version', '')}".strip()))
    lines.append(", ".join(f"{k}: {_quote(v)}" for k, v in fields))
    return "\n".join(lines)


def _edit_parameters(provenance: dict[str, Any]) -> str:
    model = provenance.get("model") or {}
    engine = provenance.get("engine") or {}
    fields: list[tuple[str, Any]] = [
        ("Steps", provenance.get("steps", "")),
        ("Seed", provenance.get("seed", "")),
        ("Size", f"{provenance.get('width')}x{provenance.get('height')}"),
        ("Model", PurePath(model.get("name", "")).stem),
        ("Edit pipeline", model.get("pipeline", "")),
        *_lora_fields(provenance.get("loras") or []),
        ("Engine", f"{engine.get('name', '')} {engine.get('version', '')}".strip()),
        ("Version", f"likeness {provenance.get('likeness_version', '')}".strip()),
    ]
    line = ", ".join(f"{k}: {_quote(v)}" for k, v in fields)
    return f"{provenance.get('prompt', '')}\n{line}"


def _lora_fields(loras: list[dict[str, Any]]) -> list[tuple[str, Any]]:
    """A1111's `Lora weights` and `Lora hashes` fields (none without LoRAs)."""
    if not loras:
        return []
    fields: list[tuple[str, Any]] = [
        ("Lora weights", ", ".join(f"{_stem(x['name'])}: {x['strength']}" for x in loras))
    ]
    hashed = [x for x in loras if x.get("sha256")]
    if hashed:
        fields.append(
            ("Lora hashes", ", ".join(f"{_stem(x['name'])}: {x['sha256'][:12]}" for x in hashed))
        )
    return fields


def parse_parameters(text: str) -> tuple[str, str, dict[str, str]]:
    """Split A1111 ``parameters`` text into (prompt, negative prompt, {field: value})."""
    lines = text.strip().split("\n")
    params: dict[str, str] = {}
    last = lines[-1] if lines else ""
    if len(_PARAM.findall(last)) >= 3:
        lines = lines[:-1]
        for key, value in _PARAM.findall(last):
            params[key.strip()] = _unquote(value.strip())
    prompt_lines: list[str] = []
    negative_lines: list[str] = []
    target = prompt_lines
    for line in lines:
        if line.startswith("Negative prompt:"):
            target = negative_lines
            line = line[len("Negative prompt:") :].strip()
        target.append(line)
    return "\n".join(prompt_lines).strip(), "\n".join(negative_lines).strip(), params


def pnginfo_for(provenance: dict[str, Any]) -> PngImagePlugin.PngInfo:
    """A ``PIL.PngImagePlugin.PngInfo`` carrying both chunks."""
    from PIL.PngImagePlugin import PngInfo as PilPngInfo

    info = PilPngInfo()
    info.add_text(PARAMETERS_KEY, a1111_parameters(provenance))
    info.add_text(PROVENANCE_KEY, json.dumps(provenance, sort_keys=True), zip=True)
    return info


def encode_png(image: Image.Image, provenance: dict[str, Any]) -> bytes:
    """PNG bytes of ``image`` with the ``parameters`` and ``likeness`` chunks."""
    buf = io.BytesIO()
    image.save(buf, format="PNG", pnginfo=pnginfo_for(provenance), compress_level=4)
    return buf.getvalue()


def read_pnginfo(source: bytes | str | os.PathLike[str] | Image.Image) -> PngInfo:
    """Read both chunks back from PNG bytes, a path or an open PIL image.

    A ``likeness`` chunk that is not a JSON object (written by another program) reads as no
    provenance rather than failing the whole read.
    """
    from PIL import Image

    if isinstance(source, bytes | bytearray):
        with Image.open(io.BytesIO(source)) as img:
            text = dict(getattr(img, "text", {}) or {})
    elif isinstance(source, Image.Image):
        text = dict(getattr(source, "text", {}) or {})
    else:
        with Image.open(source) as img:
            text = dict(getattr(img, "text", {}) or {})
    parameters = text.get(PARAMETERS_KEY)
    raw = text.get(PROVENANCE_KEY)
    provenance = _json_object(raw) if raw else None
    if parameters is None:
        return PngInfo(parameters=None, provenance=provenance)
    prompt, negative, params = parse_parameters(parameters)
    return PngInfo(parameters, prompt, negative, params, provenance)


def _json_object(text: str) -> dict[str, Any] | None:
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _stem(name: str) -> str:
    return PurePath(name).stem


def _quote(value: Any) -> str:
    text = str(value)
    if "," not in text and "\n" not in text and ":" not in text and '"' not in text:
        return text
    return json.dumps(text, ensure_ascii=False)


def _unquote(text: str) -> str:
    if len(text) >= 2 and text[0] == '"' and text[-1] == '"':
        try:
            return json.loads(text)
        except json.JSONDecodeError:
            return text
    return text
