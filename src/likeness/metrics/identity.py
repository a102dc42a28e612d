"""Identity: how close a face is to the character's reference faces, as a distance and as a
0-10 match score.

Distances are Euclidean between embeddings (dlib: 128-D; same person below 0.6 by dlib's own
evaluation). `distance` is the distance to the nearest reference face; `centroid_distance` is the
distance to the mean reference embedding (more stable when a reference is off).

Calibration. The leave-one-out distance of each reference (to its nearest *other* reference)
says how far two photos of this person typically are: `typical` is their median, clipped to
[0.15, 0.5] (0.35 with fewer than two references, the middle of dlib's measured 0.21-0.38 range
for one person). The match score is piecewise linear in `distance`:

- 0 .. typical              -> 10 .. 8   (as close as the references are to each other)
- typical .. threshold      -> 8 .. 5    (threshold: the backend's same-person distance, 0.6)
- threshold .. threshold+0.3 -> 5 .. 0   (another person)

So 8/10 means "as alike as two of the source photos", and the pass threshold is 5/10, i.e. the
backend's own same-person distance. A reference whose leave-one-out distance is above the
threshold is listed in `outliers`: it probably shows someone else, or no usable face.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

DEFAULT_TYPICAL = 0.35
PASS_SCORE = 5.0


@dataclass(frozen=True)
class IdentityCalibration:
    """Everything the match score needs, derived from the reference embeddings."""

    references: np.ndarray  # (n, d)
    keys: tuple[str, ...]  # one per reference row (e.g. image sha256), for leave-one-out
    threshold: float
    typical: float
    loo_distances: tuple[float, ...]
    outliers: tuple[str, ...]

    @property
    def centroid(self) -> np.ndarray:
        return self.references.mean(axis=0)


@dataclass(frozen=True)
class Identity:
    distance: float
    centroid_distance: float
    match: float
    passed: bool


def calibrate(
    embeddings: Sequence[np.ndarray], keys: Sequence[str], threshold: float = 0.6
) -> IdentityCalibration:
    """Calibration from the reference faces' embeddings (one per reference image).

    Example:
        >>> cal = calibrate([a.face.embedding for a in refs], [a.sha256 for a in refs])  # doctest: +SKIP
        >>> cal.typical, cal.outliers  # doctest: +SKIP
    """
    if not len(embeddings):
        raise ValueError("no reference faces: pass reference photos in which a face is found")
    if len(keys) != len(embeddings):
        raise ValueError(f"{len(keys)} keys for {len(embeddings)} reference embeddings")
    refs = np.asarray([np.asarray(e, dtype=np.float64) for e in embeddings])
    loo: list[float] = []
    if len(refs) >= 2:
        dist = np.linalg.norm(refs[:, None] - refs[None], axis=-1)
        np.fill_diagonal(dist, np.inf)
        loo = [float(v) for v in dist.min(axis=1)]
        typical = float(np.clip(np.median(loo), 0.15, min(0.5, threshold - 0.05)))
    else:
        typical = min(DEFAULT_TYPICAL, threshold * 0.6)
    outliers = tuple(k for k, d in zip(keys, loo, strict=False) if d > threshold)
    return IdentityCalibration(
        references=refs,
        keys=tuple(keys),
        threshold=threshold,
        typical=typical,
        loo_distances=tuple(loo),
        outliers=outliers,
    )


def match_score(distance: float, typical: float, threshold: float) -> float:
    """The 0-10 match score for a nearest-reference distance (see the module doc).

    Example:
        >>> match_score(0.6, typical=0.35, threshold=0.6)
        5.0
    """
    if distance <= typical:
        score = 10.0 - 2.0 * distance / typical
    elif distance <= threshold:
        score = 8.0 - 3.0 * (distance - typical) / (threshold - typical)
    else:
        score = 5.0 - 5.0 * (distance - threshold) / 0.3
    return float(np.clip(score, 0.0, 10.0))


def distance_for_match(match: float, typical: float, threshold: float) -> float:
    """The nearest-reference distance at which `match_score` gives `match`: its inverse, so a
    pass bar can be set in either unit.

    Example:
        >>> distance_for_match(5.0, typical=0.35, threshold=0.6)
        0.6
    """
    match = float(np.clip(match, 0.0, 10.0))
    if match >= 8.0:
        return (10.0 - match) * typical / 2.0
    if match >= 5.0:
        return typical + (8.0 - match) * (threshold - typical) / 3.0
    return threshold + (5.0 - match) * 0.3 / 5.0


def identify(
    embedding: np.ndarray, calibration: IdentityCalibration, exclude_key: str | None = None
) -> Identity:
    """Distances and match of one face. A reference image scored against its own set is left
    out of it (`exclude_key`), so references get honest leave-one-out scores."""
    refs = calibration.references
    if exclude_key is not None and exclude_key in calibration.keys and len(refs) > 1:
        keep = [i for i, k in enumerate(calibration.keys) if k != exclude_key]
        refs = refs[keep]
    emb = np.asarray(embedding, dtype=np.float64)
    distance = float(np.linalg.norm(refs - emb, axis=1).min())
    centroid = float(np.linalg.norm(refs.mean(axis=0) - emb))
    match = match_score(distance, calibration.typical, calibration.threshold)
    return Identity(
        distance=distance,
        centroid_distance=centroid,
        match=match,
        passed=distance <= calibration.threshold,
    )
