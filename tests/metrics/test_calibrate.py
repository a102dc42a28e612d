"""Calibrating the identity bar: distributions, same-shot copies, outliers and the proposed bar,
on the real sample faces (Obama as the character, everyone else as other people) and on
embeddings built to overlap."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from metrics_samples import OBAMAS
from PIL import Image, ImageOps

from likeness.metrics.identity import distance_for_match, match_score
from likeness.metrics.same_shot import (
    FacePrint,
    face_print,
    face_prints,
    same_shot_pairs,
    shot_inliers,
)
from likeness.metrics.separation import (
    MIN_SHOTS,
    OtherPhoto,
    SourcePhoto,
    error_rates,
    measure_separation,
    propose_bar,
    shot_groups,
)

NEGATIVES = ["biden.jpg", "Tom_Hanks_54745.png", "t1.jpg", "astronaut.png"]
COPIES = {  # same-shot copies of the sample photos, and why each is one
    "obama_partial_face.jpg": "obama.jpg",  # a crop of it
    "obama_partial_face2.jpg": "obama.jpg",  # a crop that cuts the face
}


def source(run, by_name, name: str) -> SourcePhoto:
    sha = by_name[name].sha256
    analysis = run.analyses[sha]
    return SourcePhoto(sha, name, tuple(f.embedding for f in analysis.faces), analysis.subject)


def other(run, by_name, name: str) -> OtherPhoto:
    sha = by_name[name].sha256
    return OtherPhoto(sha, name, tuple(f.embedding for f in run.analyses[sha].faces))


@pytest.fixture(scope="module")
def prints(run, by_name, photo_dir) -> dict[str, FacePrint]:
    boxes = {
        by_name[n].sha256: (photo_dir / n, run.analyses[by_name[n].sha256].face.box)
        for n in [*OBAMAS, "biden.jpg"]
    }
    return face_prints(boxes, backend="test")


@pytest.fixture(scope="module")
def same_shot(prints) -> list[tuple[str, str]]:
    return same_shot_pairs(prints)


def names_of(pairs, by_name) -> set[frozenset[str]]:
    lookup = {s.sha256: n for n, s in by_name.items()}
    return {frozenset((lookup[a], lookup[b])) for a, b in pairs}


# -- units --------------------------------------------------------------------------------------
@pytest.mark.parametrize("typical", [0.15, 0.26, 0.35, 0.5])
@pytest.mark.parametrize("threshold", [0.6, 1.1])
def test_distance_for_match_inverts_the_match_score(typical, threshold):
    for distance in np.linspace(0.0, threshold + 0.29, 40):
        match = match_score(float(distance), typical, threshold)
        assert distance_for_match(match, typical, threshold) == pytest.approx(distance, abs=1e-9)
    assert distance_for_match(5.0, typical, threshold) == pytest.approx(threshold)


def test_error_rates_count_a_face_at_the_bar_as_passing():
    assert error_rates(0.5, [0.3, 0.5, 0.55], [0.5, 0.8]) == (pytest.approx(1 / 3), 0.5)
    assert error_rates(0.5, [], []) == (None, None)


def test_shot_groups_are_transitive():
    groups = shot_groups(["a", "b", "c", "d"], [("c", "b"), ("b", "a"), ("x", "d")])
    assert groups == {"a": "a", "b": "a", "c": "a", "d": "d"}


# -- the proposal rule --------------------------------------------------------------------------
def test_separated_samples_put_the_bar_midway():
    assert propose_bar([0.3, 0.4], [0.7, 0.9, 0.8], 0.6) == (0.55, "midpoint", "samples", False)


def test_without_other_people_the_far_side_is_the_published_threshold():
    assert propose_bar([0.3, 0.4], [], 0.6) == (0.5, "midpoint", "published", False)
    # one or two faces say too little: still the published value
    assert propose_bar([0.3, 0.4], [0.45, 0.9], 0.6)[2] == "published"


def test_a_bar_past_the_threshold_is_held_at_it():
    assert propose_bar([0.5, 0.55], [0.9, 0.95, 1.0], 0.6) == (0.6, "midpoint", "samples", True)
    assert propose_bar([0.5, 0.7], [], 0.6) == (0.6, "threshold", "published", False)


def test_overlapping_samples_take_the_cut_with_fewest_errors():
    same = [0.30, 0.35, 0.40, 0.52]
    different = [0.45, 0.70, 0.75, 0.80]
    distance, rule, _, _ = propose_bar(same, different, 0.6)
    assert rule == "fewest_errors"
    # cutting below 0.45 rejects one pair of four and accepts nothing; above 0.52 the reverse
    assert 0.40 < distance < 0.45
    assert error_rates(distance, same, different) == (0.25, 0.0)


# -- same shot, on real pixels ------------------------------------------------------------------
def test_crops_of_one_photo_are_the_same_shot_and_other_photos_are_not(by_name, same_shot):
    found = names_of(same_shot, by_name)
    assert found == {
        frozenset(("obama.jpg", "obama_partial_face.jpg")),
        frozenset(("obama.jpg", "obama_partial_face2.jpg")),
        frozenset(("obama_partial_face.jpg", "obama_partial_face2.jpg")),
    }


def test_mirrored_and_resized_copies_are_the_same_shot(photo_dir, quick, prints, by_name):
    from likeness.metrics import analyze_image

    original = Image.open(photo_dir / "obama3.jpg").convert("RGB")
    copies = {
        "mirrored": ImageOps.mirror(original),
        "half size, mirrored": ImageOps.mirror(original).resize(
            (original.width // 2, original.height // 2)
        ),
    }
    base = prints[by_name["obama3.jpg"].sha256]
    for label, img in copies.items():
        rgb = np.asarray(img)
        face = analyze_image(rgb, quick).face
        copy = face_print(np.asarray(img.convert("L")), face.box)
        assert shot_inliers(copy, base) >= 40, label
        assert shot_inliers(copy, prints[by_name["obama2.jpg"].sha256]) < 10, label


def test_prints_are_cached_and_a_damaged_row_is_computed_again(run, by_name, photo_dir):
    from likeness.metrics.same_shot import ANALYZER_NAME
    from likeness.store.db import connect

    conn = connect(":memory:")
    sha = by_name["obama2.jpg"].sha256
    faces = {sha: (photo_dir / "obama2.jpg", run.analyses[sha].face.box)}
    first = face_prints(faces, backend="b", conn=conn)
    stored = conn.execute("SELECT created_at FROM analyses WHERE analyzer = ?", (ANALYZER_NAME,))
    assert len(stored.fetchall()) == 1
    again = face_prints({sha: (Path("/nonexistent.jpg"), faces[sha][1])}, backend="b", conn=conn)
    assert np.array_equal(again[sha].descriptors, first[sha].descriptors)  # read, not decoded
    conn.execute("UPDATE analyses SET result = '{\"points\": 1}'")
    assert face_prints(faces, backend="b", conn=conn)[sha].descriptors.shape[1] == 32


# -- distributions on the sample faces ----------------------------------------------------------
def test_obama_against_other_people_is_well_separated_with_a_bar_between(run, by_name, same_shot):
    sources = [source(run, by_name, n) for n in OBAMAS]
    negatives = [other(run, by_name, n) for n in NEGATIVES]
    sep = measure_separation(sources, negatives, threshold=0.6, pass_match=5.0, same_shot=same_shot)
    # the three copies of one shot leave 3 shots and 7 pairs (4 of 10 pairs had a copy twice)
    assert sep.shots == 3 and len(sep.near_duplicates) == 3 and len(sep.same) == 7
    same, different = sep.same_distances, sep.different_distances
    assert min(same) > 0.3 and max(same) < 0.45  # measured 0.338-0.404
    assert len(different) == 9  # Biden, Hanks, the astronaut and the six faces of t1.jpg
    assert min(different) > 0.65 and max(different) < 0.95  # measured 0.711-0.911
    proposal = sep.proposal
    assert proposal is not None and proposal.rule == "midpoint"
    assert proposal.different_side == "samples"
    assert max(same) < proposal.bar.distance < min(different)
    assert proposal.bar.distance == pytest.approx((max(same) + min(different)) / 2, abs=0.005)
    assert proposal.bar.false_accept == 0.0 and proposal.bar.false_reject == 0.0
    # in match units, through the calibration `likeness score` uses
    assert proposal.bar.match == round(match_score(proposal.bar.distance, sep.typical, 0.6), 2)
    assert 5.0 < proposal.bar.match < 8.0
    assert sep.current.distance == 0.6 and sep.current.match == 5.0
    assert not sep.outliers and not sep.warnings
    data = sep.to_json()
    assert data["proposal"]["explanation"].startswith("midway between")
    assert data["different_person"]["photos"] == 4


def test_without_negatives_the_bar_comes_from_the_same_person_side(run, by_name, same_shot):
    sources = [source(run, by_name, n) for n in OBAMAS]
    sep = measure_separation(sources, threshold=0.6, pass_match=5.0, same_shot=same_shot)
    proposal = sep.proposal
    assert proposal.different_side == "published" and proposal.different_low == 0.6
    assert proposal.bar.distance == pytest.approx((max(sep.same_distances) + 0.6) / 2, abs=0.005)
    assert proposal.bar.false_accept is None and proposal.bar.false_reject == 0.0
    assert "published threshold" in proposal.explanation


def test_without_same_shot_pairs_the_copies_narrow_the_spread(run, by_name):
    sources = [source(run, by_name, n) for n in OBAMAS]
    sep = measure_separation(sources, threshold=0.6, pass_match=5.0)
    assert len(sep.same) == 10 and min(sep.same_distances) < 0.3  # a crop of obama.jpg: 0.21


def test_a_source_of_someone_else_is_named_and_left_out(run, by_name, same_shot):
    sources = [source(run, by_name, n) for n in [*OBAMAS, "biden.jpg"]]
    negatives = [other(run, by_name, n) for n in ["Tom_Hanks_54745.png", "t1.jpg"]]
    sep = measure_separation(sources, negatives, threshold=0.6, pass_match=5.0, same_shot=same_shot)
    assert [(o.name, o.kind) for o in sep.outliers] == [("biden.jpg", "someone_else")]
    assert all(by_name["biden.jpg"].sha256 not in (p.a, p.b) for p in sep.same)
    assert max(sep.same_distances) < 0.45
    assert any(w.code == "outlier" and "biden.jpg" in w.message for w in sep.warnings)
    assert sep.proposal is not None  # still proposed, from the other photos


def test_other_faces_in_a_group_photo_source_are_other_people(run, by_name, same_shot):
    sources = [source(run, by_name, n) for n in [*OBAMAS, "t1.jpg"]]
    sep = measure_separation(sources, threshold=0.6, pass_match=5.0, same_shot=same_shot)
    from_sources = [f for f in sep.different if f.origin == "source"]
    t1 = run.analyses[by_name["t1.jpg"].sha256]
    assert len(from_sources) == len(t1.faces) - 1 == 5
    assert {f.face for f in from_sources} == set(range(6)) - {t1.subject}
    assert all(f.distance > 0.6 for f in from_sources)
    assert [o.name for o in sep.outliers] == ["t1.jpg"]  # its subject is not Obama either


def test_too_few_shots_propose_nothing_and_say_the_minimum(run, by_name, same_shot):
    sources = [
        source(run, by_name, n) for n in ["obama.jpg", "obama_partial_face.jpg", "obama2.jpg"]
    ]
    sep = measure_separation(sources, threshold=0.6, pass_match=5.0, same_shot=same_shot)
    assert sep.shots == 2 and sep.proposal is None
    (warning,) = [w for w in sep.warnings if w.code == "too_few_sources"]
    assert f"at least {MIN_SHOTS}" in warning.message


def test_a_source_without_a_face_is_counted_and_named(run, by_name, same_shot):
    sources = [source(run, by_name, n) for n in OBAMAS]
    blank = SourcePhoto("f" * 64, "blank.png", (), None)
    sep = measure_separation([*sources, blank], threshold=0.6, pass_match=5.0, same_shot=same_shot)
    assert sep.sources == 5
    assert any(w.code == "no_face" and "blank.png" in w.message for w in sep.warnings)


# -- embeddings built for the edge cases --------------------------------------------------------
def _cloud(rng, centre: np.ndarray, radius: float, n: int) -> list[np.ndarray]:
    """n points at exactly `radius` from `centre`, in random directions."""
    out = []
    for _ in range(n):
        direction = rng.normal(size=centre.shape)
        out.append(centre + radius * direction / np.linalg.norm(direction))
    return out


def _scene(scale: float):
    """Six shots of one person about 0.28 apart, other people 0.58-0.92 from them, all times
    `scale` (so a backend with other units sees the same picture)."""
    rng = np.random.default_rng(7)
    centre = np.zeros(64)
    faces = _cloud(rng, centre, 0.2 * scale, 6)
    sources = [SourcePhoto(f"s{i}", f"s{i}.jpg", (f,), 0) for i, f in enumerate(faces)]
    negatives = [
        OtherPhoto(f"n{i}", f"n{i}.jpg", tuple(_cloud(rng, centre, r * scale, 1)))
        for i, r in enumerate([0.55, 0.7, 0.8, 0.9])
    ]
    return sources, negatives


def test_the_bar_is_in_the_backends_own_units():
    small = measure_separation(*_scene(1.0), threshold=0.6, pass_match=5.0)
    large = measure_separation(*_scene(1.1 / 0.6), threshold=1.1, pass_match=5.0)
    assert large.proposal.bar.distance == pytest.approx(
        small.proposal.bar.distance * 1.1 / 0.6, rel=0.01
    )
    assert large.proposal.bar.match == pytest.approx(small.proposal.bar.match, abs=0.02)
    assert large.current.distance == pytest.approx(1.1)


def test_overlapping_distributions_are_warned_of():
    sources, negatives = _scene(1.0)
    near = sources[0].faces[0] * 0.5  # another person between the character's photos
    negatives = [*negatives, OtherPhoto("close", "close.jpg", (near,))]
    sep = measure_separation(sources, negatives, threshold=0.6, pass_match=5.0)
    assert sep.proposal.rule == "fewest_errors"
    (warning,) = [w for w in sep.warnings if w.code == "overlap"]
    assert "close.jpg" in warning.message
    assert sep.proposal.bar.false_accept > 0 or sep.proposal.bar.false_reject > 0
