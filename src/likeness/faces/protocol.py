"""The face backend protocol: anything that turns an RGB image into faces."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np

from likeness.faces.types import Face


@runtime_checkable
class FaceAnalyzer(Protocol):
    """Detects faces and describes each one.

    `name` and `version` key the analysis cache: a backend that changes its output (new model,
    new threshold) must change `version` so stale results are not reused.
    """

    name: str
    version: str
    match_threshold: float
    """Embedding distance below which two faces are the same person (dlib: 0.6)."""

    def analyze(self, rgb: np.ndarray) -> list[Face]:
        """Faces in an HxWx3 uint8 RGB image, strongest detection first."""
        ...


class FaceModelMissing(RuntimeError):
    """A model file or package a face backend needs is not installed."""
