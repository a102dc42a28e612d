from __future__ import annotations

import numpy as np
from metrics_samples import rgb
from PIL import Image

from likeness.metrics import analyze_image
from likeness.metrics.dedup import FaceItem, phash_distance, same_face_groups


def _item(key: str, img: np.ndarray, quick) -> FaceItem:
    analysis = analyze_image(img, quick)
    return FaceItem(key, analysis.face.embedding if analysis.face else None, analysis.phash)


def test_groups_same_shot_copies_but_not_different_photos_of_one_person(quick):
    obama = rgb("obama.jpg")
    smaller = np.asarray(Image.fromarray(obama).resize((455, 568), Image.Resampling.LANCZOS))
    brighter = np.clip(obama.astype(int) + 12, 0, 255).astype(np.uint8)
    items = [
        _item("obama", obama, quick),
        _item("obama-small", smaller, quick),
        _item("obama-bright", brighter, quick),
        _item("obama2", rgb("obama2.jpg"), quick),
        _item("obama3", rgb("obama3.jpg"), quick),
        _item("biden", rgb("biden.jpg"), quick),
        FaceItem("no-face", None, "0" * 16),
    ]
    assert same_face_groups(items) == [["obama", "obama-small", "obama-bright"]]


def test_pixels_alone_do_not_group_different_people():
    a = FaceItem("a", np.zeros(128), "ffff0000ffff0000")
    b = FaceItem("b", np.full(128, 0.1), "ffff0000ffff0000")  # distance 1.13
    assert same_face_groups([a, b]) == []
    assert phash_distance("ffff0000ffff0000", "ffff0000ffff0001") == 1


def test_face_items_from_a_scoring_run(run):
    from likeness.metrics.dedup import face_items

    items = face_items(run.analyses)
    assert len(items) == len(run.analyses)
    # The sample photos are all different shots: nothing groups.
    assert same_face_groups(items) == []
    assert sum(i.embedding is None for i in items) == 0


def test_embeddings_of_two_backends_are_compared_only_within_each():
    dlib_a = FaceItem("dlib-a", np.zeros(128), "ffff0000ffff0000")
    dlib_b = FaceItem("dlib-b", np.full(128, 0.001), "ffff0000ffff0000")
    insight_a = FaceItem("insight-a", np.zeros(512), "ffff0000ffff0000")
    insight_b = FaceItem("insight-b", np.full(512, 0.001), "ffff0000ffff0000")
    groups = same_face_groups([dlib_a, insight_a, dlib_b, insight_b])
    assert groups == [["dlib-a", "dlib-b"], ["insight-a", "insight-b"]]
