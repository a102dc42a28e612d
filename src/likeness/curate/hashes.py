"""Perceptual hashes and a sub-quadratic index over them.

pHash (DCT of a 32x32 grey thumbnail) survives re-encoding, resizing and colour shifts; dHash
(horizontal gradients of a 9x8 thumbnail) is a second, differently built opinion. Two images are
near duplicates only when both hashes are close.

`HammingIndex` answers "which stored hashes are within distance t of this one" without comparing
against everything: the 64 bits are split into `t // radius + 1` chunks, and by the pigeonhole
principle any hash within distance t agrees with the query on at least one chunk up to `radius`
flipped bits. Each chunk is a dict lookup of the query chunk and its few neighbours, so a lookup
touches a handful of buckets instead of every stored hash. It serves one image at a time (ingest);
`near_pairs` finds every close pair of a whole set at once, with the array form of the same idea
in `likeness.curate.hamming_join`.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import combinations

import imagehash
import numpy as np
from PIL import Image

from likeness.curate.hamming_join import close_pairs

HASH_BITS = 64


@dataclass(frozen=True)
class PerceptualHashes:
    phash: int
    dhash: int

    @property
    def phash_hex(self) -> str:
        return f"{self.phash:016x}"

    @property
    def dhash_hex(self) -> str:
        return f"{self.dhash:016x}"


def perceptual_hashes(img: Image.Image) -> PerceptualHashes:
    """pHash and dHash of an image, as 64-bit integers."""
    small = img.convert("L")
    if max(small.size) > 512:
        small = small.copy()
        small.thumbnail((512, 512), Image.Resampling.BILINEAR)
    return PerceptualHashes(
        phash=_to_int(imagehash.phash(small)), dhash=_to_int(imagehash.dhash(small))
    )


def hamming(a: int, b: int) -> int:
    return (a ^ b).bit_count()


def _to_int(h: imagehash.ImageHash) -> int:
    return int(str(h), 16)


class HammingIndex:
    """Multi-index hashing over 64-bit hashes for radius queries."""

    def __init__(self, max_distance: int, chunk_radius: int = 1):
        if max_distance < 0:
            raise ValueError(f"max_distance must be >= 0, got {max_distance}")
        self.max_distance = max_distance
        plan = _chunk_plan(max_distance, chunk_radius)
        self._spans = [(lo, width) for lo, width, _ in plan]
        self._radius = plan[0][2]
        self._tables: list[dict[int, list[int]]] = [defaultdict(list) for _ in self._spans]
        self._keys: list[object] = []
        self._hashes: list[int] = []
        self._masks = [
            [_flip_mask(width, r) for r in range(self._radius + 1)] for _, width in self._spans
        ]

    def __len__(self) -> int:
        return len(self._keys)

    def add(self, key: object, value: int) -> None:
        slot = len(self._keys)
        self._keys.append(key)
        self._hashes.append(value)
        for table, (lo, width) in zip(self._tables, self._spans, strict=True):
            table[(value >> lo) & ((1 << width) - 1)].append(slot)

    def query(self, value: int, max_distance: int | None = None) -> list[tuple[object, int]]:
        """(key, distance) of every stored hash within `max_distance` (default: the index's)."""
        limit = self.max_distance if max_distance is None else min(max_distance, self.max_distance)
        seen: set[int] = set()
        found = []
        for table, (lo, width), masks in zip(self._tables, self._spans, self._masks, strict=True):
            chunk = (value >> lo) & ((1 << width) - 1)
            for level in masks:
                for mask in level:
                    for slot in table.get(chunk ^ mask, ()):
                        if slot in seen:
                            continue
                        seen.add(slot)
                        distance = (self._hashes[slot] ^ value).bit_count()
                        if distance <= limit:
                            found.append((self._keys[slot], distance))
        return found


def _flip_mask(width: int, bits: int) -> list[int]:
    """Every `width`-bit mask with exactly `bits` bits set."""
    return [sum(1 << i for i in combo) for combo in combinations(range(width), bits)]


def near_pairs(
    items: Sequence[tuple[object, PerceptualHashes]],
    phash_max: int,
    dhash_max: int,
    blocks: int | None = None,
) -> list[tuple[object, object, int]]:
    """All (a, b, phash distance) pairs that are near duplicates by both hashes, in input
    order of a, then b.

    The batch form of `HammingIndex`: multi-index hashing on the pHashes as numpy arrays
    (`likeness.curate.hamming_join`), the dHash compared on the candidates only.
    """
    if len(items) < 2:
        return []
    keys = [key for key, _ in items]
    phash = np.array([h.phash for _, h in items], dtype=np.uint64)
    dhash = np.array([h.dhash for _, h in items], dtype=np.uint64)
    a, b = close_pairs(phash, phash_max, dhash, dhash_max, blocks=blocks)
    distances = np.bitwise_count(phash[a] ^ phash[b]).tolist()
    return [
        (keys[i], keys[j], int(d))
        for i, j, d in zip(a.tolist(), b.tolist(), distances, strict=True)
    ]


def _chunk_plan(max_distance: int, chunk_radius: int = 1) -> list[tuple[int, int, int]]:
    """(lowest bit, width, search radius) of each chunk, by the pigeonhole principle: with
    k chunks, a hash within `max_distance` differs in at most max_distance // k bits in some
    chunk."""
    chunks = min(max_distance // (chunk_radius + 1) + 1, HASH_BITS)
    bounds = [round(i * HASH_BITS / chunks) for i in range(chunks + 1)]
    radius = max_distance // chunks
    return [(lo, hi - lo, radius) for lo, hi in zip(bounds, bounds[1:], strict=False)]
