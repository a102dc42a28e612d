"""The plastic-skin index on the labelled set (labelled.py): real photos of any person, scale,
light and JPEG quality read as natural; every smoothing ladder reads strictly higher at each
step and is flagged at its strongest; added grain does not pass for skin texture."""

from __future__ import annotations

import numpy as np
import pytest
from labelled import (
    BLUR_RADII,
    NOISE_SIGMAS,
    REAL_VARIANTS,
    SMOOTHING_LADDERS,
    blurred,
    noisy,
    real_variant,
    smoothing_ladder,
)

from likeness.metrics import Instruments, Thresholds, score_images
from likeness.metrics.analysis import ANALYZER_NAME
from likeness.metrics.skin import (
    SKIN_EYE_DISTANCE,
    plastic_index,
    plastic_relative,
    skin_texture,
)

LIMIT = Thresholds().max_plastic
# Eyes at least 64 px apart: the faces whose skin texture is resolved, so they are judged.
# The others (Tom Hanks, the astronaut, t1.jpg's six, 33-50 px) read None.
JUDGED = {
    "biden.jpg", "obama.jpg", "obama2.jpg", "obama3.jpg", "obama_partial_face.jpg",
    "obama_partial_face2.jpg",
}  # fmt: skip


def plastic(img: np.ndarray, points: np.ndarray) -> float | None:
    texture = skin_texture(img, points)
    return None if texture is None else plastic_index(texture)


@pytest.fixture(scope="module")
def judged(labelled_faces):
    return [f for f in labelled_faces if f.name in JUDGED]


def test_faces_are_judged_when_their_eyes_are_64_px_apart(labelled_faces):
    assert len(labelled_faces) == 14
    for face in labelled_faces:
        assert (face.eye_distance >= SKIN_EYE_DISTANCE) == (face.name in JUDGED), face.name
        assert (plastic(face.rgb, face.points) is not None) == (face.name in JUDGED), face.name


def test_no_real_variant_of_any_face_reads_plastic(labelled_faces):
    readings = {}
    for face in labelled_faces:
        for variant in REAL_VARIANTS:
            value = plastic(*real_variant(face, variant))
            if face.name in JUDGED and variant != "half":  # half size: 44-60 px between eyes
                assert value is not None, (face.name, variant)
            readings[face.name, variant] = value
    judged = {k: v for k, v in readings.items() if v is not None}
    assert len(judged) == 6 * 8
    assert max(judged.values()) < LIMIT - 0.15, max(judged.items(), key=lambda kv: kv[1])
    # The absolute scale: real photos sit around 0.
    assert abs(np.median(list(judged.values()))) < 0.15


def test_a_grainy_or_blurred_real_face_does_not_read_plastic(judged):
    """Grain adds texture and blur takes it from the features too: neither reads as
    smoothing."""
    for face in judged:
        for image in [
            *(noisy(face.rgb, sigma, seed=sigma) for sigma in NOISE_SIGMAS[1:]),
            *(blurred(face.rgb, radius) for radius in BLUR_RADII[1:]),
        ]:
            value = plastic(image, face.points)
            assert value is not None and value < LIMIT - 0.15, (face.name, value)


@pytest.mark.parametrize("ladder", sorted(SMOOTHING_LADDERS))
def test_plastic_rises_strictly_along_each_smoothing_ladder(judged, ladder):
    for face in judged:
        values = [plastic(face.rgb, face.points)]
        values += [plastic(step, face.points) for step in smoothing_ladder(face, ladder)]
        assert all(a < b for a, b in zip(values, values[1:], strict=False)), (face.name, values)
        assert values[0] < LIMIT < values[-1], (face.name, values)


def test_grain_does_not_pass_for_skin_texture(judged):
    for face in judged:
        smoothed = SMOOTHING_LADDERS["ai_resample"](face, 4)
        for sigma in (2, 5, 10):
            value = plastic(noisy(smoothed, sigma, seed=sigma), face.points)
            assert value is not None and value > LIMIT, (face.name, sigma, value)


def test_relative_reading_compares_with_the_references():
    assert plastic_relative(0.2, 0.2) == 0.0
    assert plastic_relative(0.1, 0.2) == pytest.approx(1.0)
    assert plastic_relative(0.4, 0.2) == pytest.approx(-1.0)
    assert plastic_index(0.0) == 6.0  # capped


@pytest.fixture(scope="module")
def cached(run):
    """A cache holding the scoring run's analyses, so rescoring the photos computes nothing."""
    from likeness.store.analyses import put_analysis
    from likeness.store.db import connect

    conn = connect(":memory:")
    version = Instruments().version
    for sha, analysis in run.analyses.items():
        put_analysis(conn, sha, ANALYZER_NAME, version, analysis.to_dict())
    return conn


def test_no_real_photo_is_flagged_as_reference_or_candidate(photo_dir, cached):
    photos = sorted(photo_dir.iterdir())
    runs = [score_images(photos, photos, conn=cached, workers=1)]  # every photo a reference
    runs.append(score_images(photos, [], conn=cached, workers=1))  # no references at all
    for photo in photos:  # each against all the others
        others = [p for p in photos if p != photo]
        runs.append(score_images([photo], others, conn=cached, workers=1))
    assert all(r.analyzed == 0 for r in runs)
    scores = [s for r in runs for s in (*r.references.scores, *r.scores)]
    assert len(scores) == 9 + 9 + 9 + 9 * 9
    for score in scores:
        assert "plastic_skin" not in score.flags, (score.path, score.plastic)
    judged = {s.path.rsplit("/", 1)[-1] for s in scores if s.plastic is not None}
    assert judged == JUDGED
    with_refs = [s for s in runs[0].scores if s.plastic is not None]
    assert all(s.plastic_relative is not None for s in with_refs)
    assert all(s.plastic_relative is None for s in runs[1].scores)


def test_an_upscaled_face_reads_as_the_original(judged):
    """A 4x upscale (as a generation's upscale pass leaves it) is resampled back to the same
    scale: the reading does not depend on the face's size in pixels."""
    import cv2

    face = next(f for f in judged if f.name == "obama2.jpg")
    big = cv2.resize(face.rgb, None, fx=4, fy=4, interpolation=cv2.INTER_CUBIC)
    original = plastic(face.rgb, face.points)
    assert plastic(big, (face.points + 0.5) * 4 - 0.5) == pytest.approx(original, abs=0.1)
