"""The labelled quality set: every face of the sample photos, real variants of it (negatives for
plastic skin) and controlled edits whose direction is known (smoothing ladders, noise and blur
ladders), generated deterministically here instead of stored as image files.

A face is the photo cropped to its landmarks' box plus 1.2 eye distances on each side, with its
68 landmarks as the scoring pipeline found them on the whole photo. Edits that do not move the
face keep the landmarks; mirrored and half-size copies map them exactly.

Labels:
- real: the photo itself, mirrored, re-encoded as JPEG at quality 95/75/50, half size, 30 grey
  levels brighter, 30% darker, contrast x1.3. None may read as plastic skin.
- smoothing ladders, four steps each, every step smoothing more than the last; sizes scale with
  the face (eye distance e). The plastic index must rise strictly along each one.
  - bilateral: 1-4 passes of a bilateral filter (colour sigma 25, space sigma 0.05 e) over the
    whole face (a beauty filter);
  - surface_blur: Photoshop-style surface blur (radius 0.03-0.12 e, threshold 12-25 levels);
  - frequency_separation: the low band (below 0.02 e) blurred by 0.02-0.06 e, the high band
    kept at 80, 60, 40, 20%;
  - ai_resample: the skin re-rendered from a copy with 40, 28, 20, 14 px between the eyes,
    then slightly resharpened (the smooth, clean skin of diffusion models);
  - ai_denoise: non-local-means denoising of strength 4, 7, 10, 14 and a slight resharpen.
  All but the bilateral filter are applied through a feathered skin mask that spares the eyes,
  brows and mouth, as a retoucher (or a diffusion model) leaves them crisp.
- noise ladder: Gaussian noise of sigma 0, 2, 5, 10 per RGB channel (grain must rise);
  blur ladder: Gaussian blur of radius 0, 1, 2, 4 px (sharpness must fall).
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np
from PIL import Image, ImageFilter

from likeness.faces import Box

SMOOTHING_STEPS = (1, 2, 3, 4)
NOISE_SIGMAS = (0, 2, 5, 10)
BLUR_RADII = (0, 1, 2, 4)
JPEG_QUALITIES = (95, 75, 50)
REAL_VARIANTS = (
    "original", "mirrored", "jpeg95", "jpeg75", "jpeg50", "half", "brighter", "darker", "contrast",
)  # fmt: skip
# Index of each 68-point landmark's mirror image (iBUG 300-W order).
MIRROR = (
    [*range(16, -1, -1), *range(26, 16, -1), 27, 28, 29, 30, 35, 34, 33, 32, 31]
    + [45, 44, 43, 42, 47, 46, 39, 38, 37, 36, 41, 40]
    + [54, 53, 52, 51, 50, 49, 48, 59, 58, 57, 56, 55, 64, 63, 62, 61, 60, 67, 66, 65]
)


@dataclass(frozen=True)
class LabelledFace:
    """One face of a sample photo, cropped around it, with its landmarks and detected box in
    the crop's pixels."""

    name: str
    rgb: np.ndarray
    points: np.ndarray
    box: Box

    @property
    def eye_distance(self) -> float:
        return eye_distance(self.points)


def eye_distance(points: np.ndarray) -> float:
    return float(np.linalg.norm(points[42:48].mean(axis=0) - points[36:42].mean(axis=0)))


def crop_face(name: str, rgb: np.ndarray, points: np.ndarray, box: Box) -> LabelledFace:
    """The face with 1.2 eye distances of surroundings (clipped to the photo)."""
    pad = 1.2 * eye_distance(points)
    x0, y0 = np.maximum(np.floor(points.min(axis=0) - pad), 0).astype(int)
    x1, y1 = np.ceil(points.max(axis=0) + pad).astype(int)
    crop = np.ascontiguousarray(rgb[y0:y1, x0:x1])
    moved = Box(box.x0 - x0, box.y0 - y0, box.x1 - x0, box.y1 - y0)
    return LabelledFace(name, crop, points - [x0, y0], moved)


# Real variants -------------------------------------------------------------------------------


