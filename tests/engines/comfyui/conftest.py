"""Fixtures: an in-process ComfyUI test server, a client for it, and a tiny recipe."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

sys.path.insert(0, str(Path(__file__).parent))

from fake_server import FakeComfyUI, custom_nodes  # noqa: E402

from likeness.recipes import LoraSpec, Recipe, RefinerPass  # noqa: E402


@pytest.fixture
def fake() -> Iterator[FakeComfyUI]:
    with FakeComfyUI() as server:
        yield server


@pytest.fixture
def fake_full() -> Iterator[FakeComfyUI]:
    """A server with Impact Pack, InstantID, IPAdapter plus and the models those graphs name."""
    models = {
        "upscale_models": ["4x-UltraSharp.pth"],
        "controlnet": ["instantid/diffusion_pytorch_model.safetensors"],
        "instantid": ["ip-adapter.bin"],
        "ipadapter": ["ip-adapter-faceid_sdxl.bin"],
        "clip_vision": ["CLIP-ViT-H-14-laion2B-s32B-b79K.safetensors"],
        "ultralytics": ["bbox/face_yolov8m.pt"],
        "sams": ["sam_vit_b_01ec64.pth"],
    }
    with FakeComfyUI(models=models, extra_nodes=custom_nodes()) as server:
        yield server


@pytest.fixture
def http(fake: FakeComfyUI) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=fake.url, timeout=10) as client:
        yield client


@pytest.fixture
def recipe() -> Recipe:
    return Recipe(
        engine="comfyui",
        model="tiny_sd15_slim.safetensors",
        family="sd15",
        loras=(LoraSpec("tiny_sd15_slim_lora.safetensors", 0.7),),
        prompt="a photo of a woman, park",
        negative="blurry",
        trigger="zk1",
        width=64,
        height=96,
        steps=3,
        seed=42,
        refiner=RefinerPass(enabled=True, denoise=0.25, steps=2),
    )
