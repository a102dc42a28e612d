"""Text chunks are added to ComfyUI's PNG bytes without touching the pixels."""

from __future__ import annotations

import io

import pytest
from fake_server import DATA
from PIL import Image

from likeness.engines.comfyui.pngtext import add_text_chunks, read_text_chunks


def png() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (5, 3), (10, 20, 30)).save(buf, format="PNG")
    return buf.getvalue()


def test_latin1_and_unicode_chunks_round_trip_through_pil() -> None:
    out = add_text_chunks(png(), {"parameters": "a café, zk1", "likeness": '{"prompt": "東京"}'})
    with Image.open(io.BytesIO(out)) as img:
        assert img.text == {"parameters": "a café, zk1", "likeness": '{"prompt": "東京"}'}
        assert img.getpixel((4, 2)) == (10, 20, 30)
    assert read_text_chunks(out) == {"parameters": "a café, zk1", "likeness": '{"prompt": "東京"}'}


def test_existing_comfyui_chunks_are_kept() -> None:
    recorded = (DATA / "22_post_prompt_txt2img_2ksampler.json").read_text()
    source = add_text_chunks(png(), {"prompt": recorded})
    out = add_text_chunks(source, {"parameters": "x"})
    assert read_text_chunks(out) == {"prompt": recorded, "parameters": "x"}


def test_not_a_png_is_refused() -> None:
    with pytest.raises(ValueError, match="not a PNG"):
        add_text_chunks(b"GIF89a...", {"a": "b"})
