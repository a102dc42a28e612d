"""Image-quality measures, each on a documented scale (see docs/metrics.md).

All functions take numpy arrays (HxWx3 uint8 RGB, or HxW grey) and, where the face matters,
the subject's 68 landmarks or box, so they can be tested on controlled degradations.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from likeness.faces.types import Box

SHARPNESS_FACE_WIDTH = 256
SKIN_EYE_DISTANCE = 96
SKIN_BLUR_SIGMA = 1.5
DEFAULT_SKIN_TEXTURE = 4.0
"""Skin texture energy of the sample portraits (median of obama, obama2, obama3, biden: 4.1),
used as the reference when no reference faces are given."""
CLIP_LOW, CLIP_HIGH = 2, 253


def grey(rgb: np.ndarray) -> np.ndarray:
    """ITU-R 601 luma as float32 in [0, 255]; a grey float32 array is returned as is, so a
    caller measuring several things converts once."""
    import cv2

    if rgb.ndim == 2:
        return rgb if rgb.dtype == np.float32 else rgb.astype(np.float32)
    return cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2GRAY).astype(np.float32)


def sharpness(rgb: np.ndarray, box: Box | None = None) -> float:
    """Variance of the 4-neighbour Laplacian of the luma (grey levels squared; higher is
    sharper). With a face box, measured on the box resampled to 256 px wide, so faces of any
    resolution compare; without one, on the whole image resampled to a 512 px long side."""
    import cv2

    g = grey(rgb)
    if box is not None:
        x0, y0 = max(0, int(box.x0)), max(0, int(box.y0))
        x1, y1 = min(g.shape[1], int(box.x1)), min(g.shape[0], int(box.y1))
        g = g[y0:y1, x0:x1]
        target = SHARPNESS_FACE_WIDTH / max(1, g.shape[1])
    else:
        target = 512 / max(g.shape)
    if g.shape[0] < 3 or g.shape[1] < 3:
        return 0.0
    size = (max(3, round(g.shape[1] * target)), max(3, round(g.shape[0] * target)))
    interp = cv2.INTER_AREA if target < 1 else cv2.INTER_CUBIC
    g = cv2.resize(g, size, interpolation=interp)
    lap = cv2.Laplacian(g, cv2.CV_32F, ksize=1)[1:-1, 1:-1]
    return float(lap.var())


GRAIN_TILE = 256
GRAIN_MAX_TILES = 16


def grain(rgb: np.ndarray) -> float:
    """Noise sigma in grey levels (0-255 scale), Immerkaer's estimator on flat regions.

    The image is convolved with the 3x3 kernel [[1,-2,1],[-2,4,-2],[1,-2,1]] (zero on any
    locally linear signal); sigma = sqrt(pi/2) / 6 * mean |response|. Only pixels whose
    gradient, after a 1.5 px Gaussian blur, is below the median and that are not clipped are
    averaged, so edges and texture count less than they would. Adding Gaussian noise of sigma
    s to a clean photo reads about s (2 -> 2.1-2.5, 10 -> 9.8-10.4 on the samples).

    Images over about 1 MP are measured on a 4x4 grid of 256 px tiles at native resolution
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

    if g.shape[0] < 5 or g.shape[1] < 5:
        return 0.0
    kernel = np.array([[1, -2, 1], [-2, 4, -2], [1, -2, 1]], dtype=np.float32)
    response = np.abs(cv2.filter2D(g, cv2.CV_32F, kernel)[1:-1, 1:-1])
    smooth = cv2.GaussianBlur(g, (0, 0), 1.5)
    magnitude = np.hypot(cv2.Sobel(smooth, cv2.CV_32F, 1, 0), cv2.Sobel(smooth, cv2.CV_32F, 0, 1))
    magnitude = magnitude[1:-1, 1:-1]
    inner = g[1:-1, 1:-1]
    median = float(np.median(magnitude[::3, ::3]))
    mask = (magnitude <= median) & (inner > CLIP_LOW + 3) & (inner < CLIP_HIGH - 3)
    if mask.sum() < 100:
        mask = np.ones_like(mask)
    return float(np.sqrt(np.pi / 2) / 6.0 * response[mask].mean())


def skin_texture(rgb: np.ndarray, landmarks: np.ndarray) -> float:
    """High-frequency texture energy of the face's skin (grey levels, RMS).

    The face is rotated so the eyes are level and scaled so the eye centres are 96 px apart;
    skin is the hull of the jaw line and brows minus eyes, brows, nose and mouth, eroded by
    4 px. The energy is the RMS of (luma - Gaussian blur of sigma 1.5 px) over the skin:
    pores, fine wrinkles and grain raise it; retouching, denoising and "AI skin" lower it.
    """
    import cv2

    pts = np.asarray(landmarks, dtype=np.float64).reshape(-1, 2)
    if pts.shape[0] != 68:
        raise ValueError(f"skin_texture needs 68 landmarks, got {pts.shape[0]}")
    left, right = pts[36:42].mean(axis=0), pts[42:48].mean(axis=0)
    eye_distance = float(np.linalg.norm(right - left))
    if eye_distance < 4:
        return 0.0
    scale = SKIN_EYE_DISTANCE / eye_distance
    angle = float(np.degrees(np.arctan2(right[1] - left[1], right[0] - left[0])))
    centre = (left + right) / 2
    matrix = cv2.getRotationMatrix2D((float(centre[0]), float(centre[1])), angle, scale)
    matrix[:, 2] += np.array([2.0, 1.5]) * SKIN_EYE_DISTANCE - centre
    size = (4 * SKIN_EYE_DISTANCE, 4 * SKIN_EYE_DISTANCE)
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC
    warped = cv2.warpAffine(grey(rgb), matrix, size, flags=interp, borderMode=cv2.BORDER_REFLECT)
    mask = skin_mask(np.c_[pts, np.ones(68)] @ matrix.T, size)
    if mask.sum() < 200:
        return 0.0
    detail = warped - cv2.GaussianBlur(warped, (0, 0), SKIN_BLUR_SIGMA)
    return float(np.sqrt(np.mean(detail[mask] ** 2)))


def skin_mask(points: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Boolean skin mask (height, width) from 68 landmarks already in the target frame."""
    import cv2

    mask = np.zeros((size[1], size[0]), dtype=np.uint8)
    cv2.fillConvexPoly(mask, cv2.convexHull(points[:27].astype(np.int32)), 1)
    for part in (range(36, 42), range(42, 48), range(48, 60), range(17, 22), range(22, 27),
                 range(27, 36)):  # fmt: skip
        cv2.fillConvexPoly(mask, cv2.convexHull(points[list(part)].astype(np.int32)), 0)
    return cv2.erode(mask, np.ones((9, 9), np.uint8)) > 0


def plastic_index(texture: float, reference_texture: float) -> float:
    """Reference skin texture / this face's skin texture: 1.0 is as textured as the
    references, 2.0 half as much (smoother, more "plastic"). Capped at 10."""
    if reference_texture <= 0:
        return float("nan")
    return float(min(10.0, reference_texture / max(texture, 1e-6)))


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
    """Per-image quality numbers that do not depend on the reference set."""

    sharpness: float
    grain: float
    skin_texture: float | None
    clipping: float
    face_px: float | None
    brisque: float | None = None
