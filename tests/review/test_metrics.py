"""Reading analyzer results for display: flat scores, the face-analysis shape, derived match."""

from __future__ import annotations

import pytest

from likeness.review.metrics import MetricsIndex, extract, format_value
from likeness.store.analyses import put_analysis
from likeness.store.db import transaction


def face_result(descriptor: list[float], yaw: float, flags: list[str] | None = None) -> dict:
    """The shape the face analysis caches (faces + subject + labelled records + quality)."""
    return {
        "sha256": "ignored",
        "width": 640,
        "height": 480,
        "faces": [
            {"box": [5, 5, 20, 20], "score": 0.3, "descriptor": [9.0] * 4, "yaw": 0.0},
            {
                "box": [100, 80, 300, 280],
                "score": 1.2,
                "landmarks": [[1.0, 2.0]] * 68,
                "descriptor": descriptor,
                "yaw": yaw,
                "pitch": -3.0,
                "roll": 1.5,
            },
        ],
        "subject": 1,
        "flags": flags or [],
        "expression": {"label": "smiling", "probability": 0.91, "probabilities": {"sad": 0.01}},
        "body": {"label": "standing", "keypoints": [[0.1, 0.2, 0.9]] * 33, "reason": None},
        "quality": {"sharpness": 210.5, "grain": 2.25, "skin_texture": 0.4, "clipping": 0.01},
        "phash": "abcd",
    }


def test_flat_scores_are_read_as_they_are():
    m = extract({"match": 7.9, "angle": "front", "flags": ["face_cut_off"], "pass": True})
    assert m.number("match") == 7.9 and m.text("angle") == "front" and m.flags == ("face_cut_off",)
    assert m.box is None and m.embedding is None


def test_face_analysis_shape_gives_subject_numbers():
    m = extract(face_result([0.1, 0.2, 0.3, 0.4], yaw=31.0, flags=["multiple_faces"]))
    assert m.values["expression"] == "smiling" and m.values["expression_p"] == 0.91
    assert m.values["body_pose"] == "standing"
    assert (m.values["yaw"], m.values["pitch"], m.values["roll"]) == (31.0, -3.0, 1.5)
    assert m.values["grain"] == 2.25 and m.values["sharpness"] == 210.5
    assert m.values["faces"] == 2
    assert m.box == (100.0, 80.0, 300.0, 280.0)
    assert m.embedding == (0.1, 0.2, 0.3, 0.4)
    assert m.flags == ("multiple_faces",)
    assert not {"sha256", "phash", "width", "label", "probabilities"} & set(m.values)
    shown = dict(m.display())
    assert shown["yaw"] == "+31°" and shown["expression prob."] == "91%"


def test_match_is_derived_from_embeddings_against_the_sources(review_ws):
    pytest.importorskip("likeness.metrics.identity")
    from likeness.workspace import Workspace

    refs = review_ws.sources
    near, far, stored = review_ws.candidates[:3]
    with Workspace.open(review_ws.root) as ws, transaction(ws.db):
        ws.db.execute("DELETE FROM analyses")
        put_analysis(ws.db, refs[0], "likeness.image", "t", face_result([0, 0, 0, 0], 2.0))
        put_analysis(ws.db, refs[1], "likeness.image", "t", face_result([0.3, 0, 0, 0], 2.0))
        put_analysis(ws.db, near, "likeness.image", "t", face_result([0.05, 0.05, 0, 0], 40.0))
        put_analysis(ws.db, far, "likeness.image", "t", face_result([1.5, 0, 0, 0], -70.0))
        put_analysis(ws.db, stored, "likeness.image", "t", face_result([0, 0, 0, 0], 0.0))
        put_analysis(ws.db, stored, "likeness.score", "t", {"match": 1.25})
        index = MetricsIndex(distance_threshold=0.6)
        index.refresh(ws.db)
    m_near, m_far = index.get(near), index.get(far)
    assert m_near.values["nearest_reference"] == refs[0]
    assert m_near.values["pass"] is True and m_near.number("match") > 8
    assert m_far.values["pass"] is False and m_far.number("match") < 5
    assert m_near.values["angle"] == "half_left" and m_far.values["angle"] == "profile_right"
    # A reference is compared with the other references, never with itself.
    assert index.get(refs[0]).values["nearest_reference"] == refs[1]
    # What an analyzer stored wins over what is derived.
    assert index.get(stored).number("match") == 1.25
    assert "match" in index.numeric_keys()


def test_index_follows_new_and_replaced_results(review_ws):
    from likeness.workspace import Workspace

    sha = review_ws.candidates[0]
    with Workspace.open(review_ws.root) as ws:
        index = MetricsIndex()
        index.refresh(ws.db)
        before = index.get(sha).number("match")
        with transaction(ws.db):
            put_analysis(ws.db, sha, "score", "1", {"match": 9.75, "flags": ["grainy"]})
        index.refresh(ws.db)
        assert before != 9.75 and index.get(sha).number("match") == 9.75
        assert "grainy" in index.all_flags()
        with transaction(ws.db):
            ws.db.execute("DELETE FROM analyses WHERE image_sha = ?", (sha,))
        index.refresh(ws.db)
        assert index.get(sha).number("match") is None


def test_format_value():
    assert format_value("match", 7.04) == "7.0"
    assert format_value("pass", False) == "no"
    assert format_value("grain", 2.3456) == "2.35"
    assert format_value("expression", "sad") == "sad"


def test_damaged_face_records_read_as_blanks():
    for faces in (
        [{"descriptor": ["x", 1.0], "box": [0, 0, "a", 4]}],
        [{"descriptor": [True, 0.5]}],
        ["not a face"],
    ):
        m = extract({"faces": faces, "subject": 0, "flags": ["no_face", 3]})
        assert m.embedding is None and m.box is None
        assert m.flags == ("no_face",) and m.values["faces"] == len(faces)
