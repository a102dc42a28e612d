"""Every pair of 64-bit hashes within a Hamming distance, without comparing every pair.

Multi-index hashing (Norouzi, Punjani and Fleet, "Fast exact search in Hamming space with
multi-index hashing", 2014) on numpy arrays. The 64 bits are split into `m` blocks. Write the
distance bound as r = m * q + a (0 <= a < m): two hashes within r bits of each other differ in
at most q bits on one of the first a + 1 blocks, or in at most q - 1 bits on one of the others
(if every block differed more, the blocks alone would add up to r + 1). So for each block the
hashes are bucketed by that block's value (a direct-address table: counts, then one stable
sort), and each hash is joined with the buckets whose value differs from its own in at most
that block's radius; only those candidate pairs are compared in full, with popcounts.

Each unordered pair of buckets is visited once (from the bucket with the lower value), pairs
inside one bucket once, so no pair is compared twice from the same block. The number of
blocks is chosen from the number of hashes: more blocks mean fewer probes per hash but more
chance collisions, and the balance moves towards fewer, longer blocks as the set grows, which
keeps the work below quadratic (measured by `bench/dedup.py`).

Bits are dealt to the blocks in the zig-zag order of the 8x8 DCT that a pHash is built from
(imagehash writes coefficient (r, c) as bit 63 - 8r - c), so each block mixes low and high
frequencies: neighbouring coefficients are the most alike across images, and a block made of
them would crowd into few buckets. The DC coefficient, always above the median and so always
1, goes to the last block, whose radius is the smallest.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterator
from itertools import combinations

import numpy as np

HASH_BITS = 64
MAX_BLOCK_BITS = 22
"""Widest block: its table has 2**22 + 1 bucket bounds (32 MiB)."""
PROBE_CHUNK = 1 << 20
"""Probes (hash x flip mask) held in memory at once."""
PAIR_CHUNK = 1 << 22
"""Candidate pairs held in memory at once."""
PROBE_COST, PAIR_COST = 1.0, 1.5
"""Relative CPU cost of one probe and of one candidate pair (measured with bench/dedup.py),
for choosing the number of blocks."""


def close_pairs(
    first: np.ndarray,
    first_max: int,
    second: np.ndarray | None = None,
    second_max: int = HASH_BITS,
    blocks: int | None = None,
    work: dict[str, int] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Index pairs (i < j), sorted, with `first` hashes within `first_max` bits and `second`
    hashes (when given) within `second_max` bits.

    Args:
        first (`np.ndarray`): n 64-bit hashes (uint64), the ones that are indexed.
        first_max (`int`): Hamming distance bound for `first`.
        second (`np.ndarray`, *optional*): n more hashes, only compared on the candidates.
        second_max (`int`, defaults to 64): bound for `second`.
        blocks (`int`, *optional*): number of blocks; chosen from n when not given.
        work (`dict`, *optional*): filled with `blocks` and `compared` (candidate pairs
            compared in full, counted once per block that proposed them).

    Example:
        >>> i, j = close_pairs(np.array([0, 1, 255], dtype=np.uint64), 1)
        >>> list(zip(i.tolist(), j.tolist()))
        [(0, 1)]
    """
    if first_max < 0:
        raise ValueError(f"first_max must be >= 0, got {first_max}")
    first = np.ascontiguousarray(first, dtype=np.uint64)
    n = len(first)
    if second is not None:
        second = np.ascontiguousarray(second, dtype=np.uint64)
        if len(second) != n:
            raise ValueError(f"{len(second)} second hashes for {n} first hashes")
    empty = np.empty(0, dtype=np.int64)
    if n < 2:
        return empty, empty
    bits = _unpack(first)
    found = []
    blocks = blocks or choose_blocks(n, first_max)
    compared = 0
    for positions, radius in block_plan(first_max, blocks):
        columns = bits[:, list(positions)].astype(np.int64)
        values = (columns << np.arange(len(positions))).sum(axis=1)
        for a, b in _block_candidates(values, len(positions), radius):
            compared += len(a)
            close = np.flatnonzero(np.bitwise_count(first[a] ^ first[b]) <= first_max)
            a, b = a[close], b[close]
            if second is not None:
                close = np.bitwise_count(second[a] ^ second[b]) <= second_max
                a, b = a[close], b[close]
            found.append(np.minimum(a, b).astype(np.int64) * n + np.maximum(a, b))
    if work is not None:
        work.update(blocks=blocks, compared=compared)
    if not found:
        return empty, empty
    ids = np.sort(np.concatenate(found))
    if len(ids):  # a close pair is often found in two blocks
        ids = ids[np.r_[True, ids[1:] != ids[:-1]]]
    return ids // n, ids % n


@functools.lru_cache(maxsize=256)
def block_plan(max_distance: int, blocks: int) -> tuple[tuple[tuple[int, ...], int], ...]:
    """(bit positions, search radius) of each block that needs searching, for `blocks`
    blocks (see the module doc)."""
    if not 1 <= blocks <= HASH_BITS:
        raise ValueError(f"blocks must be 1-{HASH_BITS}, got {blocks}")
    order = _spread()
    groups = [list(order[:-1][k::blocks]) for k in range(blocks)]
    groups[-1].append(order[-1])  # the DC bit
    base, extra = divmod(max_distance, blocks)
    plan = []
    for k, group in enumerate(groups):
        radius = base if k <= extra else base - 1
        if radius >= 0:
            plan.append((tuple(sorted(group)), radius))
    if max(len(group) for group, _ in plan) > MAX_BLOCK_BITS:
        raise ValueError(f"{blocks} blocks are wider than {MAX_BLOCK_BITS} bits")
    return tuple(plan)


