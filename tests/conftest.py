"""Fixtures shared by every test folder: sample photos, fresh workspaces, bad files."""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from likeness.data import FACES
from likeness.workspace import Workspace

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def faces_dir() -> Path:
    return FACES


@pytest.fixture
def workspace(tmp_path: Path) -> Iterator[Workspace]:
    ws = Workspace.create(tmp_path / "ws", name="Test Subject", class_word="man")
    yield ws
    ws.close()


def random_png(path: Path, seed: int, size: int = 64) -> Path:
    """A unique, non-near-duplicate image (smooth random blobs, so perceptual hashes differ)."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, size=(8, 8, 3), dtype=np.uint8)
    img = Image.fromarray(small).resize((size, size), Image.Resampling.BICUBIC)
    img.save(path, format="PNG")
    return path


def jpeg_bytes(img: Image.Image, **kwargs) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="JPEG", **kwargs)
    return buf.getvalue()
