from __future__ import annotations

import math

import numpy as np
import pytest

from likeness.faces.headpose import LANDMARK_IDS, MODEL_POINTS, head_pose


def _project(yaw: float, pitch: float, roll: float, size: int = 1000) -> np.ndarray:
    """68 landmarks (only the six used are meaningful) of the generic face turned by the given
    angles about the camera axes (x right, y down, z away), 2000 units from the camera."""
    import cv2

    rvec, _ = cv2.Rodrigues(_rotation(yaw, pitch, roll))
    camera = np.array([[size, 0, size / 2], [0, size, size / 2], [0, 0, 1]], dtype=np.float64)
    pts, _ = cv2.projectPoints(MODEL_POINTS, rvec, np.array([0.0, 0, 2000]), camera, np.zeros(4))
    out = np.zeros((68, 2))
    out[list(LANDMARK_IDS)] = pts.reshape(-1, 2)
    return out


def _rotation(yaw: float, pitch: float, roll: float) -> np.ndarray:
    y, p, r = (math.radians(a) for a in (yaw, pitch, roll))
    rx = np.array([[1, 0, 0], [0, math.cos(p), -math.sin(p)], [0, math.sin(p), math.cos(p)]])
    ry = np.array([[math.cos(y), 0, math.sin(y)], [0, 1, 0], [-math.sin(y), 0, math.cos(y)]])
    rz = np.array([[math.cos(r), -math.sin(r), 0], [math.sin(r), math.cos(r), 0], [0, 0, 1]])
    return rz @ ry @ rx


@pytest.mark.parametrize(
    "yaw,pitch,roll", [(0, 0, 0), (30, 0, 0), (-45, 0, 0), (0, 20, 0), (0, 0, 15), (25, -10, 8)]
)
def test_recovers_known_angles_of_the_generic_face(yaw, pitch, roll):
    pose = head_pose(_project(yaw, pitch, roll), 1000, 1000)
    assert pose.yaw == pytest.approx(yaw, abs=1.0)
    assert pose.pitch == pytest.approx(pitch, abs=1.0)
    assert pose.roll == pytest.approx(roll, abs=1.0)


def test_sign_conventions_as_seen_in_the_image():
    nose, left_eye, right_eye, chin = 30, 36, 45, 8
    turned = _project(30, 0, 0)
    # Positive yaw: the nose tip sits left of the midpoint between the eyes.
    assert turned[nose, 0] < (turned[left_eye, 0] + turned[right_eye, 0]) / 2
    down = _project(0, 20, 0)
    level = _project(0, 0, 0)
    # Positive pitch: the face tilts down, so the chin comes closer to the nose in the image.
    assert down[chin, 1] - down[nose, 1] < level[chin, 1] - level[nose, 1]
    leaning = _project(0, 0, 15)
    # Positive roll: clockwise on screen, the eye on the image right drops.
    assert leaning[right_eye, 1] > leaning[left_eye, 1]


def test_yaw_changes_sign_on_every_mirrored_face(images, analyses):
    checked = 0
    for name, rgb in images.items():
        width = rgb.shape[1]
        flipped = analyses[name + ":flipped"]
        for face in analyses[name]:
            if abs(face.pose.yaw) <= 5:
                continue
            mirror_box = (width - face.box.x1, face.box.y0)
            twin = min(
                flipped, key=lambda f: abs(f.box.x0 - mirror_box[0]) + abs(f.box.y0 - mirror_box[1])
            )
            assert np.sign(twin.pose.yaw) == -np.sign(face.pose.yaw), (name, face.pose, twin.pose)
            assert abs(twin.pose.yaw + face.pose.yaw) < 12, (name, face.pose, twin.pose)
            checked += 1
    assert checked >= 8


def test_obama2_is_turned_toward_image_left_and_obama_faces_the_camera(analyses):
    assert 20 < analyses["obama2.jpg"][0].pose.yaw < 50
    assert abs(analyses["obama.jpg"][0].pose.yaw) < 10


def test_rejects_other_landmark_counts():
    with pytest.raises(ValueError, match="68 or 5"):
        head_pose(np.zeros((10, 2)), 100, 100)
