"""Skin texture and the plastic-skin index: does this face's skin carry the fine texture that
its own sharpness says it should, or has it been smoothed (retouching, beauty filters, the
clean "AI skin" of diffusion models)?

Why the measure is built this way (docs/metrics.md has the numbers):

1. **Face size.** The face is resampled (area-averaged) so the eye centres are 64 px apart,
   so every face is measured at the same scale in millimetres of skin. Faces smaller than that
   are not judged (`None`): upsampling adds no texture, and a real 40 px face reads as smooth
   as a retouched one.
2. **Where.** Skin is the landmark hull of cheeks, chin and jaw minus eyes, brows, nose and
   mouth, eroded so no window touches them. Texture is the energy of a band-pass (difference of
   Gaussians, sigma 0.5 and 2 px at that scale: features of 1-6 mm) of the luma.
3. **Smoothing, not sparseness.** The skin's reading is the *median* of the band energy over
   5x5 windows: a bilateral filter or surface blur leaves a few steps and flat patches between
   them, which the mean would still count as texture.
4. **Sharpness, light and contrast.** The skin is compared with the same band's energy on the
   eyes, brows and mouth of the same face: a blurred, small, dim or low-contrast photo loses
   both alike, while smoothing takes the skin's and leaves the features'.
5. **Noise.** Grain adds band energy to skin and features alike. The energy that white noise of
   the image's `grain` sigma has after the same resampling and filter is subtracted from both
   (at most three quarters of the skin's, so an estimate off by a little cannot explode the
   index), so noise added to smoothed skin does not pass for texture.

`skin_texture` is then sqrt(skin energy / feature energy), a unitless amplitude ratio, and the
plastic index is log2(`TYPICAL_SKIN_TEXTURE` / texture): 0 is the median of unretouched sample
photos, +1 half their texture. `plastic_relative` compares with the references the same way.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable

import numpy as np

from likeness.metrics.quality import NOISE_FIELD_MIN_SCALE, grain, grey, white_noise

SKIN_EYE_DISTANCE = 64
"""Pixels between the eye centres at which skin is measured; smaller faces are not judged."""
SKIN_BAND = (0.5, 2.0)
"""Gaussian sigmas (px at that scale) whose difference is the texture band."""
SKIN_WINDOW = 5
SKIN_NOISE_FLOOR = 0.25
"""Noise subtraction keeps at least this share of the skin's band energy."""
SKIN_MIN_PIXELS = 300
TYPICAL_SKIN_TEXTURE = 0.30
"""Median `skin_texture` of the unretouched sample photos whose faces are judged (obama,
obama2, obama3, biden and both partial faces: 0.25-0.35); plastic 0 by definition."""
PLASTIC_MAX_INDEX = 6.0
_SKIN_PARTS = (range(36, 42), range(42, 48), range(48, 60), range(17, 22), range(22, 27),
               range(27, 36))  # fmt: skip
_FEATURE_PARTS = ((*range(36, 42), *range(17, 22)), (*range(42, 48), *range(22, 27)),
                  tuple(range(48, 60)))  # fmt: skip


def skin_texture(
    rgb: np.ndarray, landmarks: np.ndarray, noise: float | None = None
) -> float | None:
    """The skin's band-pass texture amplitude relative to the eyes', brows' and mouth's in the
    same face (unitless; higher = more texture), or None when the eyes are less than 64 px
    apart or too little skin is visible to judge.

    Args:
        rgb: HxWx3 uint8 RGB or HxW grey image.
        landmarks: the face's 68 iBUG landmarks (x, y) in that image's pixels.
        noise (*optional*): the image's `grain` sigma; measured when not given.

    Example:
        >>> plastic_index(skin_texture(img, face.points))  # doctest: +SKIP
        0.12
    """
    pts = np.asarray(landmarks, dtype=np.float64).reshape(-1, 2)
    if pts.shape[0] != 68:
        raise ValueError(f"skin_texture needs 68 landmarks, got {pts.shape[0]}")
    eye_distance = float(np.linalg.norm(pts[42:48].mean(axis=0) - pts[36:42].mean(axis=0)))
    if eye_distance < SKIN_EYE_DISTANCE:
        return None
    g = grey(rgb)
    scale = SKIN_EYE_DISTANCE / eye_distance
    # 1. The face at 64 px between the eyes, area-averaged.
    framed = _face_at_scale(g, pts, scale, margin=0.3 * eye_distance)
    if framed is None:
        return None
    face, points = framed
    skin, features = _skin_and_features(points, face.shape)
    if np.count_nonzero(skin) < SKIN_MIN_PIXELS or np.count_nonzero(features) < 100:
        return None
    # 2. Band energy: typical 5x5 window on the skin, mean on the features.
    energy = _band(face) ** 2
    skin_energy = float(np.median(_window_mean(energy)[skin]))
    feature_energy = float(energy[features].mean())
    # 3. Less what the image's noise puts into the same band.
    sigma = grain(g) if noise is None else noise
    noise_mean, noise_window = _noise_band_energy(round(scale, 3))
    skin_energy = max(skin_energy - sigma**2 * noise_window, SKIN_NOISE_FLOOR * skin_energy)
    feature_energy = max(feature_energy - sigma**2 * noise_mean, 0.1 * feature_energy)
    if feature_energy <= 0:
        return None
    return float(np.sqrt(max(skin_energy, 1e-12) / feature_energy))


