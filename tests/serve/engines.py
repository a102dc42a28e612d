"""Engines for the server's tests, importable by worker processes
(`serve.engine_factories = {diffusers = "tests.serve.engines:photo_engine"}`)."""

from __future__ import annotations

import threading
from typing import Any

from likeness.engines.base import GeneratedImage
from likeness.recipes import Recipe
from tests.evaluate.photo_engine import PhotoEngine

GENERATED = ("obama2.jpg", "biden.jpg")


def photo_engine() -> PhotoEngine:
    """`diffusers` for tests: seed s "generates" GENERATED[s % 2], a real face photo."""
    return PhotoEngine(lambda recipe, seed: GENERATED[seed % len(GENERATED)])


class GatedEngine(PhotoEngine):
    """A photo engine that waits at each image until the test opens the gate: the test sees
    the job running, and decides when it goes on."""

    def __init__(self) -> None:
        super().__init__(lambda recipe, seed: GENERATED[seed % len(GENERATED)])
        self.gate = threading.Event()
        self.waiting = threading.Event()

    def generate(self, recipe: Recipe, n: int, progress: Any = None) -> list[GeneratedImage]:
        self.waiting.set()
        if not self.gate.wait(30):
            raise TimeoutError("the test never opened the gate")
        return super().generate(recipe, n, progress)
