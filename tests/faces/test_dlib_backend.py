from __future__ import annotations

import numpy as np
import pytest

from likeness.faces import (
    FACE_CUT_OFF,
    FACE_TOO_SMALL,
    MULTIPLE_FACES,
    NO_FACE,
    DlibAnalyzer,
    Face,
    FaceAnalyzer,
    face_flags,
    select_subject,
)


def test_dlib_analyzer_satisfies_the_protocol(analyzer):
    assert isinstance(analyzer, FaceAnalyzer)
    assert analyzer.match_threshold == 0.6


def test_every_single_portrait_has_exactly_one_face(analyses):
    for name in ["obama.jpg", "obama2.jpg", "obama3.jpg", "biden.jpg", "Tom_Hanks_54745.png"]:
        faces = analyses[name]
        assert len(faces) == 1, name
        face = faces[0]
        assert len(face.landmarks) == 68
        assert len(face.descriptor) == 128
        assert face.score >= DlibAnalyzer().threshold


def test_mission_patch_is_not_a_face(analyzer, images, analyses):
    faces = analyses["astronaut"]
    assert len(faces) == 1
    # The patch sits on the suit, low in the frame; the face is near the top.
    assert faces[0].box.center[1] < 200
    # The raw HOG detector does propose the patch; verification is what drops it.
    import dlib

    rects, scores, _ = dlib.get_frontal_face_detector().run(images["astronaut"], 1, 0.0)
    patch = [r for r, s in zip(rects, scores, strict=True) if r.top() > 300]
    assert patch, "the raw detector no longer proposes the patch; the test lost its point"
    from likeness.faces.types import Box

    r = patch[0]
    assert analyzer.verify(images["astronaut"], Box(r.left(), r.top(), r.right(), r.bottom())) < (
        analyzer.threshold
    )


def test_group_photo_has_six_faces_and_the_multiple_faces_flag(images, analyses):
    faces = analyses["t1.jpg"]
    assert len(faces) == 6
    height, width = images["t1.jpg"].shape[:2]
    subject = select_subject(faces, width, height)
    assert MULTIPLE_FACES in face_flags(faces, subject, width, height)
    # Six different people: every pair of descriptors is beyond dlib's same-person distance.
    emb = np.array([f.embedding for f in faces])
    dist = np.linalg.norm(emb[:, None] - emb[None], axis=-1)
    assert dist[np.triu_indices(6, 1)].min() > 0.6


def test_subject_is_the_largest_face_then_the_most_central(images, analyses):
    faces = analyses["t1.jpg"]
    height, width = images["t1.jpg"].shape[:2]
    subject = faces[select_subject(faces, width, height)]
    # The largest box in the group photo is the man in the grey shirt, left of centre.
    assert subject.box.width == max(f.box.width for f in faces)
    # Two equal boxes: the central one wins, wherever it sits in the list.
    a, b = faces[0], faces[1]
    same = [Face(b.box, f.score, f.landmarks, f.descriptor, f.pose) for f in (a, b)]
    moved = Face(
        type(b.box)(width / 2 - 50, height / 2 - 50, width / 2 + 50, height / 2 + 50),
        a.score,
        a.landmarks,
        a.descriptor,
        a.pose,
    )
    corner = Face(type(b.box)(0, 0, 100, 100), b.score, b.landmarks, b.descriptor, b.pose)
    assert select_subject([corner, moved], width, height) == 1
    assert select_subject([moved, corner], width, height) == 0
    assert select_subject(same[:0], width, height) is None


def test_flags_for_cut_off_small_and_missing_faces(images, analyses):
    for name in ["obama_partial_face.jpg", "obama_partial_face2.jpg"]:
        height, width = images[name].shape[:2]
        faces = analyses[name]
        assert FACE_CUT_OFF in face_flags(
            faces, select_subject(faces, width, height), width, height
        )
    height, width = images["obama.jpg"].shape[:2]
    faces = analyses["obama.jpg"]
    assert face_flags(faces, 0, width, height) == ()
    height, width = images["Tom_Hanks_54745.png"].shape[:2]
    assert FACE_TOO_SMALL in face_flags(analyses["Tom_Hanks_54745.png"], 0, width, height)
    assert face_flags([], None, 100, 100) == (NO_FACE,)


def test_blank_image_has_no_face(analyzer):
    assert analyzer.analyze(np.full((300, 400, 3), 128, dtype=np.uint8)) == []


def test_rejects_arrays_that_are_not_rgb(analyzer):
    with pytest.raises(ValueError, match="uint8 RGB"):
        analyzer.analyze(np.zeros((10, 10), dtype=np.uint8))


def test_descriptors_at_full_resolution_match_dlib_same_person_range(analyses):
    ref = analyses["obama.jpg"][0].embedding
    for name in ["obama2.jpg", "obama3.jpg", "obama_partial_face.jpg", "obama_partial_face2.jpg"]:
        assert np.linalg.norm(analyses[name][0].embedding - ref) < 0.45, name
    for name in ["biden.jpg", "Tom_Hanks_54745.png", "astronaut"]:
        assert np.linalg.norm(analyses[name][0].embedding - ref) > 0.7, name


def test_face_round_trips_through_its_dict(analyses):
    face = analyses["obama2.jpg"][0]
    again = Face.from_dict(face.to_dict())
    assert again.box == type(face.box)(*face.box.as_list())
    assert np.allclose(again.embedding, face.embedding)
    assert abs(again.pose.yaw - face.pose.yaw) < 0.01


def test_check_names_a_missing_model_without_loading(tmp_path):
    import pytest

    from likeness.faces import DlibAnalyzer, FaceModelMissing

    assert DlibAnalyzer().check().is_dir()
    with pytest.raises(FaceModelMissing, match="shape_predictor_68_face_landmarks.dat"):
        DlibAnalyzer(model_dir=tmp_path).check()
    analyzer = DlibAnalyzer(model_dir=tmp_path)
    with pytest.raises(FaceModelMissing):
        analyzer.load()


def test_saved_detector_is_dlibs_own_byte_for_byte(tmp_path):
    import dlib

    from likeness.faces.dlib_backend import DETECTOR_FILE, frontal_face_detector

    dlib.get_frontal_face_detector().save(str(tmp_path / "own.svm"))
    assert DETECTOR_FILE.read_bytes() == (tmp_path / "own.svm").read_bytes()
    frontal_face_detector().save(str(tmp_path / "loaded.svm"))
    assert (tmp_path / "loaded.svm").read_bytes() == DETECTOR_FILE.read_bytes()
