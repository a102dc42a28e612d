"""Same shot: whether two images are one photograph (resized, re-encoded, cropped, mirrored,
slightly rotated) rather than two photos of one person, judged on the face's pixels.

Identity embeddings cannot tell: a crop of a photo moves a dlib descriptor by up to 0.28 (the
detector box and landmarks shift), as far as two different photos of one person can be (0.34
on the samples). Pixels can. Each subject face gets a `FacePrint`: ORB keypoints (up to 400)
on the face region (the box enlarged 1.5x, scaled so the face is 160 px wide) and on its
mirror image. Two prints are the same shot when the keypoints matched between them (Lowe's
ratio test, 0.75) hold at least `MIN_INLIERS` (20) inliers of one similarity transform (RANSAC,
3 px), directly or with one of them mirrored. Measured on the sample photos: the same shot
(a crop, a half-size copy, JPEG quality 40, a mirror, an 8-degree rotation, a face cut by the
frame) 49-337 inliers; different photos of one person 2-6.

Prints are cached like analyses (analyzer `likeness.face_print`, keyed by image sha256 and the
face backend that placed the box), so a second run decodes nothing.
"""

from __future__ import annotations

import base64
import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass
from itertools import combinations
from pathlib import Path
from typing import Any

import numpy as np

from likeness.faces.types import Box

ANALYZER_NAME = "likeness.face_print"
PRINT_VERSION = "1"
MIN_INLIERS = 20
FACE_WIDTH = 160
CONTEXT = 1.5
MAX_KEYPOINTS = 400
RATIO = 0.75
RANSAC_PX = 3.0


