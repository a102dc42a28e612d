"""An engine for tests that "generates" real face photos: the photo is chosen from the recipe
and seed by a function the test gives, so verdicts and rankings are checked on real faces."""

from __future__ import annotations

import functools
import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

from PIL import Image

from likeness.data import FACES
from likeness.engines.base import EngineError, GeneratedImage, build_provenance, image_seeds
from likeness.recipes import Recipe

Chooser = Callable[[Recipe, int], str]
"""(recipe, seed) -> file name in the sample faces folder."""


@functools.lru_cache(maxsize=32)
def photo_png(name: str) -> bytes:
    """The sample photo as a plain PNG (no text chunks: the same photo is the same bytes);
    encoded once per process (a 1-2 MP PNG takes about half a second)."""
    with Image.open(FACES / name) as img:
        rgb = img.convert("RGB")
    buf = io.BytesIO()
    rgb.save(buf, format="PNG")
    return buf.getvalue()


class PhotoEngine:
    """Implements the Engine protocol; counts the images it was asked for."""

    name = "photos"

    def __init__(self, choose: Chooser, fail_after: int | None = None) -> None:
        self.choose = choose
        self.calls: list[tuple[str, int]] = []
        self.fail_after = fail_after
        self.closed = False

    def check(self, recipe: Recipe) -> None:
        return None

    def generate(self, recipe: Recipe, n: int, progress: Any = None) -> list[GeneratedImage]:
        out = []
        for seed in image_seeds(recipe, n):
            if self.fail_after is not None and len(self.calls) >= self.fail_after:
                raise KeyboardInterrupt("stopped by the test")
            name = self.choose(recipe, seed)
            if name == "error":
                raise EngineError("the test engine refused this one")
            self.calls.append((name, seed))
            png = photo_png(name)
            with Image.open(io.BytesIO(png)) as img:
                width, height = img.size
            prov = build_provenance(
                recipe=recipe,
                seed=seed,
                engine={"name": "photos", "version": "1"},
                model_sha256="0" * 64,
                lora_sha256s=[None] * len(recipe.loras),
                timings={"total_s": 0.0},
                width=width,
                height=height,
            )
            out.append(GeneratedImage(png=png, seed=seed, provenance=prov))
        return out

    def edit(self, image: Any, instruction: str) -> GeneratedImage:
        raise NotImplementedError("edit: the photo engine cannot edit")

    def release(self) -> None:
        return None

    def close(self) -> None:
        self.closed = True


def sample(name: str) -> Path:
    return FACES / name
