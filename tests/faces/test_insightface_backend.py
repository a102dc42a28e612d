"""The InsightFace backend on onnxruntime, run on tiny ONNX models with the real I/O shapes."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from likeness.data import FACES
from likeness.faces import FaceModelMissing, make_analyzer
from likeness.faces.insightface_backend import (
    ARCFACE_TEMPLATE,
    LICENCE_NOTE,
    InsightFaceAnalyzer,
    align_face,
    decode_scrfd,
    detector_size,
    find_models,
    letterbox,
    similarity_transform,
)

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")


def load(name: str) -> np.ndarray:
    return np.asarray(Image.open(FACES / name).convert("RGB"))


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    from likeness.faces.tiny_insightface import save_tiny_insightface

    return save_tiny_insightface(tmp_path_factory.mktemp("buffalo_tiny"))


@pytest.fixture(scope="module")
def tiny(tiny_folder):
    return InsightFaceAnalyzer(tiny_folder)


def test_missing_folder_or_models_are_named(tmp_path):
    with pytest.raises(FaceModelMissing, match="not a folder"):
        find_models(tmp_path / "nope")
    with pytest.raises(FaceModelMissing, match="no .onnx files"):
        find_models(tmp_path)
    (tmp_path / "det_10g.onnx").write_bytes(b"")
    (tmp_path / "w600k_r50.onnx").write_bytes(b"")
    assert [p.name for p in find_models(tmp_path)] == ["det_10g.onnx", "w600k_r50.onnx"]
    assert "non-commercial" in LICENCE_NOTE


def test_check_names_missing_files_and_load_names_broken_ones(tmp_path):
    analyzer = make_analyzer(tmp_path)
    with pytest.raises(FaceModelMissing, match="no .onnx files"):
        analyzer.check()
    (tmp_path / "det_10g.onnx").write_bytes(b"not onnx")
    (tmp_path / "w600k_r50.onnx").write_bytes(b"not onnx")
    assert analyzer.check()[0].name == "det_10g.onnx"  # check() does not load
    with pytest.raises(FaceModelMissing, match="could not be loaded"):
        analyzer.load()


def _outputs(size: int = 640) -> list[np.ndarray]:
    return [
        np.zeros(((size // stride) ** 2 * 2, width), np.float32)
        for width in (1, 4, 10)  # scores, box distances, keypoint offsets ...
        for stride in (8, 16, 32)  # ... for each stride
    ]


def test_scrfd_decoding_places_one_face_box_and_keypoints():
    size, stride = 640, 32
    outputs = _outputs(size)
    # One confident anchor at stride 32, cell (x=5, y=3), first anchor: centre (160, 96).
    cell = (3 * (size // stride) + 5) * 2
    outputs[2][cell] = 0.9
    outputs[5][cell] = [1, 1, 1, 1]  # one stride each side -> 64 px box
    outputs[8][cell] = [-0.5, -0.5, 0.5, -0.5, 0, 0, -0.4, 0.5, 0.4, 0.5]
    boxes, scores, kps = decode_scrfd(outputs, size, scale=0.5, threshold=0.5, nms_iou=0.4)
    assert boxes.shape == (1, 4) and scores.tolist() == pytest.approx([0.9])
    assert boxes[0].tolist() == pytest.approx([256, 128, 384, 256])  # halved scale: doubled
    assert kps[0, 2].tolist() == pytest.approx([320, 192])  # nose at the centre


def test_scrfd_decoding_second_anchor_other_strides_and_nms():
    size = 640
    outputs = _outputs(size)
    # Stride 8, cell (x=10, y=20), second anchor: centre (80, 160); a box 2 strides each side.
    cell = (20 * (size // 8) + 10) * 2 + 1
    outputs[0][cell] = 0.8
    outputs[3][cell] = [2, 2, 2, 2]
    # Stride 16, cell (x=5, y=10), first anchor: the same centre, a slightly larger box:
    # overlapping the first one, so NMS keeps only the stronger.
    cell16 = (10 * (size // 16) + 5) * 2
    outputs[1][cell16] = 0.7
    outputs[4][cell16] = [1.1, 1.1, 1.1, 1.1]
    # Stride 32, far away: kept.
    cell32 = (15 * (size // 32) + 15) * 2
    outputs[2][cell32] = 0.6
    outputs[5][cell32] = [1, 1, 1, 1]
    boxes, scores, _ = decode_scrfd(outputs, size, scale=1.0, threshold=0.5, nms_iou=0.4)
    assert scores.tolist() == pytest.approx([0.8, 0.6])
    assert boxes[0].tolist() == pytest.approx([64, 144, 96, 176])
    assert boxes[1].tolist() == pytest.approx([448, 448, 512, 512])
    with pytest.raises(FaceModelMissing, match="2 anchors per cell"):
        decode_scrfd(_outputs(320), size, 1.0, 0.5, 0.4)


def test_similarity_transform_recovers_a_known_rotation_scale_and_shift():
    angle, scale, shift = np.radians(17.0), 1.7, np.array([12.5, -40.0])
    rot = scale * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    src = ARCFACE_TEMPLATE.astype(np.float64)
    dst = src @ rot.T + shift
    matrix = similarity_transform(src, dst)
    assert matrix[:, :2] == pytest.approx(rot, abs=1e-9)
    assert matrix[:, 2] == pytest.approx(shift, abs=1e-9)


def test_similarity_transform_matches_scikit_image_on_noisy_points():
    from skimage.transform import SimilarityTransform

    rng = np.random.default_rng(3)
    src = ARCFACE_TEMPLATE * 2.3 + rng.normal(0, 4, (5, 2)) + 200
    reference = SimilarityTransform.from_estimate(src, ARCFACE_TEMPLATE)
    assert similarity_transform(src, ARCFACE_TEMPLATE) == pytest.approx(
        reference.params[:2], rel=1e-6, abs=1e-5
    )


def test_alignment_puts_the_keypoints_on_the_arcface_template():
    # A 300 px image with five bright dots where a face's keypoints would be, 2x the template
    # size, rotated by 10 degrees and shifted: aligned, the dots sit on the template.
    import cv2

    angle = np.radians(10.0)
    rot = 2.0 * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    points = ARCFACE_TEMPLATE @ rot.T + np.array([70.0, 40.0])
    image = np.zeros((300, 300, 3), np.uint8)
    for x, y in points:
        cv2.circle(image, (round(x), round(y)), 3, (255, 255, 255), -1)
    chip = align_face(image, points)
    assert chip.shape == (112, 112, 3)
    for x, y in ARCFACE_TEMPLATE:
        assert chip[round(y), round(x)].min() > 200
    assert chip.mean() < 30


def test_letterbox_scales_into_the_top_left_corner():
    rgb = np.full((100, 200, 3), 255, np.uint8)
    blob, scale = letterbox(rgb, 640)
    assert blob.shape == (1, 3, 640, 640) and scale == pytest.approx(3.2)
    assert blob[0, :, :320, :].min() == pytest.approx((255 - 127.5) / 128)
    assert blob[0, :, 320:, :].max() == pytest.approx(-127.5 / 128)


def test_tiny_models_have_the_real_io_shapes(tiny):
    det, rec = tiny.load()
    assert det.get_inputs()[0].shape == [1, 3, 640, 640] and detector_size(det, 320) == 640
    shapes = [o.shape for o in det.get_outputs()]
    assert [s[1] for s in shapes] == [1, 1, 1, 4, 4, 4, 10, 10, 10]
    assert rec.get_inputs()[0].shape[1:] == [3, 112, 112]
    assert rec.get_outputs()[0].shape[1:] == [512]
    assert "CPUExecutionProvider" in tiny.providers


def test_analyze_a_real_photo_end_to_end(tiny):
    rgb = load("obama.jpg")
    (face,) = tiny.analyze(rgb)
    assert face.score == pytest.approx(0.993, abs=0.003)
    # The constructed face: centred in the letterboxed canvas, 55% of its side.
    side = max(rgb.shape[:2])
    assert face.box.center == pytest.approx((side / 2, side / 2), abs=2)
    assert face.box.width == pytest.approx(0.55 * side, rel=0.01)
    assert len(face.landmarks) == 5 and len(face.descriptor) == 512
    assert np.linalg.norm(face.embedding) == pytest.approx(1.0)
    assert abs(face.pose.yaw) < 10  # keypoints laid out like the template: frontal


def test_the_recogniser_embeds_the_aligned_face(tiny):
    rgb = load("obama.jpg")
    (face,) = tiny.analyze(rgb)
    _, rec = tiny.load()
    chip = align_face(rgb, face.points).astype(np.float32)
    direct = rec.run(None, {"input.1": ((chip - 127.5) / 127.5).transpose(2, 0, 1)[None]})[0][0]
    raw = tiny.raw_embedding(rgb, face.points)
    assert raw == pytest.approx(direct, abs=1e-5)
    assert face.embedding == pytest.approx(raw / np.linalg.norm(raw), abs=1e-6)
    (other,) = tiny.analyze(load("biden.jpg"))
    assert np.linalg.norm(other.embedding - face.embedding) > 0.1


def test_models_with_the_wrong_io_are_refused(tiny_folder, tmp_path):
    import shutil

    shutil.copy(tiny_folder / "det_10g.onnx", tmp_path / "det_10g.onnx")
    shutil.copy(tiny_folder / "det_10g.onnx", tmp_path / "w600k_r50.onnx")
    with pytest.raises(FaceModelMissing, match="ArcFace model takes Nx3x112x112"):
        InsightFaceAnalyzer(tmp_path).load()
