"""Head pose (yaw, pitch, roll) from 68 (or 5) landmarks and generic 3D faces.

Signs, in degrees, as seen in the image:
- yaw > 0: the face turns toward the image's left (the nose points to the viewer's left, the
  subject looks to their own right); a horizontally mirrored image flips the sign.
- pitch > 0: the face tilts down (chin toward the chest); a level face looking into the lens
  reads about 0, and a mirrored image reads the same.
- roll > 0: the head leans so that its top tips toward the image's right (clockwise as the
  viewer sees it).

The angles are measured against the line of sight from the camera to the face (to the nose
tip), not against the camera's axis (the focal length is taken as the image's long side, the
axis through its centre). A face high in a portrait frame
(as in most portraits) therefore reads level when it faces the lens, and cropping a photo does
not change the angles. Without this a level face in the upper third of a portrait read +10 to
+15 degrees of pitch: the angle under which the camera saw it.

Yaw and roll come from six points (nose tip 30, chin 8, outer eye corners 36/45, mouth corners
48/54) matched to a generic 3D face (`MODEL_POINTS`). Pitch comes from a second fit on points
that expressions do not move (`PITCH_MODEL_POINTS`: the four eye corners and five nose points),
because the chin drops when the mouth opens and a smile lifts the mouth corners, and the lower
face's height varies from person to person: with the chin and mouth in the fit a smiling woman
facing the lens read +11 degrees. The pitch model's proportions are adult anthropometric means
in millimetres, laid out so that a level face projects to the landmark layout of level frontal
portraits (nose tip 0.56 eye distances below the eye-corner line), with depths that set the
scale (a nose tip 42 mm in front of the outer eye corners; 20% more depth reads about 15% less
pitch).

The iterative solver starts from "facing the camera, at the distance the eye span implies";
without that guess it can land on the mirror solution behind the camera for some faces.
"""

from __future__ import annotations

import math

import numpy as np

from likeness.faces.types import HeadPose

# Bumped whenever the angles a landmark set reads change (part of the backends' cache version).
HEADPOSE_VERSION = "2"

# Camera frame: x to the image right, y down, z away from the camera. The nose tip is the
# origin; the rest of the face lies behind it (larger z). Units are arbitrary (about 0.2 mm).
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

# Points that expressions leave in place, in millimetres, same axes and origin.
PITCH_MODEL_POINTS = np.array(
    [
        (-41.5, -33.5, 42.0),  # 36 outer eye corner, image left
        (-18.5, -33.5, 32.0),  # 39 inner eye corner, image left
        (18.5, -33.5, 32.0),  # 42 inner eye corner, image right
        (41.5, -33.5, 42.0),  # 45 outer eye corner, image right
        (0.0, -37.5, 24.0),  # 27 top of the nose bridge
        (0.0, 0.0, 0.0),  # 30 nose tip
        (-16.0, 5.5, 26.0),  # 31 nostril wing, image left
        (0.0, 10.0, 16.0),  # 33 below the nose (subnasale)
        (16.0, 5.5, 26.0),  # 35 nostril wing, image right
    ],
    dtype=np.float64,
)
PITCH_LANDMARK_IDS = (36, 39, 42, 45, 27, 30, 31, 33, 35)

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
        >>> head_pose(face.points, 910, 1137).pitch  # doctest: +SKIP
        -0.5
    """
    pts = np.asarray(landmarks, dtype=np.float64).reshape(-1, 2)
    if pts.shape[0] == 68:
        turn = solve_pose(pts[list(LANDMARK_IDS)], MODEL_POINTS, 2, 3, 0, width, height)
        tilt = solve_pose(pts[list(PITCH_LANDMARK_IDS)], PITCH_MODEL_POINTS, 0, 3, 5, width, height)
        return HeadPose(yaw=turn.yaw, pitch=tilt.pitch, roll=turn.roll)
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
    """Fit `model_points` (nose tip at the origin) to `image_points` with solvePnP, starting
    from a frontal guess, and give the rotation against the line of sight to the nose tip."""
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
    # The model's origin is the nose tip, so tvec is the line of sight to it: undo the turn
    # that carries the camera's axis onto that line.
    rotation = line_of_sight(np.asarray(tvec, dtype=np.float64).ravel()).T @ rotation
    angles = cv2.RQDecomp3x3(rotation)[0]
    # Euler angles about the camera's x (pitch), y (yaw) and z (roll) axes; y points down.
    rx, ry, rz = (float(a) for a in angles)
    return HeadPose(yaw=_wrap(ry), pitch=_wrap(rx), roll=_wrap(rz))


def line_of_sight(direction: np.ndarray) -> np.ndarray:
    """The smallest rotation that carries the camera's axis (0, 0, 1) onto `direction`."""
    import cv2

    d = direction / max(float(np.linalg.norm(direction)), 1e-12)
    axis = np.cross((0.0, 0.0, 1.0), d)
    sin = float(np.linalg.norm(axis))
    if sin < 1e-12:
        return np.eye(3)
    angle = math.atan2(sin, float(d[2]))
    rotation, _ = cv2.Rodrigues(axis / sin * angle)
    return rotation


def _wrap(deg: float) -> float:
    return (deg + 180.0) % 360.0 - 180.0 if math.isfinite(deg) else deg
