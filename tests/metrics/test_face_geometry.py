"""Expression geometry and rules on warped landmarks: a real neutral face (biden.jpg), moved
in its own frame (units: eye distances, y down), must move each measurement and each rule the
right way."""

from __future__ import annotations

import math

import numpy as np
import pytest
from metrics_samples import rgb

from likeness.faces import DlibAnalyzer
from likeness.metrics.expression import UNSURE, decide, geometry_weight, supports
from likeness.metrics.face_geometry import face_frame, measure

LOWER_LIP = [56, 57, 58, 65, 66, 67]
CORNERS = [48, 54, 60, 64]
JAW = list(range(4, 13))


@pytest.fixture(scope="module")
def neutral() -> np.ndarray:
    """biden.jpg's landmarks in its face frame (level eye-corner line, eye distance 1)."""
    (face,) = DlibAnalyzer().analyze(rgb("biden.jpg"))
    points, _ = face_frame(face.points)
    return points


def moved(points: np.ndarray, ids: list[int], dx: float = 0.0, dy: float = 0.0) -> np.ndarray:
    out = points.copy()
    out[ids] += (dx, dy)
    return out


def fer(**probabilities: float) -> dict[str, float]:
    table = dict.fromkeys(
        ("angry", "disgusted", "fearful", "smiling", "sad", "surprised", "neutral"), 0.0
    )
    return {**table, **probabilities}


def test_the_measurements_ignore_position_scale_and_roll(neutral):
    angle = math.radians(25)
    turn = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    other = neutral @ turn.T * 180 + (400, 250)
    assert measure(other).to_dict(6) == pytest.approx(measure(neutral).to_dict(6), abs=1e-6)


def test_the_neutral_face_reads_neutral(neutral):
    g = measure(neutral)
    assert abs(g.corner_lift) < 0.03 and g.mouth_open < 0.02
    assert supports(g)["neutral"] > 0.95
    assert decide(fer(neutral=0.6, sad=0.3, smiling=0.1), g)[0] == "neutral"


def test_lifting_the_mouth_corners_reads_smiling(neutral):
    before = measure(neutral)
    smile = measure(moved(moved(neutral, [48, 54], dy=-0.10), [49, 53, 59, 55], dy=-0.05))
    assert smile.corner_lift - before.corner_lift == pytest.approx(0.10, abs=0.005)
    assert supports(smile)["smiling"] > 0.5 > supports(before)["smiling"]
    hesitant = fer(smiling=0.4, neutral=0.35, sad=0.25)
    assert decide(hesitant, before)[0] == "neutral"
    assert decide(hesitant, smile)[0] == "smiling"


def test_pulling_the_corners_down_reads_sad(neutral):
    before = measure(neutral)
    frown = measure(moved(neutral, [48, 54], dy=0.08))
    assert frown.corner_lift < before.corner_lift - 0.07
    assert supports(frown)["sad"] > 0.5
    sad = fer(sad=0.6, neutral=0.4)
    assert decide(sad, before)[0] == UNSURE  # fer says sad, the face shows no sign of it
    label, confidence, _ = decide(sad, frown)
    assert label == "sad" and confidence > 0.6


def test_raising_the_inner_brows_reads_sad(neutral):
    before = measure(neutral)
    raised = measure(moved(moved(neutral, [21, 22], dy=-0.09), [20, 23], dy=-0.04))
    assert raised.inner_brow_raise > before.inner_brow_raise + 0.06
    assert supports(raised)["sad"] > 0.5 > 0.05 > supports(before)["sad"]
    assert decide(fer(sad=0.55, neutral=0.45), raised)[0] == "sad"


