"""An engine for tests whose `edit` returns real face photos: the photo is chosen from the
instruction by a function the test gives, so verdicts are checked on real faces (a turned
head, another person, a head that did not turn)."""

from __future__ import annotations

import io
import time
from collections.abc import Callable
from typing import Any

from PIL import Image

from likeness.engines.base import EngineError, GeneratedImage

from .photo_engine import photo_png

EditChooser = Callable[[str], str]
"""instruction -> file name in the sample faces folder ("error": the engine fails)."""


def by_keywords(instruction: str) -> str:
    """The photo an edit model "returns" for the default instructions:

    - a profile to the right: obama.jpg, the frontal photo (the head did not turn);
    - right: obama_partial_face2.jpg (yaw about -24 to -37: half_right, smiling, Obama);
    - left: obama2.jpg (yaw about +33: half_left, Obama, not smiling);
    - smile: obama_partial_face.jpg (front, smiling, Obama);
    - angry or sad: biden.jpg (another person);
    - anything else: obama.jpg unchanged.
    """
    text = instruction.lower()
    if "profile" in text and "right" in text:
        return "obama.jpg"
    if "right" in text:
        return "obama_partial_face2.jpg"
    if "left" in text:
        return "obama2.jpg"
    if "smile" in text:
        return "obama_partial_face.jpg"
    if "angry" in text or "sad" in text:
        return "biden.jpg"
    return "obama.jpg"


class EditPhotoEngine:
    """Implements the Engine protocol's `edit`; records each call (instruction, input size)."""

    name = "photos"

    def __init__(self, choose: EditChooser = by_keywords, delay: float = 0.0) -> None:
        self.choose = choose
        self.delay = delay
        self.calls: list[tuple[str, tuple[int, int]]] = []
        self._png: dict[str, bytes] = {}
        self.closed = False

    def check(self, recipe: Any) -> None:
        return None

    def generate(self, recipe: Any, n: int, progress: Any = None) -> list[GeneratedImage]:
        raise NotImplementedError("generate: the edit photo engine only edits")

    def edit(self, image: Image.Image, instruction: str) -> GeneratedImage:
        if self.delay:
            time.sleep(self.delay)
        name = self.choose(instruction)
        self.calls.append((instruction, image.size))
        if name == "error":
            raise EngineError("the test engine refused this edit")
        png = self._png.setdefault(name, photo_png(name))
        with Image.open(io.BytesIO(png)) as img:
            width, height = img.size
        provenance = {
            "schema": 1,
            "kind": "edit",
            "instruction": instruction,
            "prompt": instruction,
            "seed": 0,
            "steps": 1,
            "input_size": list(image.size),
            "width": width,
            "height": height,
            "model": {"name": "photos", "path": "photos", "sha256": None},
            "engine": {"name": "photos", "version": "1"},
            "photo": name,
        }
        return GeneratedImage(png=png, seed=0, provenance=provenance)

    def release(self) -> None:
        return None

    def close(self) -> None:
        self.closed = True
