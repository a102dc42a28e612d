"""What a face analyzer reports: plain, frozen, JSON-friendly records.

Coordinates are pixels of the full-resolution, upright image (x to the right, y down). Angles are
degrees; their signs are defined in `likeness.faces.headpose`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Box:
    """An axis-aligned face box; it may extend past the image border (a cut-off face)."""

    x0: float
    y0: float
    x1: float
    y1: float

    @property
    def width(self) -> float:
        return self.x1 - self.x0

    @property
    def height(self) -> float:
        return self.y1 - self.y0

    @property
    def area(self) -> float:
        return max(0.0, self.width) * max(0.0, self.height)

    @property
    def center(self) -> tuple[float, float]:
        return ((self.x0 + self.x1) / 2, (self.y0 + self.y1) / 2)

    def scaled(self, factor: float) -> Box:
        return Box(self.x0 * factor, self.y0 * factor, self.x1 * factor, self.y1 * factor)

    def iou(self, other: Box) -> float:
        ix = max(0.0, min(self.x1, other.x1) - max(self.x0, other.x0))
        iy = max(0.0, min(self.y1, other.y1) - max(self.y0, other.y0))
        inter = ix * iy
        union = self.area + other.area - inter
        return inter / union if union > 0 else 0.0

    def as_list(self) -> list[float]:
        return [round(self.x0, 2), round(self.y0, 2), round(self.x1, 2), round(self.y1, 2)]


@dataclass(frozen=True)
class HeadPose:
    """Head rotation in degrees; see `likeness.faces.headpose` for the signs."""

    yaw: float
    pitch: float
    roll: float


@dataclass(frozen=True)
class Face:
    """One detected face.

    `score` is the backend's detection confidence (its own scale; `threshold` in the backend
    says where "a face" starts). `landmarks` are 68 points in the iBUG 300-W order for the dlib
    backend (5 for InsightFace). `descriptor` is the identity embedding, compared by Euclidean
    distance (dlib: 128-D, same person below 0.6).
    """

    box: Box
    score: float
    landmarks: tuple[tuple[float, float], ...]
    descriptor: tuple[float, ...]
    pose: HeadPose

    @property
    def embedding(self) -> np.ndarray:
        return np.asarray(self.descriptor, dtype=np.float64)

    @property
    def points(self) -> np.ndarray:
        return np.asarray(self.landmarks, dtype=np.float64).reshape(-1, 2)

    def to_dict(self) -> dict[str, Any]:
        return {
            "box": self.box.as_list(),
            "score": round(self.score, 4),
            "landmarks": [[round(x, 2), round(y, 2)] for x, y in self.landmarks],
            "descriptor": [float(v) for v in self.descriptor],
            "yaw": round(self.pose.yaw, 2),
            "pitch": round(self.pose.pitch, 2),
            "roll": round(self.pose.roll, 2),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Face:
        return cls(
            box=Box(*data["box"]),
            score=float(data["score"]),
            landmarks=tuple((float(x), float(y)) for x, y in data["landmarks"]),
            descriptor=tuple(float(v) for v in data["descriptor"]),
            pose=HeadPose(float(data["yaw"]), float(data["pitch"]), float(data["roll"])),
        )