def test_an_open_speaking_mouth_is_not_angry(neutral):
    # A jaw drop: the lower lip and chin move down, the mouth corners half as far.
    speaking = moved(moved(neutral, LOWER_LIP + JAW, dy=0.25), CORNERS, dy=0.125)
    g = measure(speaking)
    assert g.mouth_open > 0.2 and abs(g.corner_lift - measure(neutral).corner_lift) < 0.01
    fer_reads_anger = fer(angry=0.8, neutral=0.1, smiling=0.1)
    assert decide(fer_reads_anger, measure(neutral))[0] == UNSURE
    label, _, reason = decide(fer_reads_anger, g)
    assert label == "neutral" and "open mouth" in reason


def test_lowering_the_brows_reads_angry_even_when_shouting(neutral):
    # The cue is an absolute brow height: this face's brows sit high (0.33 eye distances above
    # the eye corners), so it takes a deep frown (0.16, about 10 mm) to read angry.
    before = measure(neutral)
    frowning = moved(neutral, list(range(17, 27)), dy=0.16)
    g = measure(frowning)
    assert g.brow_height == pytest.approx(before.brow_height - 0.16, abs=1e-6)
    assert supports(g)["angry"] > 0.5 and supports(before)["angry"] == 0.0
    angry = fer(angry=0.7, neutral=0.3)
    assert decide(angry, g)[0] == "angry"
    shouting = measure(moved(moved(frowning, LOWER_LIP + JAW, dy=0.25), CORNERS, dy=0.125))
    assert decide(angry, shouting)[0] == "angry"


def test_wide_eyes_support_other(neutral):
    before = measure(neutral)
    wide = measure(moved(moved(neutral, [37, 38, 43, 44], dy=-0.06), [40, 41, 46, 47], dy=0.03))
    assert wide.eye_open > before.eye_open + 0.2
    assert supports(wide)["other"] == 1.0 and supports(before)["other"] == 0.0
    assert decide(fer(surprised=0.4, fearful=0.3, neutral=0.3), wide)[0] == "other"


def test_head_pose_corrections_move_the_right_way(neutral):
    level = measure(neutral)
    # Chin up shows the mouth corners lower than they are: the correction lifts them.
    assert measure(neutral, pitch=-20).corner_lift > level.corner_lift + 0.08
    # Chin down shows the brows lower than they are: the correction raises them.
    assert measure(neutral, pitch=20).brow_height > level.brow_height + 0.03
    # A turned head shrinks the eye distance, the unit: heights are scaled back by cos(yaw);
    # widths shrink with the eye distance and keep their ratio.
    turned = measure(neutral, yaw=40)
    assert turned.brow_height == pytest.approx(level.brow_height * math.cos(math.radians(40)))
    assert turned.mouth_width == pytest.approx(level.mouth_width)


def test_without_landmarks_fer_decides_alone():
    assert decide(fer(smiling=0.9, neutral=0.1), None) == ("smiling", 0.9, "fer alone")
    label, confidence, _ = decide(fer(sad=0.4, neutral=0.35, angry=0.25), None)
    assert label == UNSURE and confidence == 0.4
    assert decide(fer(surprised=0.3, fearful=0.3, neutral=0.4), None)[0] == "other"


def test_a_turned_head_leans_on_fer_and_says_unsure_when_fer_is(neutral):
    assert geometry_weight(30) == 1.0 and geometry_weight(-45) == 1.0
    assert geometry_weight(52.5) == pytest.approx(0.5) and geometry_weight(-70) == 0.0
    assert geometry_weight(float("nan")) == 1.0
    frown = measure(moved(neutral, [48, 54], dy=0.08))
    hesitant = fer(angry=0.32, sad=0.27, neutral=0.22, fearful=0.19)
    assert decide(hesitant, frown)[0] == "sad"  # facing the camera: the frown decides
    assert decide(hesitant, frown, geometry_weight(57))[0] == UNSURE  # near profile: fer does
    label, confidence, _ = decide(fer(sad=0.7, neutral=0.3), measure(neutral), 0.0)
    assert (label, confidence) == ("sad", pytest.approx(0.7))  # no cue needed past 60 degrees
