"""PNG metadata: the A1111 `parameters` chunk and the `likeness` JSON chunk, written and read."""

from __future__ import annotations

import io

from PIL import Image
from PIL.PngImagePlugin import PngInfo as PilPngInfo

from likeness.engines.base import build_provenance
from likeness.pnginfo import (
    a1111_parameters,
    encode_png,
    parse_parameters,
    read_pnginfo,
)
from likeness.recipes import LoraSpec, Recipe

MODEL_SHA = "0123456789abcdef" * 4
LORA_SHA = "fedcba9876543210" * 4


def provenance(**overrides):
    recipe = Recipe(
        model="/models/bigLove_xl.safetensors",
        prompt="raw photo, a woman: smiling, ünïcödé",
        negative="blurry, plastic skin",
        trigger="zk1",
        loras=(LoraSpec("/loras/zk1-v2.safetensors", 0.7), LoraSpec("/loras/style,x.safetensors")),
        seed=42,
        **overrides,
    )
    return build_provenance(
        recipe=recipe,
        seed=43,
        engine={"name": "diffusers", "version": "0.42.1"},
        model_sha256=MODEL_SHA,
        lora_sha256s=[LORA_SHA, None],
        timings={"sample_s": 1.23456, "total_s": 2.0},
        width=832,
        height=1216,
    )


def test_parameters_text_has_the_a1111_fields():
    text = a1111_parameters(provenance())
    lines = text.split("\n")
    assert lines[0] == "zk1, raw photo, a woman: smiling, zk1 portrait, ünïcödé"
    assert lines[1] == "Negative prompt: blurry, plastic skin"
    last = lines[2]
    for part in (
        "Steps: 30",
        "Sampler: DPM++ 2M",
        "Schedule type: Karras",
        "CFG scale: 4.0",
        "Seed: 43",
        "Size: 832x1216",
        f"Model hash: {MODEL_SHA[:10]}",
        "Model: bigLove_xl",
        f'Lora hashes: "zk1-v2: {LORA_SHA[:12]}"',
        "Version: likeness",
    ):
        assert part in last


def test_png_round_trip_of_both_chunks():
    prov = provenance()
    png = encode_png(Image.new("RGB", (16, 16), (10, 20, 30)), prov)
    info = read_pnginfo(png)
    assert info.provenance == prov
    assert info.prompt == prov["prompt"]
    assert info.negative == "blurry, plastic skin"
    assert info.params["Seed"] == "43"
    assert info.params["Size"] == "832x1216"
    assert info.params["Model hash"] == MODEL_SHA[:10]
    assert info.params["Lora hashes"] == f"zk1-v2: {LORA_SHA[:12]}"
    assert info.params["Lora weights"] == "zk1-v2: 0.7, style,x: 0.7"
    assert info.params["Refiner denoise"] == "0.25"
    with Image.open(io.BytesIO(png)) as img:
        assert img.getpixel((3, 3)) == (10, 20, 30)


def test_reads_an_a1111_file_and_a_png_without_chunks(tmp_path):
    text = (
        "portrait of a man, <lora:zk1:0.8>\nsecond line\n"
        "Negative prompt: ugly\nmultiline negative\n"
        "Steps: 20, Sampler: Euler a, CFG scale: 7, Seed: 1, Size: 512x768, Model hash: abc, "
        'Lora hashes: "zk1: 123456789abc", Version: v1.9.4'
    )
    info = PilPngInfo()
    info.add_text("parameters", text)
    path = tmp_path / "a1111.png"
    Image.new("RGB", (4, 4)).save(path, pnginfo=info)
    read = read_pnginfo(path)
    assert read.provenance is None
    assert read.prompt == "portrait of a man, <lora:zk1:0.8>\nsecond line"
    assert read.negative == "ugly\nmultiline negative"
    assert read.params["Sampler"] == "Euler a" and read.params["Lora hashes"] == "zk1: 123456789abc"
    plain = tmp_path / "plain.png"
    Image.new("RGB", (4, 4)).save(plain)
    empty = read_pnginfo(plain)
    assert empty.parameters is None and empty.provenance is None


def test_prompt_without_parameter_line_is_all_prompt():
    prompt, negative, params = parse_parameters("just a prompt, with commas: and colons")
    assert prompt == "just a prompt, with commas: and colons"
    assert negative == "" and params == {}


def test_foreign_likeness_chunk_reads_as_no_provenance():
    for raw in ("not json {", "[1, 2]"):
        info = PilPngInfo()
        info.add_text("parameters", "a cat\nSteps: 20, Seed: 1, Size: 8x8")
        info.add_text("likeness", raw)
        buf = io.BytesIO()
        Image.new("RGB", (8, 8)).save(buf, format="PNG", pnginfo=info)
        read = read_pnginfo(buf.getvalue())
        assert read.provenance is None and read.prompt == "a cat"
        assert read.params["Seed"] == "1"
