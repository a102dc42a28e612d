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


class _FakeSession:
    """Stands in for an onnxruntime session: fixed outputs, records its inputs."""

    def __init__(self, outputs):
        self.outputs = outputs
        self.inputs = []

    def get_inputs(self):
        return [type("Input", (), {"name": "input.1"})()]

    def run(self, _names, feeds):
        self.inputs.append(feeds["input.1"])
        return self.outputs


def test_analyze_aligns_five_points_and_normalises_the_embedding(tmp_path):
    from likeness.faces.insightface_backend import ARCFACE_TEMPLATE, InsightFaceAnalyzer

    size = 640
    outputs = [
        np.zeros(((size // stride) ** 2 * 2, width), np.float32)
        for width in (1, 4, 10)  # scores, box distances, keypoint offsets ...
        for stride in (8, 16, 32)  # ... for each stride
    ]
    cell = (3 * (size // 32) + 5) * 2  # centre (160, 96) at stride 32
    outputs[2][cell] = 0.95
    outputs[5][cell] = [1, 1, 1, 1]
    # Keypoints laid out like ArcFace's template around the centre.
    template = (ARCFACE_TEMPLATE - ARCFACE_TEMPLATE.mean(axis=0)) / 64.0
    outputs[8][cell] = template.reshape(-1)
    analyzer = InsightFaceAnalyzer(tmp_path)
    recogniser = _FakeSession([np.full((1, 512), 3.0, np.float32)])
    analyzer._sessions = (_FakeSession(outputs), recogniser)
    rgb = np.zeros((480, 640, 3), np.uint8)  # scale 1: detection pixels are image pixels
    (face,) = analyzer.analyze(rgb)
    assert face.score == pytest.approx(0.95)
    assert face.box.as_list() == pytest.approx([128, 64, 192, 128])
    assert len(face.landmarks) == 5 and len(face.descriptor) == 512
    assert np.linalg.norm(face.embedding) == pytest.approx(1.0)
    assert recogniser.inputs[0].shape == (1, 3, 112, 112)
    assert abs(face.pose.yaw) < 10  # a symmetric layout reads as frontal
