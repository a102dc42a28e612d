"""Names and loaders of the sample photos, shared by the metrics tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

import likeness

SAMPLES = Path(likeness.__file__).parent / "data" / "samples" / "faces"
OBAMAS = [
    "obama.jpg",
    "obama2.jpg",
    "obama3.jpg",
    "obama_partial_face.jpg",
    "obama_partial_face2.jpg",
]
OTHERS = ["biden.jpg", "Tom_Hanks_54745.png", "astronaut.png"]


def rgb(name: str) -> np.ndarray:
    return np.asarray(Image.open(SAMPLES / name).convert("RGB"))
