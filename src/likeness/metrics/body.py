"""Body pose for the model card's three body shots: `t_pose`, `standing`, `sitting`, else
`other`, or `not_visible` when the body is not in the picture.

Keypoints come from a `PoseBackend`; the default is MediaPipe 0.10.14's BlazePose (33 points,
models inside the wheel, offline). MediaPipe is optional: without it every image gets
`not_available`, said plainly rather than guessed.

Rules, on keypoints in pixels (y down) with visibility >= 0.5:
- `not_visible`: no person, or the shoulders are not both visible; also when neither the
  hips nor a T-pose is visible (a head-and-shoulders portrait has no body pose to judge).
- `t_pose`: both elbows and wrists visible, each upper arm and forearm within 25 degrees of
  horizontal, and the wrists at least 2.5 shoulder widths apart.
- `standing`: hips, knees and ankles visible, both knees straight (hip-knee-ankle >= 150
  degrees) and both thighs within 30 degrees of vertical.
- `sitting`: hips and knees visible and at least one thigh more than 45 degrees from
  vertical (seen from the side or the front, a seated thigh points forward).
- `other`: a visible body that fits none of these.
"""

from __future__ import annotations

import contextlib
import math
import os
import warnings
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from likeness.metrics.quiet import native_stderr_silenced

BODY_POSES = ("t_pose", "standing", "sitting", "other", "not_visible", "not_available")
VISIBLE = 0.5
# BlazePose indices.
L_SHOULDER, R_SHOULDER, L_ELBOW, R_ELBOW, L_WRIST, R_WRIST = 11, 12, 13, 14, 15, 16
L_HIP, R_HIP, L_KNEE, R_KNEE, L_ANKLE, R_ANKLE = 23, 24, 25, 26, 27, 28


@dataclass(frozen=True)
class BodyPose:
    label: str
    keypoints: tuple[tuple[float, float, float], ...] = ()
    """(x px, y px, visibility) per BlazePose point; empty when no body or no backend."""
    reason: str = ""


class PoseBackend(Protocol):
    name: str
    version: str

    def keypoints(self, rgb: np.ndarray) -> np.ndarray | None:
        """(33, 3) array of x px, y px, visibility, or None when no person is found."""
        ...


def mediapipe_available() -> bool:
    """Whether mediapipe is installed, without importing it (importing starts threads that a
    later fork of this process would inherit)."""
    import importlib.util

    return importlib.util.find_spec("mediapipe") is not None


@dataclass
class MediaPipePose:
    """BlazePose (full model) from mediapipe 0.10.14, static-image mode."""

    model_complexity: int = 1
    max_side: int = 1024
    name: str = field(default="mediapipe-blazepose", init=False)
    _pose: Any = field(default=None, init=False, repr=False)
    _started: bool = field(default=False, init=False, repr=False)

    @property
    def version(self) -> str:
        return f"0.10.14:{self.model_complexity}:{self.max_side}"

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_pose"] = None
        state["_started"] = False
        return state

    def load(self) -> Any:
        if self._pose is None:
            os.environ.setdefault("GLOG_minloglevel", "2")  # quieten MediaPipe's C++ logging
            try:
                import mediapipe as mp
            except Exception as exc:
                raise RuntimeError(
                    "body pose needs mediapipe 0.10.14 (`pip install --no-deps mediapipe==0.10.14 "
                    "absl-py attrs 'protobuf<5'`)"
                ) from exc
            with native_stderr_silenced():
                self._pose = mp.solutions.pose.Pose(
                    static_image_mode=True, model_complexity=self.model_complexity
                )
        return self._pose

    def keypoints(self, rgb: np.ndarray) -> np.ndarray | None:
        import cv2

        height, width = rgb.shape[:2]
        factor = min(1.0, self.max_side / max(height, width))
        small = rgb if factor == 1 else cv2.resize(rgb, None, fx=factor, fy=factor)
        pose = self.load()
        quiet = native_stderr_silenced() if not self._started else contextlib.nullcontext()
        self._started = True
        with quiet, warnings.catch_warnings():
            # mediapipe 0.10.14 calls a protobuf API that protobuf 4.25 marks deprecated.
            warnings.simplefilter("ignore", UserWarning)
            result = pose.process(np.ascontiguousarray(small))
        if result.pose_landmarks is None:
            return None
        return np.array(
            [(p.x * width, p.y * height, p.visibility) for p in result.pose_landmarks.landmark]
        )