def choose_blocks(n: int, max_distance: int) -> int:
    """The number of blocks with the least expected work for n hashes: probes (one set per
    non-empty bucket) plus chance collisions, as if the blocks' values were uniform (real
    near-duplicate pairs are found whatever the plan)."""
    best, best_cost = HASH_BITS, math.inf
    # More than max_distance + 1 blocks only narrows the blocks that are searched.
    fewest = math.ceil(HASH_BITS / MAX_BLOCK_BITS)
    for blocks in range(fewest, max(fewest, min(max_distance + 1, HASH_BITS)) + 1):
        probes = pairs = 0.0
        for positions, radius in block_plan(max_distance, blocks):
            width = len(positions)
            volume = sum(math.comb(width, k) for k in range(radius + 1))
            buckets = 2**width * -math.expm1(-n / 2**width)  # expected non-empty
            probes += buckets * volume / 2
            pairs += n * n / 2 * volume / 2**width
        cost = PROBE_COST * probes + PAIR_COST * pairs
        if cost < best_cost:
            best, best_cost = blocks, cost
    return best


def _block_candidates(
    values: np.ndarray, width: int, radius: int
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Index pairs (a, b), each unordered pair once, whose block values differ in at most
    `radius` bits, in chunks."""
    n = len(values)
    index = np.int32 if n < 2**31 else np.int64  # half the memory traffic of int64
    counts = np.bincount(values, minlength=1 << width).astype(index)
    starts = np.zeros(1 << width, dtype=index)
    np.cumsum(counts[:-1], out=starts[1:])
    order = np.argsort(values, kind="stable").astype(index)  # in a bucket, lower indices first
    # 1. Pairs inside one bucket: each hash with the hashes after it there.
    position = np.empty(n, dtype=index)
    position[order] = np.arange(n, dtype=index)
    after = starts[values] + counts[values] - position - 1
    hashes = np.flatnonzero(after)
    yield from _expand(hashes, position[hashes] + 1, after[hashes], order)
    # 2. Pairs of buckets up to `radius` bits apart, each pair once: from the bucket whose
    #    value has the mask's highest bit clear. Probing buckets rather than hashes bounds the
    #    probes by the table's size however many hashes there are.
    occupied = counts > 0
    buckets = np.flatnonzero(occupied)
    for top, masks in _flip_masks(width, radius):
        lower = buckets[(buckets & top) == 0]
        step = max(1, PROBE_CHUNK // len(masks))
        for lo in range(0, len(lower), step):
            near = lower[lo : lo + step, None] ^ masks
            hit = occupied[near]
            rows = np.nonzero(hit)[0]
            yield from _bucket_pairs(lower[lo + rows], near[hit], counts, starts, order)


def _bucket_pairs(
    left: np.ndarray, right: np.ndarray, counts: np.ndarray, starts: np.ndarray, order: np.ndarray
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Every hash of bucket left[k] with every hash of bucket right[k]."""
    sizes = counts[left]
    total = int(sizes.sum())
    if total == len(left):  # one hash in each left bucket: the common case
        hashes, targets = order[starts[left]], right
    else:
        pair = np.repeat(np.arange(len(left), dtype=sizes.dtype), sizes)
        offset = np.arange(total, dtype=sizes.dtype) - np.repeat(np.cumsum(sizes) - sizes, sizes)
        hashes = order[starts[left][pair] + offset]
        targets = right[pair]
    yield from _expand(hashes, starts[targets], counts[targets], order)


def _expand(
    hashes: np.ndarray, first: np.ndarray, count: np.ndarray, order: np.ndarray
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Pairs (hashes[k], order[first[k] + t]) for t < count[k], at most about `PAIR_CHUNK`
    at a time."""
    if not len(hashes):
        return
    ends = np.cumsum(count)
    cuts = np.searchsorted(ends, np.arange(PAIR_CHUNK, ends[-1], PAIR_CHUNK), side="left")
    for begin, end in zip([0, *cuts.tolist()], [*cuts.tolist(), len(hashes)], strict=True):
        if begin == end:
            continue
        part = count[begin:end]
        total = int(part.sum())
        if total == end - begin:  # one partner each
            yield hashes[begin:end], order[first[begin:end]]
            continue
        offset = np.repeat(first[begin:end] - (np.cumsum(part) - part), part)
        yield np.repeat(hashes[begin:end], part), order[offset + np.arange(total, dtype=part.dtype)]


@functools.lru_cache(maxsize=64)
def _flip_masks(width: int, radius: int) -> tuple[tuple[int, np.ndarray], ...]:
    """Every nonzero `width`-bit mask with at most `radius` bits set, grouped by its highest
    bit: ((highest bit, masks), ...)."""
    groups = []
    for top in range(width):
        masks = [
            (1 << top) | sum(1 << i for i in combo)
            for bits in range(radius)
            for combo in combinations(range(top), bits)
        ]
        if masks:
            groups.append((1 << top, np.array(masks, dtype=np.int64)))
    return tuple(groups)


def _unpack(hashes: np.ndarray) -> np.ndarray:
    """(n, 64) array of 0/1, column k holding bit k (bit 0 the least significant)."""
    raw = hashes.astype("<u8").view(np.uint8).reshape(-1, 8)
    return np.unpackbits(raw, axis=1, bitorder="little")


@functools.cache
def _spread() -> tuple[int, ...]:
    """The 64 bit positions in zig-zag order of their DCT coefficients, DC last."""
    cells = sorted(
        ((r, c) for r in range(8) for c in range(8)),
        key=lambda rc: (rc[0] + rc[1], rc[0] if (rc[0] + rc[1]) % 2 else rc[1]),
    )
    positions = [HASH_BITS - 1 - (8 * r + c) for r, c in cells]
    return tuple(positions[1:] + positions[:1])
