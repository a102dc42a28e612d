"""Same-face near duplicates: the same person in the same shot (re-saved, resized, lightly
edited, re-generated with one seed), as opposed to different photos of one person.

Two images are grouped when *both* hold:
- their subject faces' embeddings are within `max_face_distance` (0.15; re-encoding and
  resizing move a dlib descriptor by up to ~0.07, while two different photos of one person
  are 0.21 or more apart), and
- their perceptual hashes (pHash, 64 bits) differ in at most `max_phash_bits` (12) bits.

The face test keeps two different people in similar shots apart (e.g. one pose template
rendered for two characters); the pixel test keeps two different photos of one person apart.
Groups are the connected components of that relation (union-find), largest first.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from likeness.metrics.analysis import ImageAnalysis


@dataclass(frozen=True)
class FaceItem:
    key: str
    embedding: np.ndarray | None
    phash: str
    """pHash as 16 hex digits (imagehash's str form)."""


def face_items(analyses: Mapping[str, ImageAnalysis]) -> list[FaceItem]:
    """FaceItems (key = image sha256) from cached analyses, e.g. `ScoreRun.analyses`."""
    return [
        FaceItem(sha, a.face.embedding if a.face is not None else None, a.phash)
        for sha, a in analyses.items()
    ]


def phash_distance(a: str, b: str) -> int:
    return (int(a, 16) ^ int(b, 16)).bit_count()


def _close_faces(
    items: Sequence[FaceItem], max_distance: float, block: int = 1024
) -> Iterator[tuple[int, int]]:
    """Index pairs (a < b) whose embeddings are within `max_distance`, computed block by
    block from the Gram matrix so memory stays at N x block, not N x N x dimensions.

    Embeddings of different lengths come from different face backends (dlib's 128-D,
    InsightFace's 512-D) and have no distance between them: each length is compared only
    with itself."""
    by_length: dict[int, list[int]] = {}
    for index, item in enumerate(items):
        by_length.setdefault(len(item.embedding), []).append(index)
    for indices in by_length.values():
        for a, b in _close_within([items[i] for i in indices], max_distance, block):
            yield min(indices[a], indices[b]), max(indices[a], indices[b])


def _close_within(
    items: Sequence[FaceItem], max_distance: float, block: int
) -> Iterator[tuple[int, int]]:
    if not items:
        return
    emb = np.asarray([np.asarray(i.embedding, dtype=np.float64) for i in items])
    norms = (emb**2).sum(axis=1)
    limit = max_distance**2
    for start in range(0, len(emb), block):
        rows = emb[start : start + block]
        squared = norms[start : start + block, None] + norms[None, :] - 2.0 * rows @ emb.T
        for a, b in zip(*np.nonzero(squared <= limit + 1e-12), strict=True):
            a = int(a) + start
            if a < int(b):
                yield a, int(b)


def same_face_groups(
    items: Sequence[FaceItem], max_face_distance: float = 0.15, max_phash_bits: int = 12
) -> list[list[str]]:
    """Groups (lists of keys, each of two or more) of same-face near-identical images.

    Example:
        >>> same_face_groups(face_items(run.analyses))  # doctest: +SKIP
        [['3c17...', '9a0e...']]
    """
    with_face = [i for i in items if i.embedding is not None]
    parent = list(range(len(with_face)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for a, b in _close_faces(with_face, max_face_distance):
        if phash_distance(with_face[a].phash, with_face[b].phash) <= max_phash_bits:
            parent[root(a)] = root(b)
    groups: dict[int, list[str]] = {}
    for index, item in enumerate(with_face):
        groups.setdefault(root(index), []).append(item.key)
    found = [g for g in groups.values() if len(g) > 1]
    return sorted(found, key=lambda g: (-len(g), g[0]))
