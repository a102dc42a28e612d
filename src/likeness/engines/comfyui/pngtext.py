"""Write text chunks into PNG bytes without re-encoding the pixels.

ComfyUI's PNGs already carry a ``prompt`` chunk (the API graph, which ComfyUI's editor loads);
the engine adds the chunks of :mod:`likeness.pnginfo` (A1111 ``parameters`` and the ``likeness``
provenance JSON) next to it instead of decoding and re-encoding the image.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Mapping

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


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
