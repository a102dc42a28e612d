"""Controlled degradations of real photos move grain and sharpness the right way on every
face of the labelled set (labelled.py), and the mild ones do not change the identity verdict.

The claims: grain rises strictly with added noise (sigma 0, 2, 5, 10 per RGB channel) at any
blur; sharpness falls strictly with blur (radius 0, 1, 2, 4 px) at any noise; and noise up to
sigma 10 does not lift a blurred face to the unblurred one's sharpness."""

from __future__ import annotations

import numpy as np
import pytest
from labelled import BLUR_RADII, JPEG_QUALITIES, NOISE_SIGMAS, blurred, jpeg, noisy
from metrics_samples import rgb

from likeness.metrics import analyze_image, calibrate, identify
from likeness.metrics.quality import clipping, grain, sharpness


@pytest.fixture(scope="module")
def reference(quick):
    ref = analyze_image(rgb("obama.jpg"), quick)
    return ref, calibrate([ref.face.embedding], ["obama.jpg"])


def test_grain_rises_strictly_with_added_noise_on_every_face(labelled_faces):
    """On every face (small ones and JPEG re-encodes, which carry compression noise of their
    own, included) and at every blur radius, each increment of noise reads higher."""
    for face in labelled_faces:
        for base in _bases(face):
            for radius in BLUR_RADII:
                image = blurred(base, radius)
                values = [grain(noisy(image, s, seed=s)) for s in NOISE_SIGMAS]
                assert all(a < b for a, b in zip(values, values[1:], strict=False)), (
                    face.name, radius, values,
                )  # fmt: skip
                # In grey levels: independent RGB noise of sigma s is about 0.67 s in the luma.
                assert values[-1] == pytest.approx(0.67 * 10, rel=0.2), (face.name, values)


def test_sharpness_falls_strictly_with_blur_on_every_face(labelled_faces):
    """Blurring any face reads lower, also when the face carries noise (before the blur)."""
    for face in labelled_faces:
        for base in _bases(face):
            for sigma in (0, 5, 10):
                image = noisy(base, sigma, seed=sigma)
                values = [sharpness(blurred(image, r), face.box) for r in BLUR_RADII]
                assert all(a > b for a, b in zip(values, values[1:], strict=False)), (
                    face.name, sigma, values,
                )  # fmt: skip


def test_noise_does_not_make_a_blurred_face_read_sharper_than_the_original(labelled_faces):
    for face in labelled_faces:
        for base in _bases(face):
            original = sharpness(base, face.box)
            for radius in BLUR_RADII[1:]:
                for sigma in NOISE_SIGMAS[1:]:
                    image = noisy(blurred(base, radius), sigma, seed=sigma)
                    assert sharpness(image, face.box) < original, (face.name, radius, sigma)


def _bases(face):
    """The face as it is and re-encoded as JPEG at each quality."""
    return [face.rgb, *(jpeg(face.rgb, q) for q in JPEG_QUALITIES)]


def test_mild_grain_and_blur_keep_the_identity_verdict(quick, reference):
    _, calibration = reference
    for name, should_pass in [("obama2.jpg", True), ("obama3.jpg", True), ("biden.jpg", False)]:
        img = rgb(name)
        for variant in (img, noisy(img, 2), blurred(img, 1)):
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