@dataclass(frozen=True)
class FacePrint:
    """ORB keypoints of a face region and of its mirror image (coordinates in the region)."""

    points: np.ndarray  # (n, 2) float32
    descriptors: np.ndarray  # (n, 32) uint8
    mirror_points: np.ndarray
    mirror_descriptors: np.ndarray

    def to_dict(self) -> dict[str, Any]:
        return {
            "points": _pack(self.points.astype(np.float32)),
            "descriptors": _pack(self.descriptors.astype(np.uint8)),
            "mirror_points": _pack(self.mirror_points.astype(np.float32)),
            "mirror_descriptors": _pack(self.mirror_descriptors.astype(np.uint8)),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FacePrint:
        return cls(
            points=_unpack(data["points"], np.float32, 2),
            descriptors=_unpack(data["descriptors"], np.uint8, 32),
            mirror_points=_unpack(data["mirror_points"], np.float32, 2),
            mirror_descriptors=_unpack(data["mirror_descriptors"], np.uint8, 32),
        )


def face_print(grey: np.ndarray, box: Box) -> FacePrint:
    """The print of the face in `box` of an HxW uint8 grey image.

    Example:
        >>> fp = face_print(np.asarray(img.convert("L")), analysis.face.box)  # doctest: +SKIP
    """
    region = face_region(grey, box)
    points, descriptors = _orb(region)
    mirror_points, mirror_descriptors = _orb(np.ascontiguousarray(region[:, ::-1]))
    return FacePrint(points, descriptors, mirror_points, mirror_descriptors)


def face_region(grey: np.ndarray, box: Box) -> np.ndarray:
    """The face box enlarged `CONTEXT` times (clipped to the image), resized so the face is
    `FACE_WIDTH` px wide: prints of one face at any image size then describe the same scale."""
    import cv2

    cx, cy = box.center
    half = CONTEXT / 2 * max(box.width, box.height, 1.0)
    height, width = grey.shape[:2]
    x0, y0 = int(max(0, cx - half)), int(max(0, cy - half))
    x1, y1 = int(min(width, cx + half)), int(min(height, cy + half))
    crop = grey[y0:y1, x0:x1]
    if crop.size == 0:
        return np.zeros((1, 1), dtype=np.uint8)
    factor = FACE_WIDTH / max(box.width, 1.0)
    interpolation = cv2.INTER_AREA if factor < 1 else cv2.INTER_LINEAR
    return cv2.resize(crop, None, fx=factor, fy=factor, interpolation=interpolation)


def shot_inliers(a: FacePrint, b: FacePrint) -> int:
    """Keypoints of `a` that one similarity transform maps onto `b` or onto `b`'s mirror
    image (the larger of the two counts)."""
    direct = _inliers(a.points, a.descriptors, b.points, b.descriptors)
    mirrored = _inliers(a.points, a.descriptors, b.mirror_points, b.mirror_descriptors)
    return max(direct, mirrored)


def same_shot(a: FacePrint, b: FacePrint, min_inliers: int = MIN_INLIERS) -> bool:
    """True when `a` and `b` are one photograph (see the module doc)."""
    return shot_inliers(a, b) >= min_inliers


def same_shot_pairs(
    prints: Mapping[str, FacePrint], min_inliers: int = MIN_INLIERS
) -> list[tuple[str, str]]:
    """Every pair of keys (in `prints` order) whose prints are the same shot.

    Example:
        >>> same_shot_pairs({"a": fp_a, "b": fp_b, "c": fp_c})  # doctest: +SKIP
        [('a', 'c')]
    """
    return [
        (ka, kb)
        for (ka, pa), (kb, pb) in combinations(prints.items(), 2)
        if same_shot(pa, pb, min_inliers)
    ]


def face_prints(
    faces: Mapping[str, tuple[Path, Box]],
    *,
    backend: str,
    conn: sqlite3.Connection | None = None,
) -> dict[str, FacePrint]:
    """Prints of the subject faces `faces` (sha256 -> (image file, subject box)), read from and
    stored in the analysis cache when `conn` is given. `backend` names the face backend and
    its version (the box depends on them). Unreadable images are left out.

    Example:
        >>> face_prints({sha: (path, a.face.box)}, backend="dlib=1", conn=ws.db)  # doctest: +SKIP
    """
    from likeness.imaging import ImageRejected, open_image

    version = f"{PRINT_VERSION};{backend}"
    found: dict[str, FacePrint] = {}
    if conn is not None and faces:
        from likeness.store.analyses import get_analyses

        for sha, data in get_analyses(conn, list(faces), ANALYZER_NAME, version).items():
            try:
                found[sha] = FacePrint.from_dict(data)
            except (KeyError, TypeError, ValueError):
                continue  # a damaged row: computed again and replaced below
    prints: dict[str, FacePrint] = {}
    for sha, (path, box) in faces.items():
        if sha in found:
            prints[sha] = found[sha]
            continue
        try:
            grey = np.asarray(open_image(path).image.convert("L"))
        except (ImageRejected, OSError):
            continue
        prints[sha] = face_print(grey, box)
        if conn is not None:
            from likeness.store.analyses import put_analysis

            put_analysis(conn, sha, ANALYZER_NAME, version, prints[sha].to_dict())
    return prints


def _orb(region: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    import cv2

    orb = cv2.ORB_create(nfeatures=MAX_KEYPOINTS, edgeThreshold=15, patchSize=15)
    keypoints, descriptors = orb.detectAndCompute(region, None)
    if descriptors is None or not keypoints:
        return np.zeros((0, 2), np.float32), np.zeros((0, 32), np.uint8)
    points = np.asarray([k.pt for k in keypoints], dtype=np.float32)
    return points, np.asarray(descriptors, dtype=np.uint8)


def _inliers(
    points_a: np.ndarray, desc_a: np.ndarray, points_b: np.ndarray, desc_b: np.ndarray
) -> int:
    import cv2

    if len(desc_a) < 2 or len(desc_b) < 2:
        return 0
    matcher = cv2.BFMatcher(cv2.NORM_HAMMING)
    good = [
        pair[0]
        for pair in matcher.knnMatch(desc_a, desc_b, k=2)
        if len(pair) == 2 and pair[0].distance < RATIO * pair[1].distance
    ]
    if len(good) < 3:
        return 0
    src = np.float32([points_a[m.queryIdx] for m in good])
    dst = np.float32([points_b[m.trainIdx] for m in good])
    _, mask = cv2.estimateAffinePartial2D(
        src, dst, method=cv2.RANSAC, ransacReprojThreshold=RANSAC_PX
    )
    return int(mask.sum()) if mask is not None else 0


def _pack(array: np.ndarray) -> str:
    return base64.b64encode(np.ascontiguousarray(array).tobytes()).decode("ascii")


def _unpack(text: str, dtype: type, columns: int) -> np.ndarray:
    raw = np.frombuffer(base64.b64decode(text), dtype=dtype)
    if raw.size % columns:
        raise ValueError("face print arrays have the wrong length")
    return raw.reshape(-1, columns).copy()
