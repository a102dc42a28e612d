from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from metrics_samples import OBAMAS, OTHERS

from likeness.metrics.identity import calibrate, identify, match_score


def test_every_obama_photo_matches_obama_and_passes(by_name):
    for name in OBAMAS:
        score = by_name[name]
        assert score.passed, (name, score.distance)
        assert score.match >= 5.0
        assert score.distance <= 0.6
    assert by_name["obama.jpg"].is_reference


def test_other_people_do_not_match(by_name):
    for name in OTHERS:
        score = by_name[name]
        assert score.faces == 1, name
        assert not score.passed, (name, score.distance)
        assert score.match < 5.0


def test_no_face_of_the_group_photo_matches(run, by_name):
    calibration = run.references.calibration
    analysis = run.analyses[by_name["t1.jpg"].sha256]
    assert len(analysis.faces) == 6
    for face in analysis.faces:
        ident = identify(face.embedding, calibration)
        assert not ident.passed and ident.match < 5.0


def test_match_score_anchors_and_monotonicity():
    assert match_score(0.0, 0.3, 0.6) == 10.0
    assert match_score(0.3, 0.3, 0.6) == pytest.approx(8.0)
    assert match_score(0.6, 0.3, 0.6) == pytest.approx(5.0)
    assert match_score(0.9, 0.3, 0.6) == pytest.approx(0.0)
    values = [match_score(d, 0.3, 0.6) for d in np.linspace(0, 1, 41)]
    assert all(a >= b for a, b in zip(values, values[1:], strict=False))


def test_leave_one_out_calibration_and_outlier_references(run, by_name):
    emb = {n: run.analyses[by_name[n].sha256].face.embedding for n in [*OBAMAS, "biden.jpg"]}
    cal = calibrate([emb[n] for n in OBAMAS], OBAMAS)
    assert len(cal.loo_distances) == 5
    assert 0.15 <= cal.typical <= 0.45
    assert cal.outliers == ()
    # A reference scored against its own set is left out of it.
    own = identify(emb["obama2.jpg"], cal, exclude_key="obama2.jpg")
    assert own.distance > 0.1 and own.passed
    # Someone else among the references is reported.
    mixed = calibrate([emb[n] for n in [*OBAMAS, "biden.jpg"]], [*OBAMAS, "biden.jpg"])
    assert mixed.outliers == ("biden.jpg",)
    with pytest.raises(ValueError, match="no reference faces"):
        calibrate([], [])


def test_references_are_scored_first_and_honestly(run):
    (ref,) = run.references.scores
    assert Path(ref.path).name == "obama.jpg"
    # A single reference cannot be left out of itself: it matches itself perfectly.
    assert ref.match == 10.0
    assert run.references.calibration.typical == pytest.approx(0.35)
