"""Write text chunks into PNG bytes without re-encoding the pixels.

ComfyUI's PNGs already carry a ``prompt`` chunk (the API graph); we add the A1111-style
``parameters`` chunk that model sites and A1111 read, and our own JSON provenance chunk.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Mapping, Sequence
from typing import Any

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

# ComfyUI sampler (+ karras) -> A1111's display names.
_A1111_SAMPLERS = {
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
}


def _chunk(kind: bytes, payload: bytes) -> bytes:
    crc = zlib.crc32(kind + payload) & 0xFFFFFFFF
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc)


def text_chunk(keyword: str, text: str) -> bytes:
    """A tEXt chunk when ``text`` is Latin-1, else an uncompressed iTXt chunk (UTF-8)."""
    key = keyword.encode("latin-1")
    try:
        return _chunk(b"tEXt", key + b"\0" + text.encode("latin-1"))
    except UnicodeEncodeError:
        return _chunk(b"iTXt", key + b"\0\0\0" + b"\0" + b"\0" + text.encode("utf-8"))


def add_text_chunks(png: bytes, texts: Mapping[str, str]) -> bytes:
    """``png`` with one text chunk per item inserted before the first IDAT chunk."""
    if not png.startswith(PNG_SIGNATURE):
        raise ValueError("png: the bytes are not a PNG file")
    pos = len(PNG_SIGNATURE)
    while pos + 8 <= len(png):
        (length,) = struct.unpack(">I", png[pos : pos + 4])
        if png[pos + 4 : pos + 8] == b"IDAT":
            extra = b"".join(text_chunk(k, v) for k, v in texts.items())
            return png[:pos] + extra + png[pos:]
        pos += 12 + length
    raise ValueError("png: no IDAT chunk found")


def read_text_chunks(png: bytes) -> dict[str, str]:
    """Every tEXt/iTXt chunk of ``png`` (keyword -> text)."""
    out: dict[str, str] = {}
    pos = len(PNG_SIGNATURE)
    while pos + 8 <= len(png):
        (length,) = struct.unpack(">I", png[pos : pos + 4])
        kind, payload = png[pos + 4 : pos + 8], png[pos + 8 : pos + 8 + length]
        if kind == b"tEXt":
            key, _, value = payload.partition(b"\0")
            out[key.decode("latin-1")] = value.decode("latin-1")
        elif kind == b"iTXt":
            key, _, rest = payload.partition(b"\0")
            flag, rest = rest[0], rest[2:]
            _lang, _, rest = rest.partition(b"\0")
            _tkey, _, value = rest.partition(b"\0")
            out[key.decode("latin-1")] = (zlib.decompress(value) if flag else value).decode()
        pos += 12 + length
    return out


def a1111_parameters(provenance: Mapping[str, Any]) -> str:
    """The A1111 ``parameters`` text for one image's provenance (see engines.base)."""
    recipe = provenance["recipe"]
    sampler = _A1111_SAMPLERS.get(recipe["sampler"], recipe["sampler"])
    if recipe["scheduler"] == "karras":
        sampler += " Karras"
    fields: list[tuple[str, Any]] = [
        ("Steps", recipe["steps"]),
        ("Sampler", sampler),
        ("Schedule type", recipe["scheduler"]),
        ("CFG scale", recipe["cfg"]),
        ("Seed", provenance["seed"]),
        ("Size", f"{provenance['width']}x{provenance['height']}"),
    ]
    model = provenance.get("model") or {}
    if model.get("sha256"):
        fields.append(("Model hash", model["sha256"][:10]))
    if model.get("name"):
        fields.append(("Model", model["name"].rsplit(".", 1)[0]))
    loras: Sequence[Mapping[str, Any]] = provenance.get("loras") or []
    hashes = [f"{_stem(x['name'])}: {x['sha256'][:12]}" for x in loras if x.get("sha256")]
    if hashes:
        fields.append(("Lora hashes", '"' + ", ".join(hashes) + '"'))
    fields.append(("Version", f"likeness {provenance.get('likeness_version', '')}".strip()))
    prompt = provenance["prompt"]
    for lora in loras:
        prompt += f" <lora:{_stem(lora['name'])}:{lora['strength']}>"
    lines = [prompt]
    if provenance.get("negative"):
        lines.append(f"Negative prompt: {provenance['negative']}")
    lines.append(", ".join(f"{k}: {v}" for k, v in fields))
    return "\n".join(lines)


def _stem(name: str) -> str:
    return name.rsplit("/", 1)[-1].rsplit(".", 1)[0]
