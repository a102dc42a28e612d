"""Benchmark: the near-duplicate search (`likeness.curate.hashes.near_pairs`, multi-index
hashing) against comparing every pair with numpy, at 10,000 and 100,000 hashes.

Hash sets (pHash + dHash, computed exactly as `perceptual_hashes` computes them):
- `photos`: random crops (25-100% of the side, any position, mirrored or not) of the sample
  photos and of scikit-image's natural images, so that the hashes crowd as real photos do
  (many images of few scenes), plus for 5% of them a JPEG q60 re-encode, a 50% resize and a
  centred 5% crop (the near duplicates to find), plus the sample photos and their variants
  from `near_duplicate_variants`.
- `uniform`: random 64-bit hashes with the same share of planted near duplicates (0-10 bits
  flipped): the index's best case, for reference.

Baseline: numpy all-pairs, row blocks of 64 against every later hash, pHash first and the dHash
only where the pHash is close (the fastest plain numpy form). At 10,000 hashes it is run in
full and its pairs compared with the index's exactly. At 100,000 (5e9 pairs) it is run on an
evenly spaced sample of its row blocks and its time extrapolated (time x blocks / sampled
blocks; the sample spans the whole triangle, so the estimate is unbiased), and the pairs of the
sampled rows compared with the index's exactly. The script says so when it prints. Both
searches run on one thread, so their CPU time (printed beside the wall time) is what an idle
core would take, whatever else the machine is doing.

    python bench/dedup.py [--sizes 10000 100000] [--sets photos uniform] [--sample 120]
"""

from __future__ import annotations

import argparse
import io
import statistics
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

import likeness
from likeness.config import DedupSettings
from likeness.curate.hashes import PerceptualHashes, near_pairs, perceptual_hashes
from likeness.curate.variants import near_duplicate_variants

SAMPLES = Path(likeness.__file__).parent / "data" / "samples" / "faces"
NATURAL = (
    "astronaut", "camera", "coffee", "chelsea", "rocket", "coins", "moon", "page", "text",
    "hubble_deep_field", "immunohistochemistry", "retina", "brick", "grass", "gravel", "cell",
    "cat", "horse", "clock", "microaneurysms",
)  # fmt: skip
COPIED = 0.05
WEIGHTS = np.uint64(1) << np.arange(63, -1, -1, dtype=np.uint64)  # first bit is the MSB


# --- hash sets ---------------------------------------------------------------------------


def sources() -> list[Image.Image]:
    """Grey natural images, at most 192 px: the scenes that crops are taken from."""
    from skimage import data

    images = [Image.open(p) for p in sorted(SAMPLES.iterdir()) if p.suffix in (".jpg", ".png")]
    for name in NATURAL:
        array = getattr(data, name)()
        if array.dtype != np.uint8:
            array = array.astype(np.float64)
            array = (255 * (array - array.min()) / max(1e-9, np.ptp(array))).astype(np.uint8)
        images.append(Image.fromarray(array))
    out = []
    for image in images:
        grey = image.convert("L")
        grey.thumbnail((192, 192), Image.Resampling.LANCZOS)
        out.append(grey)
    return out


def hash_batch(images: list[Image.Image]) -> tuple[np.ndarray, np.ndarray]:
    """pHash and dHash of grey images of at most 512 px, as imagehash computes them (32x32
    Lanczos thumbnail, DCT-II along both axes, the 8x8 low frequencies against their median;
    9x8 thumbnail, each pixel against its left neighbour), in one numpy pass."""
    import scipy.fftpack

    thumbs = np.stack([np.asarray(i.resize((32, 32), Image.Resampling.LANCZOS)) for i in images])
    small = np.stack([np.asarray(i.resize((9, 8), Image.Resampling.LANCZOS)) for i in images])
    dct = scipy.fftpack.dct(scipy.fftpack.dct(thumbs.astype(np.float64), axis=1), axis=2)
    low = dct[:, :8, :8].reshape(len(images), 64)
    phash = ((low > np.median(low, axis=1, keepdims=True)) * WEIGHTS).sum(axis=1)
    gradient = (small[:, :, 1:] > small[:, :, :-1]).reshape(len(images), 64)
    return phash.astype(np.uint64), (gradient * WEIGHTS).sum(axis=1).astype(np.uint64)