def default_pose_backend() -> PoseBackend | None:
    """MediaPipe when it is installed, else None (body pose then reads `not_available`)."""
    return MediaPipePose() if mediapipe_available() else None


def body_pose(rgb: np.ndarray, backend: PoseBackend | None) -> BodyPose:
    if backend is None:
        return BodyPose(
            "not_available",
            reason="no body-pose backend (mediapipe 0.10.14 missing, or turned off)",
        )
    points = backend.keypoints(rgb)
    if points is None:
        return BodyPose("not_visible", reason="no person found")
    keypoints = tuple(
        (round(float(x), 1), round(float(y), 1), round(float(v), 3)) for x, y, v in points
    )
    label, reason = classify_pose(points)
    return BodyPose(label, keypoints, reason)


def classify_pose(points: np.ndarray) -> tuple[str, str]:
    """(label, reason) from (33, 3) keypoints in pixels with visibility (see module doc)."""
    pts = np.asarray(points, dtype=np.float64)

    def seen(*ids: int) -> bool:
        return all(pts[i, 2] >= VISIBLE for i in ids)

    def xy(i: int) -> np.ndarray:
        return pts[i, :2]

    if not seen(L_SHOULDER, R_SHOULDER):
        return "not_visible", "shoulders not visible"
    shoulder_width = max(1.0, float(np.linalg.norm(xy(L_SHOULDER) - xy(R_SHOULDER))))
    arms = seen(L_ELBOW, R_ELBOW, L_WRIST, R_WRIST)
    if arms:
        segments = [
            (L_SHOULDER, L_ELBOW), (L_ELBOW, L_WRIST), (R_SHOULDER, R_ELBOW), (R_ELBOW, R_WRIST),
        ]  # fmt: skip
        level = all(_from_horizontal(xy(a), xy(b)) <= 25 for a, b in segments)
        span = float(np.linalg.norm(xy(L_WRIST) - xy(R_WRIST))) / shoulder_width
        if level and span >= 2.5:
            return "t_pose", f"arms level, wrists {span:.1f} shoulder widths apart"
    if not seen(L_HIP, R_HIP):
        return "not_visible", "hips not visible"
    if seen(L_KNEE, R_KNEE):
        thighs = [_from_vertical(xy(L_HIP), xy(L_KNEE)), _from_vertical(xy(R_HIP), xy(R_KNEE))]
        if seen(L_ANKLE, R_ANKLE):
            knees = [
                _angle(xy(L_HIP), xy(L_KNEE), xy(L_ANKLE)),
                _angle(xy(R_HIP), xy(R_KNEE), xy(R_ANKLE)),
            ]
            if min(knees) >= 150 and max(thighs) <= 30:
                return "standing", f"knees {min(knees):.0f} deg, thighs {max(thighs):.0f} deg"
        if max(thighs) > 45:
            return "sitting", f"thigh {max(thighs):.0f} deg from vertical"
    return "other", "body visible, no card pose"


def _from_horizontal(a: np.ndarray, b: np.ndarray) -> float:
    dx, dy = abs(b[0] - a[0]), abs(b[1] - a[1])
    return math.degrees(math.atan2(dy, max(dx, 1e-9)))


def _from_vertical(a: np.ndarray, b: np.ndarray) -> float:
    dx, dy = abs(b[0] - a[0]), abs(b[1] - a[1])
    return math.degrees(math.atan2(dx, max(dy, 1e-9)))


def _angle(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> float:
    u, v = a - b, c - b
    cos = float(np.dot(u, v) / max(1e-9, np.linalg.norm(u) * np.linalg.norm(v)))
    return math.degrees(math.acos(max(-1.0, min(1.0, cos))))
