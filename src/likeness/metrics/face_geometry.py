"""Expression geometry: named measurements of the 68 landmarks in the face's own frame.

Every length is in eye distances (the distance between the midpoints of the two eyes' corner
pairs, 36/39 and 42/45, as it would be seen frontally), measured after turning the landmarks so
that the eye-corner line is level (roll removed). Head pose is corrected for:
- yaw shrinks the image eye distance by cos(yaw) but leaves heights alone: heights are
  multiplied by cos(yaw) (capped at 60 degrees); widths shrink with the eye distance and keep
  their ratio to it;
- pitch moves points at different depths against each other (a face tilted chin-up shows its
  mouth corners lower than its lip centre, as a frown does). Features that compare points at
  different depths subtract depth x sin(pitch), with depths from adult anthropometric means
  (`CORNER_DEPTH`, `BROW_DEPTH`, `INNER_BROW_DEPTH`) and then divide by cos(pitch).

Positive means: corners above the mouth's middle (`corner_lift`), lips apart (`mouth_open`),
brows above the eye-corner line (`brow_height`), inner brow ends above the brows' middles
(`inner_brow_raise`), eyelids apart relative to the eye's width (`eye_open`).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

# Depths (eye distances, toward the camera) of one point group in front of another.
CORNER_DEPTH = 0.30  # the lips' middle in front of the mouth corners (about 18 mm)
BROW_DEPTH = 0.12  # the brows in front of the eye corners (about 7 mm)
INNER_BROW_DEPTH = 0.08  # the inner brow ends in front of the brows' middles (about 5 mm)
MAX_YAW = 60.0


@dataclass(frozen=True)
class FaceGeometry:
    """Expression measurements of one face; see the module doc for units and signs."""

    corner_lift: float
    mouth_open: float
    mouth_width: float
    brow_height: float
    inner_brow_raise: float
    brow_gap: float
    eye_open: float

    def to_dict(self, digits: int = 3) -> dict[str, float]:
        return {k: round(v, digits) for k, v in asdict(self).items()}


def face_frame(points: np.ndarray) -> tuple[np.ndarray, float]:
    """The landmarks turned so that the eye-corner line is level, origin midway between the eye
    midpoints, in image eye distances; and the image eye distance in pixels."""
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    left, right = (pts[36] + pts[39]) / 2, (pts[42] + pts[45]) / 2
    eye_distance = max(float(np.linalg.norm(right - left)), 1e-6)
    angle = math.atan2(right[1] - left[1], right[0] - left[0])
    c, s = math.cos(-angle), math.sin(-angle)
    turned = (pts - (left + right) / 2) @ np.array([[c, s], [-s, c]])
    return turned / eye_distance, eye_distance


def measure(points: np.ndarray, yaw: float = 0.0, pitch: float = 0.0) -> FaceGeometry:
    """`FaceGeometry` of 68 landmarks, corrected for the head's yaw and pitch (degrees).

    Example:
        >>> measure(face.points, face.pose.yaw, face.pose.pitch).corner_lift  # doctest: +SKIP
        0.12
    """
    q, _ = face_frame(points)
    cos_yaw = math.cos(math.radians(min(abs(_finite(yaw)), MAX_YAW)))
    theta = math.radians(max(-45.0, min(45.0, _finite(pitch))))
    sin_p, cos_p = math.sin(theta), math.cos(theta)
    # The image eye distance is cos(yaw) of the frontal one; widths shrank with it, heights not.
    x, y = q[:, 0], q[:, 1] * cos_yaw

    def up(a: float, b: float, depth: float) -> float:
        """How far b sits above a (image up), corrected for pitch when b is `depth` in front."""
        return ((a - b) + depth * sin_p) / cos_p

    middle = (y[62] + y[66]) / 2
    corners = (y[48] + y[54]) / 2
    corner_lift = up(middle, corners, -CORNER_DEPTH)  # the corners lie behind the middle
    eye_line = (y[36] + y[39] + y[42] + y[45]) / 4
    brow_height = up(eye_line, float(np.mean(y[17:27])), BROW_DEPTH)
    inner = (y[21] + y[22]) / 2
    mid = (y[19] + y[24]) / 2
    inner_brow_raise = up(mid, inner, INNER_BROW_DEPTH)
    widths = (abs(x[39] - x[36]) + abs(x[45] - x[42])) / 2
    lids = (y[41] - y[37] + y[40] - y[38] + y[47] - y[43] + y[46] - y[44]) / 4
    return FaceGeometry(
        corner_lift=float(corner_lift),
        mouth_open=float(max(0.0, y[66] - y[62]) / cos_p),
        mouth_width=float(abs(x[54] - x[48])),
        brow_height=float(brow_height),
        inner_brow_raise=float(inner_brow_raise),
        brow_gap=float(abs(x[22] - x[21])),
        eye_open=float(max(0.0, lids) / cos_p / max(widths, 1e-6)),
    )


def _finite(value: float) -> float:
    return value if math.isfinite(value) else 0.0