def plastic_index(texture: float) -> float:
    """Absolute plastic-skin index: log2(`TYPICAL_SKIN_TEXTURE` / texture). 0 is the median of
    unretouched photos, +1 half their skin texture (smoother, more "plastic"), negative more
    textured. Capped at +-6."""
    return _log_ratio(TYPICAL_SKIN_TEXTURE, texture)


def plastic_relative(texture: float, reference_texture: float) -> float:
    """The same index against the references' texture instead of typical photos': 0 is as
    textured as the references, +1 half as textured."""
    return _log_ratio(reference_texture, texture)


def _log_ratio(reference: float, texture: float) -> float:
    if reference <= 0:
        return float("nan")
    value = float(np.log2(reference / max(texture, 1e-6)))
    return float(np.clip(value, -PLASTIC_MAX_INDEX, PLASTIC_MAX_INDEX))


def _face_at_scale(
    g: np.ndarray, pts: np.ndarray, scale: float, margin: float
) -> tuple[np.ndarray, np.ndarray] | None:
    """The landmarks' bounding box plus `margin`, resampled by `scale` (<= 1, area-averaged),
    and the landmarks in that frame; None when the box is (almost) outside the image."""
    import cv2

    x0, y0 = np.maximum(np.floor(pts.min(axis=0) - margin), 0).astype(int)
    x1, y1 = np.ceil(pts.max(axis=0) + margin).astype(int)
    crop = g[y0 : min(y1, g.shape[0]), x0 : min(x1, g.shape[1])]
    if min(crop.shape[:2]) < 16:
        return None
    size = (max(8, round(crop.shape[1] * scale)), max(8, round(crop.shape[0] * scale)))
    face = cv2.resize(crop, size, interpolation=cv2.INTER_AREA)
    factor = np.array([size[0] / crop.shape[1], size[1] / crop.shape[0]])
    return face, (pts - [x0, y0] + 0.5) * factor - 0.5


def _skin_and_features(points: np.ndarray, shape: tuple[int, ...]) -> tuple[np.ndarray, ...]:
    """Boolean masks (height, width): skin (hull of jaw and brows minus eyes, brows, nose and
    mouth, eroded past the texture window) and features (eyes with brows, mouth, dilated)."""
    import cv2

    skin = np.zeros(shape[:2], np.uint8)
    _fill(skin, points, range(27), 1)
    for part in _SKIN_PARTS:
        _fill(skin, points, part, 0)
    margin = round(0.1 * SKIN_EYE_DISTANCE) | 1
    skin = cv2.erode(skin, np.ones((margin + SKIN_WINDOW,) * 2, np.uint8))
    features = np.zeros(shape[:2], np.uint8)
    for part in _FEATURE_PARTS:
        _fill(features, points, part, 1)
    features = cv2.dilate(features, np.ones((margin, margin), np.uint8))
    return skin > 0, features > 0


def _fill(mask: np.ndarray, points: np.ndarray, part: Iterable[int], value: int) -> None:
    """Fill the convex hull of the landmarks `part` with `value`."""
    import cv2

    polygon = cv2.convexHull(np.round(points[list(part)]).astype(np.int32))
    cv2.fillConvexPoly(mask, polygon, value)


def _band(g: np.ndarray) -> np.ndarray:
    import cv2

    fine, coarse = SKIN_BAND
    return cv2.GaussianBlur(g, (0, 0), fine) - cv2.GaussianBlur(g, (0, 0), coarse)


def _window_mean(energy: np.ndarray) -> np.ndarray:
    import cv2

    return cv2.boxFilter(energy, -1, (SKIN_WINDOW, SKIN_WINDOW))


@functools.lru_cache(maxsize=512)
def _noise_band_energy(scale: float) -> tuple[float, float]:
    """(mean, median over 5x5 windows) of the band energy of unit white noise area-resampled
    by `scale`: what noise of sigma 1 adds to the features' and the skin's reading."""
    import cv2

    if scale < NOISE_FIELD_MIN_SCALE:  # area-averaging white noise scales its energy by scale²
        mean, window = _noise_band_energy(NOISE_FIELD_MIN_SCALE)
        ratio = (scale / NOISE_FIELD_MIN_SCALE) ** 2
        return mean * ratio, window * ratio
    field = white_noise(scale)
    size = (round(field.shape[1] * scale), round(field.shape[0] * scale))
    energy = (_band(cv2.resize(field, size, interpolation=cv2.INTER_AREA)) ** 2)[6:-6, 6:-6]
    return float(energy.mean()), float(np.median(_window_mean(energy)))