def real_variant(face: LabelledFace, variant: str) -> tuple[np.ndarray, np.ndarray]:
    """(image, landmarks) of a real variant of `face` (one of `REAL_VARIANTS`)."""
    img, pts = face.rgb, face.points
    if variant == "original":
        return img, pts
    if variant == "mirrored":
        flipped = pts.copy()
        flipped[:, 0] = img.shape[1] - 1 - flipped[:, 0]
        return np.ascontiguousarray(img[:, ::-1]), flipped[MIRROR]
    if variant.startswith("jpeg"):
        return jpeg(img, int(variant[4:])), pts
    if variant == "half":
        half = cv2.resize(img, (img.shape[1] // 2, img.shape[0] // 2), interpolation=cv2.INTER_AREA)
        return half, (pts + 0.5) / 2 - 0.5
    gain, offset = {"brighter": (1.0, 30.0), "darker": (0.7, 0.0), "contrast": (1.3, -40.0)}[
        variant
    ]
    return _to_uint8(img.astype(np.float32) * gain + offset), pts


def jpeg(img: np.ndarray, quality: int) -> np.ndarray:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, "JPEG", quality=quality)
    buf.seek(0)
    return np.asarray(Image.open(buf).convert("RGB"))


def noisy(img: np.ndarray, sigma: float, seed: int = 7) -> np.ndarray:
    """Gaussian noise of `sigma` per RGB channel (a fixed seed: the set is deterministic)."""
    if sigma == 0:
        return img
    noise = np.random.default_rng(seed).normal(0.0, sigma, img.shape)
    return _to_uint8(img + noise)


def blurred(img: np.ndarray, radius: float) -> np.ndarray:
    if radius == 0:
        return img
    return np.asarray(Image.fromarray(img).filter(ImageFilter.GaussianBlur(radius)))


# Smoothing ladders ---------------------------------------------------------------------------


def bilateral(face: LabelledFace, step: int) -> np.ndarray:
    e = face.eye_distance
    ys, xs = _face_region(face)
    out = face.rgb.copy()
    region = np.ascontiguousarray(out[ys, xs])
    for _ in range(step):
        region = cv2.bilateralFilter(region, -1, 25, max(1.0, 0.05 * e))
    out[ys, xs] = region
    return out


def surface_blur(face: LabelledFace, step: int) -> np.ndarray:
    """Photoshop's surface blur: the mean of the pixels within `radius` weighted by
    max(0, 1 - |difference| / (2.5 threshold)), per channel (offsets sampled every
    radius/4 px to keep it fast)."""
    e = face.eye_distance
    radius = max(1, round(e * (0.03, 0.05, 0.08, 0.12)[step - 1]))
    threshold = (12, 16, 20, 25)[step - 1]
    ys, xs = _face_region(face)
    region = face.rgb[ys, xs].astype(np.float32)
    h, w = region.shape[:2]
    padded = np.pad(region, ((radius, radius), (radius, radius), (0, 0)), mode="reflect")
    total, weights = np.zeros_like(region), np.zeros_like(region)
    half = range(0, radius + 1, max(1, radius // 4))
    offsets = sorted({*half, *(-k for k in half)})  # always 0: every pixel has a weight
    for dy in offsets:
        for dx in offsets:
            if dx * dx + dy * dy > radius * radius:
                continue
            shifted = padded[radius + dy : radius + dy + h, radius + dx : radius + dx + w]
            weight = np.maximum(1 - np.abs(shifted - region) / (2.5 * threshold), 0)
            total += weight * shifted
            weights += weight
    smoothed = face.rgb.astype(np.float32)
    smoothed[ys, xs] = total / weights
    return _through_skin_mask(face, smoothed)


def frequency_separation(face: LabelledFace, step: int) -> np.ndarray:
    e = face.eye_distance
    img = face.rgb.astype(np.float32)
    low = cv2.GaussianBlur(img, (0, 0), max(0.8, 0.02 * e))
    high = img - low
    low = cv2.GaussianBlur(low, (0, 0), max(1.0, e * (0.02, 0.03, 0.045, 0.06)[step - 1]))
    return _through_skin_mask(face, low + (0.8, 0.6, 0.4, 0.2)[step - 1] * high)


def ai_resample(face: LabelledFace, step: int) -> np.ndarray:
    e = face.eye_distance
    img = face.rgb.astype(np.float32)
    factor = max(1.25, e / (40, 28, 20, 14)[step - 1])
    h, w = img.shape[:2]
    small = (max(1, round(w / factor)), max(1, round(h / factor)))
    up = cv2.resize(cv2.resize(img, small, interpolation=cv2.INTER_AREA), (w, h),
                    interpolation=cv2.INTER_CUBIC)  # fmt: skip
    return _through_skin_mask(face, _resharpened(up, e, 0.3))


def ai_denoise(face: LabelledFace, step: int) -> np.ndarray:
    e = face.eye_distance
    strength = (4, 7, 10, 14)[step - 1]
    ys, xs = _face_region(face)
    region = np.ascontiguousarray(face.rgb[ys, xs])
    clean = cv2.fastNlMeansDenoisingColored(region, None, strength, strength, 5, 11)
    smoothed = face.rgb.astype(np.float32)
    smoothed[ys, xs] = _resharpened(clean.astype(np.float32), e, 0.4)
    return _through_skin_mask(face, smoothed)


def smoothing_ladder(face: LabelledFace, ladder: str) -> list[np.ndarray]:
    """The four steps of `ladder` on `face` (bilateral passes are taken one after another)."""
    if ladder != "bilateral":
        return [SMOOTHING_LADDERS[ladder](face, step) for step in SMOOTHING_STEPS]
    steps, image = [], face
    for _ in SMOOTHING_STEPS:
        image = LabelledFace(face.name, bilateral(image, 1), face.points, face.box)
        steps.append(image.rgb)
    return steps


SMOOTHING_LADDERS: dict[str, Callable[[LabelledFace, int], np.ndarray]] = {
    "bilateral": bilateral,
    "surface_blur": surface_blur,
    "frequency_separation": frequency_separation,
    "ai_resample": ai_resample,
    "ai_denoise": ai_denoise,
}


def _face_region(face: LabelledFace) -> tuple[slice, slice]:
    """The landmarks' box plus 0.6 eye distances (where the edits work)."""
    pad = 0.6 * face.eye_distance
    (x0, y0), (x1, y1) = face.points.min(axis=0) - pad, face.points.max(axis=0) + pad
    height, width = face.rgb.shape[:2]
    return (slice(max(0, int(y0)), min(height, int(y1))),
            slice(max(0, int(x0)), min(width, int(x1))))  # fmt: skip


def skin_edit_mask(face: LabelledFace) -> np.ndarray:
    """Feathered (H, W, 1) float mask: jaw line up to a forehead half an eye distance above the
    brows, minus the eyes with their brows and the mouth (each widened by 0.1 e)."""
    e, pts = face.eye_distance, face.points
    mask = np.zeros(face.rgb.shape[:2], np.float32)
    forehead = pts[17:27] - [0.0, 0.5 * e]
    cv2.fillConvexPoly(mask, cv2.convexHull(np.r_[pts[:27], forehead].astype(np.int32)), 1.0)
    holes = np.zeros(face.rgb.shape[:2], np.uint8)
    for part in ([*range(36, 42), *range(17, 22)], [*range(42, 48), *range(22, 27)],
                 list(range(48, 60))):  # fmt: skip
        cv2.fillConvexPoly(holes, cv2.convexHull(pts[part].astype(np.int32)), 1)
    width = max(3, int(0.1 * e) | 1)
    mask[cv2.dilate(holes, np.ones((width, width), np.uint8)) > 0] = 0.0
    return cv2.GaussianBlur(mask, (0, 0), max(1.0, 0.04 * e))[..., None]


def _through_skin_mask(face: LabelledFace, edited: np.ndarray) -> np.ndarray:
    mask = skin_edit_mask(face)
    return _to_uint8(face.rgb * (1 - mask) + edited * mask)


def _resharpened(img: np.ndarray, e: float, amount: float) -> np.ndarray:
    return img + amount * (img - cv2.GaussianBlur(img, (0, 0), max(0.8, 0.01 * e)))


def _to_uint8(img: np.ndarray) -> np.ndarray:
    return np.clip(img, 0, 255).round().astype(np.uint8)
