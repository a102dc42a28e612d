"""The batch near-duplicate search finds exactly the pairs that comparing every pair finds."""

from __future__ import annotations

import numpy as np
import pytest

from likeness.curate.hamming_join import block_plan, choose_blocks, close_pairs


def _clustered(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Hashes in clusters (a base and copies 0-16 bits away), some exact repeats, the rest
    random: every kind of pair the search must tell apart."""
    rng = np.random.default_rng(seed)
    first = rng.integers(0, 2**64, size=n, dtype=np.uint64)
    second = rng.integers(0, 2**64, size=n, dtype=np.uint64)
    for k in rng.choice(n, size=n // 2, replace=False):
        base = int(rng.integers(n))
        for hashes in (first, second):
            flips = rng.choice(64, size=int(rng.integers(0, 17)), replace=False)
            hashes[k] = hashes[base] ^ np.uint64(sum(1 << int(b) for b in flips))
    return first, second


def _brute(first, first_max, second=None, second_max=64) -> set[tuple[int, int]]:
    close = np.bitwise_count(first[:, None] ^ first[None, :]) <= first_max
    if second is not None:
        close &= np.bitwise_count(second[:, None] ^ second[None, :]) <= second_max
    i, j = np.nonzero(np.triu(close, 1))
    return set(zip(i.tolist(), j.tolist(), strict=True))


@pytest.mark.parametrize("max_distance", [0, 1, 3, 10, 16])
@pytest.mark.parametrize("blocks", [None, 3, 4, 6])
def test_finds_exactly_the_pairs_every_pair_comparison_finds(max_distance, blocks):
    first, second = _clustered(600, seed=max_distance)
    i, j = close_pairs(first, max_distance, blocks=blocks)
    assert set(zip(i.tolist(), j.tolist(), strict=True)) == _brute(first, max_distance)
    assert (i < j).all() and (np.diff(i * len(first) + j) > 0).all()  # sorted, each once
    i, j = close_pairs(first, max_distance, second, 12, blocks=blocks)
    assert set(zip(i.tolist(), j.tolist(), strict=True)) == _brute(first, max_distance, second, 12)


def test_small_and_degenerate_inputs():
    empty = np.array([], dtype=np.uint64)
    assert [len(a) for a in close_pairs(empty, 10)] == [0, 0]
    assert [len(a) for a in close_pairs(np.array([7], dtype=np.uint64), 10)] == [0, 0]
    far = np.array([0, 2**64 - 1], dtype=np.uint64)  # 64 bits apart: no pair
    assert [len(a) for a in close_pairs(far, 10)] == [0, 0]
    same = np.full(5, 2**63 + 5, dtype=np.uint64)  # five equal hashes: ten pairs
    i, j = close_pairs(same, 0)
    assert len(i) == 10
    with pytest.raises(ValueError, match="second"):
        close_pairs(same, 3, same[:2])
    with pytest.raises(ValueError, match="first_max"):
        close_pairs(same, -1)


def test_the_plan_satisfies_the_pigeonhole_bound():
    """Every bit sits in exactly one block, and a pair within the distance must fall within
    the radius of some searched block: the radii of all blocks (unsearched ones at -1) add
    up to at least max_distance - (blocks - 1)."""
    for max_distance in (0, 4, 10, 20):
        for blocks in range(3, 12):
            plan = block_plan(max_distance, blocks)
            searched = [bit for positions, _ in plan for bit in positions]
            assert len(set(searched)) == len(searched)
            radii = [r for _, r in plan] + [-1] * (blocks - len(plan))
            assert sum(r + 1 for r in radii) == max_distance + 1
    # More hashes: fewer, longer blocks (fewer chance collisions for more probes).
    chosen = [choose_blocks(n, 10) for n in (100, 10_000, 1_000_000)]
    assert chosen == sorted(chosen, reverse=True) and chosen[0] > chosen[-1]
