"""Image-quality measures, each on a documented scale (see docs/metrics.md).

All functions take numpy arrays (HxWx3 uint8 RGB, or HxW grey) and, where the face matters,
the subject's 68 landmarks or box, so they can be tested on controlled degradations.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from likeness.faces.types import Box

SHARPNESS_FACE_WIDTH = 256
SHARPNESS_NOISE_FLOOR = 0.05
"""The noise correction removes at most this share of the raw Laplacian variance, so a reading
stays positive and a blurrier copy of the same image always reads lower."""
CLIP_LOW, CLIP_HIGH = 2, 253


def grey(rgb: np.ndarray) -> np.ndarray:
    """ITU-R 601 luma as float32 in [0, 255]; a grey float32 array is returned as is, so a
    caller measuring several things converts once."""
    import cv2

    if rgb.ndim == 2:
        return rgb if rgb.dtype == np.float32 else rgb.astype(np.float32)
    return cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2GRAY).astype(np.float32)


def sharpness(rgb: np.ndarray, box: Box | None = None, noise: float | None = None) -> float:
    """Variance of the 4-neighbour Laplacian of the luma, less the part that noise explains
    (grey levels squared; higher is sharper).

    With a face box, measured on the box resampled to 256 px wide, so faces of any
    resolution compare; without one, on the whole image resampled to a 512 px long side.
    Noise adds its own Laplacian variance, which would let a blurred but grainy image read
    sharper than the clean original: the variance that white noise of the image's `grain`
    sigma (`noise`, measured when not given) has after the same resampling is subtracted,
    keeping at least 5% of the raw value. So a blurrier copy reads lower at any noise level,
    and noise up to sigma 10 does not lift a blurred copy to the original's reading.
    """
    g = grey(rgb)
    whole = g
    if box is not None:
        x0, y0 = max(0, int(box.x0)), max(0, int(box.y0))
        x1, y1 = min(g.shape[1], int(box.x1)), min(g.shape[0], int(box.y1))
        g = g[y0:y1, x0:x1]
        target = SHARPNESS_FACE_WIDTH / max(1, g.shape[1])
    else:
        target = 512 / max(g.shape)
    if g.shape[0] < 3 or g.shape[1] < 3:
        return 0.0
    raw = float(_laplacian(_resample(g, target)).var())
    sigma = grain(whole) if noise is None else noise
    predicted = sigma**2 * _noise_laplacian_variance(round(target, 3))
    return max(raw - predicted, SHARPNESS_NOISE_FLOOR * raw)


def _resample(g: np.ndarray, factor: float) -> np.ndarray:
    import cv2

    size = (max(3, round(g.shape[1] * factor)), max(3, round(g.shape[0] * factor)))
    interp = cv2.INTER_AREA if factor < 1 else cv2.INTER_CUBIC
    return cv2.resize(g, size, interpolation=interp)


def _laplacian(g: np.ndarray) -> np.ndarray:
    import cv2

    return cv2.Laplacian(g, cv2.CV_32F, ksize=1)[1:-1, 1:-1]


@functools.lru_cache(maxsize=512)
def _noise_laplacian_variance(factor: float) -> float:
    """Laplacian variance of unit white noise resampled by `factor` as `sharpness` does
    (a fixed-seed field, so the correction is the same on every run)."""
    if factor < NOISE_FIELD_MIN_SCALE:  # area-averaging white noise scales its variance by f²
        return (
            _noise_laplacian_variance(NOISE_FIELD_MIN_SCALE) * (factor / NOISE_FIELD_MIN_SCALE) ** 2
        )
    return float(_laplacian(_resample(white_noise(factor), factor))[2:-2, 2:-2].var())


NOISE_FIELD_MIN_SCALE = 0.16
"""Below this resampling factor a noise field would need over 1024 px a side to measure what
the resampling leaves of it; the value at this factor is scaled instead."""


def white_noise(factor: float) -> np.ndarray:
    """A fixed-seed field of unit Gaussian noise that still spans about 400 px after being
    resampled by `factor` (64-1024 px a side)."""
    side = int(np.clip(np.ceil(400 / factor), 64, 1024))
    return np.random.default_rng(0).standard_normal((side, side), dtype=np.float32)


GRAIN_TILE = 256
GRAIN_MAX_TILES = 9
GRAIN_SMOOTH = 1.0
GRAIN_FLAT_SHARE = 40
"""Percent of the well-exposed pixels, the flattest, whose response is averaged."""
GRAIN_EXPOSURE = (24, 231)
"""Pixels whose smoothed luma is outside this range are not averaged: noise of sigma up to
about 7 grey levels (10 per RGB channel) is clipped there, which would read as less noise."""


def grain(rgb: np.ndarray) -> float:
    """Noise sigma in grey levels (0-255 scale), Immerkaer's estimator on flat regions.

    The image is convolved with the 3x3 kernel [[1,-2,1],[-2,4,-2],[1,-2,1]] (zero on any
    locally linear signal); sigma = sqrt(pi/2) / 6 * mean |response|. Only the flattest 40% of
    the well-exposed pixels are averaged: flatness is the gradient and exposure the luma of a
    smoothed copy, which added noise moves little, so much the same pixels are averaged
    whatever noise is added and the estimate rises with every increment of it. Edges, texture
    and JPEG block seams count less than they would; pixels near black or white (where noise
    is clipped, which would read as less noise) not at all. Adding Gaussian noise of sigma s
    per RGB channel to a clean photo reads about 0.67 s in the luma (s = 10 reads 6.7-7.7 on
    the labelled set).

    Images over about 0.6 MP are measured on a 3x3 grid of 256 px tiles at native resolution
    (grain is a property of pixels, so it must not be resampled; the tiles keep the cost flat).
    """
    g = grey(rgb)
    big = g.shape[0] * g.shape[1] > GRAIN_MAX_TILES * GRAIN_TILE**2
    if big and min(g.shape[:2]) >= 2 * GRAIN_TILE:
        g = _tiles(g, GRAIN_TILE, int(GRAIN_MAX_TILES**0.5))
    return _immerkaer(g)


def _tiles(g: np.ndarray, tile: int, per_side: int) -> np.ndarray:
    """An evenly spread grid of native-resolution tiles, stitched with a 4 px gap of edge
    pixels so that no filter sees a seam between two tiles as an edge."""
    ys = np.linspace(0, g.shape[0] - tile, per_side).astype(int)
    xs = np.linspace(0, g.shape[1] - tile, per_side).astype(int)
    rows = []
    for y in ys:
        row = [np.pad(g[y : y + tile, x : x + tile], 4, mode="edge") for x in xs]
        rows.append(np.concatenate(row, axis=1))
    return np.ascontiguousarray(np.concatenate(rows, axis=0))


def _immerkaer(g: np.ndarray) -> float:
    import cv2

    if g.shape[0] < 8 or g.shape[1] < 8:
        return 0.0
    kernel = np.array([[1, -2, 1], [-2, 4, -2], [1, -2, 1]], dtype=np.float32)
    response = np.abs(cv2.filter2D(g, cv2.CV_32F, kernel)[2:-2, 2:-2])
    smooth = cv2.GaussianBlur(g, (0, 0), GRAIN_SMOOTH)
    gx, gy = cv2.Sobel(smooth, cv2.CV_32F, 1, 0), cv2.Sobel(smooth, cv2.CV_32F, 0, 1)
    magnitude = cv2.magnitude(gx, gy)[2:-2, 2:-2]
    smooth = smooth[2:-2, 2:-2]
    exposed = (smooth > GRAIN_EXPOSURE[0]) & (smooth < GRAIN_EXPOSURE[1])
    if np.count_nonzero(exposed) < 200:  # a dark or blown image: measure what there is
        exposed = np.ones_like(exposed)
    flatness = float(np.percentile(magnitude[exposed][::5], GRAIN_FLAT_SHARE))
    mask = exposed & (magnitude <= flatness)
    if np.count_nonzero(mask) < 100:
        mask = exposed
    mean = cv2.mean(response, mask=mask.view(np.uint8))[0]
    return float(np.sqrt(np.pi / 2) / 6.0 * mean)


def clipping(rgb: np.ndarray, box: Box | None = None) -> float:
    """Percent of pixels whose luma is crushed (<= 2) or blown (>= 253), inside the face box
    when one is given (a white studio background is not a fault), else in the whole image."""
    g = grey(rgb)
    if box is not None:
        x0, y0 = max(0, int(box.x0)), max(0, int(box.y0))
        x1, y1 = min(g.shape[1], int(box.x1)), min(g.shape[0], int(box.y1))
        if x1 > x0 and y1 > y0:
            g = g[y0:y1, x0:x1]
    return float(100.0 * np.mean((g <= CLIP_LOW) | (g >= CLIP_HIGH)))


BRISQUE_MIN_SIDE = 16
"""Below this many pixels on the short side (after resampling) BRISQUE has no statistics."""


def brisque(rgb: np.ndarray) -> float | None:
    """BRISQUE (0 best .. ~100 worst) with the SVM shipped in the `brisque` package, on the
    luma resampled to a 512 px long side. None when the image is too small or too flat to
    measure (a uniform image has no local statistics)."""
    import cv2

    try:
        from brisque import BRISQUE
    except ImportError as exc:
        raise RuntimeError(
            "BRISQUE needs the `brisque` package; run `pip install brisque`"
        ) from exc
    g = grey(rgb)
    factor = min(1.0, 512 / max(g.shape))
    if factor < 1:
        g = cv2.resize(g, None, fx=factor, fy=factor, interpolation=cv2.INTER_AREA)
    if min(g.shape[:2]) < BRISQUE_MIN_SIDE:
        return None
    g = g.astype(np.float64) / 255.0
    model = BRISQUE(url=False)
    half = cv2.resize(g, None, fx=0.5, fy=0.5, interpolation=cv2.INTER_CUBIC)
    with np.errstate(invalid="ignore", divide="ignore"):  # flat images: NaN, checked below
        features = [
            *model.calculate_brisque_features(g, kernel_size=7, sigma=7 / 6),
            *model.calculate_brisque_features(half, kernel_size=7, sigma=7 / 6),
        ]
    # brisque 0.2 returns some features as 1-element arrays; flatten them to floats.
    flat = np.array([float(np.asarray(v, dtype=np.float64).reshape(-1)[0]) for v in features])
    if not np.isfinite(flat).all():
        return None
    score = float(model.calculate_image_quality_score(flat))
    return score if np.isfinite(score) else None


@dataclass(frozen=True)
class QualityRaw:
    """Per-image quality numbers that do not depend on the reference set. `skin_texture` is
    `likeness.metrics.skin.skin_texture` (None without a 68-landmark face or when the face is
    too small to judge); the plastic index is derived from it."""

    sharpness: float
    grain: float
    skin_texture: float | None
    clipping: float
    face_px: float | None
    brisque: float | None = None
