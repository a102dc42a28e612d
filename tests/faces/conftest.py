from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import likeness

SAMPLES = Path(likeness.__file__).parent / "data" / "samples" / "faces"
PHOTOS = [
    "obama.jpg",
    "obama2.jpg",
    "obama3.jpg",
    "obama_partial_face.jpg",
    "obama_partial_face2.jpg",
    "biden.jpg",
    "Tom_Hanks_54745.png",
    "t1.jpg",
]


def load(name: str) -> np.ndarray:
    if name == "astronaut":
        from skimage import data

        return data.astronaut()
    return np.asarray(Image.open(SAMPLES / name).convert("RGB"))


@pytest.fixture(scope="session")
def analyzer():
    from likeness.faces import DlibAnalyzer

    return DlibAnalyzer()


@pytest.fixture(scope="session")
def images() -> dict[str, np.ndarray]:
    return {name: load(name) for name in [*PHOTOS, "astronaut"]}


@pytest.fixture(scope="session")
def analyses(analyzer, images):
    """Faces of every sample photo, and of its mirror image (computed once per run)."""
    out = {}
    for name, rgb in images.items():
        out[name] = analyzer.analyze(rgb)
        out[name + ":flipped"] = analyzer.analyze(np.ascontiguousarray(rgb[:, ::-1]))
    return out
