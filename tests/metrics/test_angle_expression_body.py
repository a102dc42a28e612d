from __future__ import annotations

import numpy as np
import pytest
from metrics_samples import rgb

from likeness.faces import DlibAnalyzer
from likeness.metrics.angle import yaw_bucket
from likeness.metrics.body import (
    L_ANKLE,
    L_ELBOW,
    L_HIP,
    L_KNEE,
    L_SHOULDER,
    L_WRIST,
    R_ANKLE,
    R_ELBOW,
    R_HIP,
    R_KNEE,
    R_SHOULDER,
    R_WRIST,
    body_pose,
    classify_pose,
    mediapipe_available,
)
from likeness.metrics.expression import ExpressionClassifier
from likeness.metrics.face_geometry import measure


@pytest.mark.parametrize(
    "yaw,bucket",
    [
        (0, "front"),
        (19.9, "front"),
        (-19.9, "front"),
        (20, "half_left"),
        (45, "half_left"),
        (60, "profile_left"),
        (-20, "half_right"),
        (-59, "half_right"),
        (-85, "profile_right"),
        (float("nan"), None),
    ],
)
def test_yaw_bands(yaw, bucket):
    assert yaw_bucket(yaw) == bucket


def test_obama2_is_a_half_angle_and_obama_is_front(by_name):
    assert by_name["obama2.jpg"].angle == "half_left"
    assert by_name["obama.jpg"].angle == "front"


def test_expressions_of_the_samples(by_name):
    assert by_name["obama.jpg"].expression == "smiling"
    assert by_name["obama.jpg"].expression_probability > 0.9
    assert by_name["biden.jpg"].expression == "neutral"
    # Speaking, mouth open, brows not lowered: not angry (fer alone reads it angry).
    assert by_name["obama2.jpg"].expression == "neutral"


def test_expression_on_group_faces_and_mouth_geometry():
    img = rgb("t1.jpg")
    faces = DlibAnalyzer().analyze(img)
    grey = np.asarray(img.mean(axis=2), dtype=np.uint8)
    classifier = ExpressionClassifier()

    def lift(face):
        return measure(face.points, face.pose.yaw, face.pose.pitch).corner_lift

    laughing = max(faces, key=lift)
    flattest = min(faces, key=lift)
    assert classifier.classify(grey, laughing).label == "smiling"
    assert classifier.classify(grey, flattest).label != "smiling"
    probs = classifier.probabilities(grey, laughing)
    assert probs.shape == (7,) and probs.sum() == pytest.approx(1.0)


def _skeleton(**points: tuple[float, float]) -> np.ndarray:
    pts = np.zeros((33, 3))
    names = {
        "ls": L_SHOULDER, "rs": R_SHOULDER, "le": L_ELBOW, "re": R_ELBOW, "lw": L_WRIST,
        "rw": R_WRIST, "lh": L_HIP, "rh": R_HIP, "lk": L_KNEE, "rk": R_KNEE, "la": L_ANKLE,
        "ra": R_ANKLE,
    }  # fmt: skip
    for key, (x, y) in points.items():
        pts[names[key]] = (x, y, 0.99)
    return pts


BODY = dict(ls=(60, 100), rs=(40, 100), lh=(57, 200), rh=(43, 200))
LEGS_STRAIGHT = dict(lk=(57, 300), rk=(43, 300), la=(57, 400), ra=(43, 400))


def test_body_pose_rules_on_keypoints():
    t_pose = _skeleton(**BODY, le=(90, 101), re=(10, 99), lw=(120, 102), rw=(-20, 98))
    assert classify_pose(t_pose)[0] == "t_pose"
    standing = _skeleton(**BODY, **LEGS_STRAIGHT, le=(62, 150), re=(38, 150))
    assert classify_pose(standing)[0] == "standing"
    sitting = _skeleton(**BODY, lk=(140, 215), rk=(130, 212), la=(140, 310), ra=(130, 305))
    assert classify_pose(sitting)[0] == "sitting"
    kneeling = _skeleton(**BODY, lk=(60, 300), rk=(40, 300), la=(90, 300), ra=(70, 300))
    assert classify_pose(kneeling)[0] == "other"
    portrait = _skeleton(ls=(60, 100), rs=(40, 100))
    assert classify_pose(portrait)[0] == "not_visible"
    assert classify_pose(np.zeros((33, 3)))[0] == "not_visible"


def test_without_a_pose_backend_the_result_says_so():
    result = body_pose(np.zeros((8, 8, 3), np.uint8), None)
    assert result.label == "not_available" and "mediapipe" in result.reason


@pytest.mark.skipif(not mediapipe_available(), reason="mediapipe 0.10.14 not installed")
def test_mediapipe_on_real_photos(by_name):
    # Head-and-shoulders portraits have no body pose to judge; the group sits at a table.
    assert by_name["obama.jpg"].body_pose == "not_visible"
    assert by_name["t1.jpg"].body_pose == "sitting"
