"""Controlled degradations of a real photo move each quality number the right way, and the
mild ones do not change the identity verdict."""

from __future__ import annotations

import numpy as np
import pytest
from metrics_samples import rgb
from PIL import Image, ImageFilter

from likeness.metrics import analyze_image, calibrate, identify
from likeness.metrics.quality import clipping, grain, plastic_index


@pytest.fixture(scope="module")
def reference(quick):
    ref = analyze_image(rgb("obama.jpg"), quick)
    return ref, calibrate([ref.face.embedding], ["obama.jpg"])


def _noisy(img: np.ndarray, sigma: float, seed: int = 7) -> np.ndarray:
    noise = np.random.default_rng(seed).normal(0.0, sigma, img.shape)
    return np.clip(img + noise, 0, 255).round().astype(np.uint8)


def _blurred(img: np.ndarray, radius: float) -> np.ndarray:
    return np.asarray(Image.fromarray(img).filter(ImageFilter.GaussianBlur(radius)))


def _smoothed_face(img: np.ndarray, box, strength: int) -> np.ndarray:
    """Edge-preserving (bilateral) smoothing of the face region, `strength` passes."""
    import cv2

    out = img.copy()
    pad = int(0.3 * box.width)
    x0, y0 = max(0, int(box.x0) - pad), max(0, int(box.y0) - pad)
    x1, y1 = min(img.shape[1], int(box.x1) + pad), min(img.shape[0], int(box.y1) + pad)
    region = np.ascontiguousarray(out[y0:y1, x0:x1])
    for _ in range(strength):
        region = cv2.bilateralFilter(region, 9, 30, 7)
    out[y0:y1, x0:x1] = region
    return out


def test_grain_rises_strictly_with_added_noise(quick):
    img = rgb("obama2.jpg")
    values = [analyze_image(img, quick).quality.grain]
    values += [analyze_image(_noisy(img, s), quick).quality.grain for s in (2, 5, 10)]
    assert all(a < b for a, b in zip(values, values[1:], strict=False)), values
    # In grey levels: independent RGB noise of sigma s is about 0.67 s in the luma.
    assert values[3] == pytest.approx(0.67 * 10, rel=0.25)


def test_sharpness_falls_strictly_with_blur(quick):
    img = rgb("obama2.jpg")
    values = [analyze_image(img, quick).quality.sharpness]
    values += [analyze_image(_blurred(img, r), quick).quality.sharpness for r in (1, 2, 4)]
    assert all(a > b for a, b in zip(values, values[1:], strict=False)), values


def test_plastic_rises_strictly_with_edge_preserving_smoothing(quick, reference):
    ref, _ = reference
    img = rgb("obama2.jpg")
    box = analyze_image(img, quick).face.box
    values = []
    for strength in (0, 1, 2, 4):
        analysis = analyze_image(_smoothed_face(img, box, strength) if strength else img, quick)
        values.append(plastic_index(analysis.quality.skin_texture, ref.quality.skin_texture))
    assert all(a < b for a, b in zip(values, values[1:], strict=False)), values
    assert values[-1] > 1.5  # heavy smoothing is flagged at the default threshold


def test_mild_grain_and_blur_keep_the_identity_verdict(quick, reference):
    _, calibration = reference
    for name, should_pass in [("obama2.jpg", True), ("obama3.jpg", True), ("biden.jpg", False)]:
        img = rgb(name)
        for variant in (img, _noisy(img, 2), _blurred(img, 1)):
            ident = identify(analyze_image(variant, quick).face.embedding, calibration)
            assert ident.passed is should_pass, (name, ident)


def test_grain_estimates_known_noise_on_a_flat_image():
    flat = np.full((200, 300, 3), 120, np.uint8)
    assert grain(flat) == pytest.approx(0.0, abs=1e-6)
    noisy = np.clip(120 + np.random.default_rng(1).normal(0, 6, (200, 300)), 0, 255)
    assert grain(np.repeat(noisy.round().astype(np.uint8)[..., None], 3, 2)) == pytest.approx(
        6, rel=0.1
    )


def test_clipping_counts_crushed_and_blown_pixels():
    img = np.full((10, 10, 3), 128, np.uint8)
    img[:2] = 255
    img[2:3] = 0
    assert clipping(img) == pytest.approx(30.0)


def test_grain_reads_the_same_on_tiled_and_narrow_large_images():
    rng = np.random.default_rng(3)
    for shape in [(200, 6000), (1500, 1500)]:  # too narrow to tile / tiled
        flat = np.clip(120 + rng.normal(0, 4, shape), 0, 255).round().astype(np.uint8)
        assert grain(np.repeat(flat[..., None], 3, 2)) == pytest.approx(4, rel=0.1), shape
