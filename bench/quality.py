"""Benchmark: what the quality instruments cost per image, against the dlib face analysis they
sit beside, on the same images in the same run.

Baseline: `DlibAnalyzer.analyze` (detection, 68 landmarks and descriptor of every face) on each
sample photo. Candidate: the quality instruments `analyze_image` runs on the same photo and its
subject face: `grain`, `sharpness` (given the grain, as the pipeline does), `skin_texture` and
`clipping`. Each is timed as the median of `--repeat` runs; the ratio is quality / faces.

    python bench/quality.py [--repeat 5]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

import likeness
from likeness.faces import Face

SAMPLES = Path(likeness.__file__).parent / "data" / "samples" / "faces"


def median_ms(fn: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def quality_costs(rgb: np.ndarray, face: Face | None, repeat: int) -> list[float]:
    """Milliseconds of grain, sharpness, skin texture and clipping on one image."""
    from likeness.metrics import quality, skin

    luma = quality.grey(rgb)
    noise = quality.grain(luma)
    box = face.box if face is not None else None
    return [
        median_ms(lambda: quality.grain(luma), repeat),
        median_ms(lambda: quality.sharpness(luma, box, noise=noise), repeat),
        median_ms(lambda: skin.skin_texture(luma, face.points, noise=noise), repeat)
        if face is not None
        else 0.0,
        median_ms(lambda: quality.clipping(luma, box), repeat),
    ]


def main() -> None:
    from skimage import data

    from likeness.faces import DlibAnalyzer, select_subject

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    images = {p.name: np.asarray(Image.open(p).convert("RGB")) for p in sorted(SAMPLES.iterdir())
              if p.suffix in (".jpg", ".png")}  # fmt: skip
    images["astronaut.png"] = data.astronaut()
    faces = DlibAnalyzer()
    faces.analyze(images["astronaut.png"])  # load the models outside the timings
    print(f"{'image':<26}{'MP':>6}{'faces ms':>10}{'grain':>8}{'sharp':>8}{'skin':>8}"
          f"{'clip':>8}{'quality/faces':>15}")  # fmt: skip
    totals = [0.0, 0.0]
    for name, rgb in images.items():
        found = faces.analyze(rgb)
        subject = select_subject(found, rgb.shape[1], rgb.shape[0])
        base = median_ms(lambda rgb=rgb: faces.analyze(rgb), args.repeat)
        costs = quality_costs(rgb, found[subject] if subject is not None else None, args.repeat)
        totals[0] += base
        totals[1] += sum(costs)
        print(f"{name:<26}{rgb.shape[0] * rgb.shape[1] / 1e6:>6.2f}{base:>10.1f}"
              + "".join(f"{c:>8.1f}" for c in costs) + f"{sum(costs) / base:>14.2f}x")  # fmt: skip
    print(f"quality instruments / dlib face analysis, all images: {totals[1] / totals[0]:.2f}x")


if __name__ == "__main__":
    main()
