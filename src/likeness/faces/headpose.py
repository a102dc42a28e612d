"""Head pose (yaw, pitch, roll) from six of the 68 landmarks and a generic 3D face.

Signs, in degrees, as seen in the image:
- yaw > 0: the face turns toward the image's left (the nose points to the viewer's left, the
  subject looks to their own right); a horizontally mirrored image flips the sign.
- pitch > 0: the face tilts down (chin toward the chest). The generic model's proportions put
  a level face looking into the lens at about +10 to +15.
- roll > 0: the head leans so that its top tips toward the image's right (clockwise as the
  viewer sees it).

The six points (nose tip 30, chin 8, outer eye corners 36/45, mouth corners 48/54) are matched
to a generic 3D model with `cv2.solvePnP`. Without a starting guess, the iterative solver can
land on the mirror solution behind the camera for some faces, so it starts from "facing the
camera, at the distance the eye span implies".
"""

from __future__ import annotations

import math

import numpy as np

from likeness.faces.types import HeadPose

# Camera frame: x to the image right, y down, z away from the camera. The nose tip is the
# origin; the rest of the face lies behind it (larger z). Units are arbitrary (about 0.1 mm).
MODEL_POINTS = np.array(
    [
        (0.0, 0.0, 0.0),  # 30 nose tip
        (0.0, 330.0, 65.0),  # 8 chin
        (-225.0, -170.0, 135.0),  # 36 outer corner of the eye on the image left
        (225.0, -170.0, 135.0),  # 45 outer corner of the eye on the image right
        (-150.0, 150.0, 125.0),  # 48 mouth corner, image left
        (150.0, 150.0, 125.0),  # 54 mouth corner, image right
    ],
    dtype=np.float64,
)
LANDMARK_IDS = (30, 8, 36, 45, 48, 54)


# The same face for five-point detectors (eye centres, nose tip, mouth corners).
MODEL_POINTS_5 = np.array(
    [
        (-165.0, -170.0, 135.0),
        (165.0, -170.0, 135.0),
        (0.0, 0.0, 0.0),
        (-150.0, 150.0, 125.0),
        (150.0, 150.0, 125.0),
    ],
    dtype=np.float64,
)


def head_pose(landmarks: np.ndarray, width: int, height: int) -> HeadPose:
    """Yaw, pitch and roll in degrees from 68 (or 5) landmarks of an image `width` x `height`.

    Example:
        >>> head_pose(face.points, 910, 1137).yaw  # doctest: +SKIP
        0.4
    """
    pts = np.asarray(landmarks, dtype=np.float64).reshape(-1, 2)
    if pts.shape[0] == 68:
        return solve_pose(pts[list(LANDMARK_IDS)], MODEL_POINTS, 2, 3, 0, width, height)
    if pts.shape[0] == 5:
        return solve_pose(pts, MODEL_POINTS_5, 0, 1, 2, width, height)
    raise ValueError(f"head_pose needs 68 or 5 landmarks, got {pts.shape[0]}")


def solve_pose(
    image_points: np.ndarray,
    model_points: np.ndarray,
    left_eye: int,
    right_eye: int,
    nose_tip: int,
    width: int,
    height: int,
) -> HeadPose:
    """Fit `model_points` to `image_points` with solvePnP, starting from a frontal guess."""
    import cv2

    focal = float(max(width, height))
    camera = np.array([[focal, 0, width / 2], [0, focal, height / 2], [0, 0, 1]], dtype=np.float64)
    # Start facing the camera, at the depth that makes the model's eye span match the image's.
    model_span = float(np.linalg.norm(model_points[right_eye] - model_points[left_eye]))
    eye_px = max(1.0, float(np.linalg.norm(image_points[right_eye] - image_points[left_eye])))
    depth = focal * model_span / eye_px
    nose = image_points[nose_tip]
    tvec = np.array(
        [[(nose[0] - width / 2) * depth / focal], [(nose[1] - height / 2) * depth / focal], [depth]]
    )
    rvec = np.zeros((3, 1), dtype=np.float64)
    ok, rvec, tvec = cv2.solvePnP(
        model_points,
        image_points,
        camera,
        np.zeros(4),
        rvec=rvec,
        tvec=tvec,
        useExtrinsicGuess=True,
        flags=cv2.SOLVEPNP_ITERATIVE,
    )
    if not ok:
        return HeadPose(float("nan"), float("nan"), float("nan"))
    rotation, _ = cv2.Rodrigues(rvec)
    angles = cv2.RQDecomp3x3(rotation)[0]
    # Euler angles about the camera's x (pitch), y (yaw) and z (roll) axes; y points down.
    rx, ry, rz = (float(a) for a in angles)
    return HeadPose(yaw=_wrap(ry), pitch=_wrap(rx), roll=_wrap(rz))


def _wrap(deg: float) -> float:
    return (deg + 180.0) % 360.0 - 180.0 if math.isfinite(deg) else deg
