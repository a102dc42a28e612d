from __future__ import annotations

import numpy as np
import pytest

from likeness.faces import dlib_model_dir
from likeness.faces.dlib_backend import DESCRIPTOR_MODEL
from likeness.faces.dlib_resnet import ModelFormatError, load_resnet, single_threaded_blas


def _dlib_shape(face):
    import dlib

    b = face.box
    rect = dlib.rectangle(
        int(round(b.x0)), int(round(b.y0)), int(round(b.x1)) - 1, int(round(b.y1)) - 1
    )
    return dlib.full_object_detection(
        rect, [dlib.point(int(round(x)), int(round(y))) for x, y in face.landmarks]
    )


def test_numpy_resnet_gives_dlibs_own_descriptors(images, analyses):
    """Same chips through dlib's network and through ours, on every sample face (the six
    faces of the group photo too): equal to float rounding."""
    import dlib

    path = dlib_model_dir() / DESCRIPTOR_MODEL
    theirs = dlib.face_recognition_model_v1(str(path))
    ours = load_resnet(path)
    checked = 0
    for name in ["obama.jpg", "obama3.jpg", "biden.jpg", "Tom_Hanks_54745.png", "t1.jpg"]:
        rgb = images[name]
        shapes = [_dlib_shape(face) for face in analyses[name]]
        chips = [np.asarray(dlib.get_face_chip(rgb, s, 150, 0.25)) for s in shapes]
        expected = np.array([theirs.compute_face_descriptor(rgb, s, 0) for s in shapes])
        got = ours.describe(chips)
        assert got.shape == expected.shape == (len(shapes), 128)
        assert np.abs(got - expected).max() < 1e-5, name
        # and so are the stored descriptors, which come from the same chips
        stored = np.array([f.embedding for f in analyses[name]])
        assert np.abs(stored - expected).max() < 1e-5, name
        checked += len(shapes)
    assert checked == 10


def test_chip_of_the_wrong_size_is_refused():
    net = load_resnet(dlib_model_dir() / DESCRIPTOR_MODEL)
    with pytest.raises(ValueError, match="150x150x3"):
        net.describe([np.zeros((100, 100, 3), np.uint8)])


def test_a_file_that_is_not_the_network_is_refused(tmp_path):
    bad = tmp_path / "not_a_net.dat"
    bad.write_bytes(b"\x01\x01\x01\x0dloss_metric_3" + bytes(64))
    with pytest.raises(ModelFormatError, match="loss_metric_2"):
        load_resnet(bad)
    truncated = tmp_path / "truncated.dat"
    truncated.write_bytes((dlib_model_dir() / DESCRIPTOR_MODEL).read_bytes()[:100_000])
    with pytest.raises(ModelFormatError):
        load_resnet(truncated)


def test_blas_runs_single_threaded_inside_and_as_before_after():
    from likeness.faces.dlib_resnet import _openblas

    lib = _openblas()
    if lib is None:
        pytest.skip("numpy is not built on its bundled OpenBLAS here")
    before = lib.scipy_openblas_get_num_threads64_()
    with single_threaded_blas():
        assert lib.scipy_openblas_get_num_threads64_() == 1
    assert lib.scipy_openblas_get_num_threads64_() == before
