from __future__ import annotations

import numpy as np
import pytest

from likeness.faces import FaceModelMissing, make_analyzer
from likeness.faces.insightface_backend import LICENCE_NOTE, decode_scrfd, find_models


def test_missing_folder_or_models_are_named(tmp_path):
    with pytest.raises(FaceModelMissing, match="not a folder"):
        find_models(tmp_path / "nope")
    with pytest.raises(FaceModelMissing, match="no .onnx files"):
        find_models(tmp_path)
    (tmp_path / "det_10g.onnx").write_bytes(b"")
    (tmp_path / "w600k_r50.onnx").write_bytes(b"")
    assert [p.name for p in find_models(tmp_path)] == ["det_10g.onnx", "w600k_r50.onnx"]
    assert "non-commercial" in LICENCE_NOTE


def test_analyzer_from_a_folder_reports_missing_onnxruntime_clearly(tmp_path):
    pytest.importorskip("dlib")
    analyzer = make_analyzer(tmp_path)
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        with pytest.raises(FaceModelMissing, match="pip install onnxruntime"):
            analyzer.load()
    else:
        with pytest.raises(FaceModelMissing):
            analyzer.load()


def test_scrfd_decoding_places_one_face_box_and_keypoints():
    size, stride = 640, 32
    outputs = []
    for s in (8, 16, 32):
        n = (size // s) ** 2 * 2
        outputs.append(np.zeros((n, 1), np.float32))
    for s in (8, 16, 32):
        outputs.append(np.zeros(((size // s) ** 2 * 2, 4), np.float32))
    for s in (8, 16, 32):
        outputs.append(np.zeros(((size // s) ** 2 * 2, 10), np.float32))
    # One confident anchor at stride 32, cell (x=5, y=3), first anchor: centre (160, 96).
    cell = (3 * (size // stride) + 5) * 2
    outputs[2][cell] = 0.9
    outputs[5][cell] = [1, 1, 1, 1]  # one stride each side -> 64 px box
    outputs[8][cell] = [-0.5, -0.5, 0.5, -0.5, 0, 0, -0.4, 0.5, 0.4, 0.5]
    boxes, scores, kps = decode_scrfd(outputs, size, scale=0.5, threshold=0.5, nms_iou=0.4)
    assert boxes.shape == (1, 4) and scores.tolist() == pytest.approx([0.9])
    assert boxes[0].tolist() == pytest.approx([256, 128, 384, 256])  # halved scale: doubled
    assert kps[0, 2].tolist() == pytest.approx([320, 192])  # nose at the centre