def copies(image: Image.Image) -> list[Image.Image]:
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=60)
    w, h = image.size
    dx, dy = round(w * 0.025), round(h * 0.025)
    return [
        Image.open(io.BytesIO(buf.getvalue())).convert("L"),
        image.resize((max(1, w // 2), max(1, h // 2)), Image.Resampling.LANCZOS),
        image.crop((dx, dy, w - dx, h - dy)),
    ]


def photo_hashes(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """n hashes of crops and copies of natural images, the sample photos among them."""
    rng = np.random.default_rng(seed)
    scenes = sources()
    real = [perceptual_hashes(Image.open(p)) for p in sorted(SAMPLES.iterdir())
            if p.suffix in (".jpg", ".png")]  # fmt: skip
    for p in sorted(SAMPLES.iterdir()):
        if p.suffix == ".jpg":
            for data in near_duplicate_variants(Image.open(p).convert("RGB")).values():
                real.append(perceptual_hashes(Image.open(io.BytesIO(data))))
    images: list[Image.Image] = []
    while len(images) < n - len(real):
        scene = scenes[rng.integers(len(scenes))]
        w, h = scene.size
        side = rng.uniform(0.25, 1.0)
        cw = max(16, int(w * side * rng.uniform(0.75, 1.0)))
        ch = max(16, int(h * side * rng.uniform(0.75, 1.0)))
        x, y = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
        crop = scene.crop((x, y, x + cw, y + ch))
        if rng.random() < 0.5:
            crop = ImageOps.mirror(crop)
        images.append(crop)
        if rng.random() < COPIED:
            images.extend(copies(crop))
    images = images[: n - len(real)]
    phash, dhash = hash_batch(images)
    # The batch computation is imagehash's: check it on a sample.
    for k in rng.choice(len(images), size=min(200, len(images)), replace=False):
        expected = perceptual_hashes(images[k])
        assert (expected.phash, expected.dhash) == (int(phash[k]), int(dhash[k])), k
    phash = np.concatenate([phash, np.array([h.phash for h in real], dtype=np.uint64)])
    dhash = np.concatenate([dhash, np.array([h.dhash for h in real], dtype=np.uint64)])
    order = rng.permutation(n)
    return phash[order], dhash[order]


def uniform_hashes(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """n random hashes, a share of them copies of others with 0-10 bits flipped (both)."""
    rng = np.random.default_rng(seed)
    phash = rng.integers(0, 2**64, size=n, dtype=np.uint64)
    dhash = rng.integers(0, 2**64, size=n, dtype=np.uint64)
    copied = rng.choice(n, size=int(n * COPIED * 3 / (1 + 3 * COPIED)), replace=False)
    for k in copied:
        source = int(rng.integers(n))
        flips = rng.choice(64, size=int(rng.integers(0, 11)), replace=False)
        mask = np.uint64(sum(1 << int(b) for b in flips))
        phash[k], dhash[k] = phash[source] ^ mask, dhash[source] ^ mask
    return phash, dhash


# --- the two searches --------------------------------------------------------------------


def as_items(phash, dhash) -> list[tuple[int, PerceptualHashes]]:
    """What `likeness dedup` hands the search: (key, hashes) per image."""
    pairs = zip(phash.tolist(), dhash.tolist(), strict=True)
    return [(k, PerceptualHashes(p, d)) for k, (p, d) in enumerate(pairs)]


def index_pairs(items, pmax, dmax) -> set[tuple[int, int]]:
    """The product's search, through its public entry point."""
    return {(a, b) for a, b, _ in near_pairs(items, pmax, dmax)}


def all_pairs(phash, dhash, pmax, dmax, blocks=None, rows=64) -> set[tuple[int, int]]:
    """Every pair compared, 64 rows at a time against every later hash; only the row blocks
    numbered in `blocks` when given."""
    n = len(phash)
    found = set()
    for block in range(0, (n + rows - 1) // rows) if blocks is None else blocks:
        start = block * rows
        close = np.bitwise_count(phash[start : start + rows, None] ^ phash[None, start:]) <= pmax
        r, c = np.nonzero(close)
        r, c = r + start, c + start
        keep = (r < c) & (np.bitwise_count(dhash[r] ^ dhash[c]) <= dmax)
        found.update(zip(r[keep].tolist(), c[keep].tolist(), strict=True))
    return found


def timed(fn, repeat: int) -> tuple[float, float, object]:
    """Median wall and CPU seconds of `repeat` calls (both searches run on one thread, so
    CPU time is what an idle core would take), and the last result."""
    walls, cpus, result = [], [], None
    for _ in range(repeat):
        start, cpu = time.perf_counter(), time.process_time()
        result = fn()
        walls.append(time.perf_counter() - start)
        cpus.append(time.process_time() - cpu)
    return statistics.median(walls), statistics.median(cpus), result


def measure(name: str, n: int, args, index_times: dict) -> None:
    settings = DedupSettings()
    pmax, dmax = settings.phash_max_distance, settings.dhash_max_distance
    start = time.perf_counter()
    phash, dhash = (photo_hashes if name == "photos" else uniform_hashes)(n)
    made = time.perf_counter() - start
    from likeness.curate.hamming_join import close_pairs

    work: dict[str, int] = {}
    close_pairs(phash, pmax, dhash, dmax, work=work)
    items = as_items(phash, dhash)
    t_index, c_index, found = timed(lambda: index_pairs(items, pmax, dmax), args.repeat)
    index_times[(name, n)] = c_index
    total_pairs = n * (n - 1) // 2
    print(f"[{name}] {n:,} hashes (made in {made:.0f} s), pHash <= {pmax}, dHash <= {dmax}")
    print(f"  index ({work['blocks']} blocks):    {t_index:8.3f} s wall, {c_index:8.3f} s CPU, "
          f"{len(found):,} pairs; compared {work['compared']:,} pairs "
          f"({100 * work['compared'] / total_pairs:.3f}% of all)")  # fmt: skip
    row_blocks = (n + 63) // 64
    if row_blocks <= args.sample:
        t_all, c_all, brute = timed(lambda: all_pairs(phash, dhash, pmax, dmax), 1)
        same = brute == found
        print(f"  numpy all-pairs:       {t_all:8.3f} s wall, {c_all:8.3f} s CPU, "
              f"{len(brute):,} pairs")  # fmt: skip
        print(f"  all-pairs / index: {t_all / t_index:.1f}x wall, {c_all / c_index:.1f}x CPU; "
              f"same pairs (every pair compared): {same}")  # fmt: skip
    else:
        sampled = np.linspace(0, row_blocks - 1, args.sample).round().astype(int).tolist()
        t_part, c_part, brute = timed(lambda: all_pairs(phash, dhash, pmax, dmax, sampled), 1)
        t_all, c_all = (t * row_blocks / len(sampled) for t in (t_part, c_part))
        rows = {r for b in sampled for r in range(64 * b, min(n, 64 * b + 64))}
        mine = {(a, b) for a, b in found if a in rows}
        same = brute == mine
        print(f"  numpy all-pairs:       {t_all:8.1f} s wall, {c_all:8.1f} s CPU, extrapolated "
              f"from {len(sampled)} of {row_blocks:,} row blocks, evenly spaced "
              f"({c_part:.2f} s CPU measured)")  # fmt: skip
        print(f"  all-pairs / index: {t_all / t_index:.0f}x wall, {c_all / c_index:.0f}x CPU "
              f"(extrapolated); same pairs on the sampled rows ({len(brute):,} pairs): "
              f"{same}")  # fmt: skip
    if not same:
        raise SystemExit("MISMATCH: the index and the all-pairs comparison disagree")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--sets", nargs="+", choices=["photos", "uniform"],
                        default=["photos", "uniform"])  # fmt: skip
    parser.add_argument("--sample", type=int, default=200,
                        help="row blocks of the all-pairs baseline measured at large sizes")  # fmt: skip
    parser.add_argument("--repeat", type=int, default=3, help="index runs (median)")
    args = parser.parse_args()
    index_times: dict = {}
    for name in args.sets:
        for n in args.sizes:
            measure(name, n, args, index_times)
        if len(args.sizes) > 1:
            lo, hi = min(args.sizes), max(args.sizes)
            growth = index_times[(name, hi)] / index_times[(name, lo)]
            print(f"  [{name}] index CPU time x{growth:.1f} for x{hi / lo:.0f} the hashes "
                  f"(all pairs: x{(hi / lo) ** 2:.0f})")  # fmt: skip


if __name__ == "__main__":
    main()
