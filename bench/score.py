"""Benchmark: the scoring pipeline against a plain single-process dlib loop, and rescoring
from the analysis cache, on the same images in the same run.

Baseline (what a script built on dlib alone does, with face_recognition's defaults): for each
image, HOG detection on the full-size image upsampled once, 68 landmarks and the 128-D
descriptor of every face, in one process; verdict = the largest face within 0.6 of the
reference descriptor.

Both timings include loading the models. Candidate: `likeness.metrics.score_images` (detection on a <= 640 px copy with verification,
landmarks and descriptor at full size, plus head pose, expression, body pose and every quality
metric), one process per core, cold (no cache). Then the same call against a workspace
database twice: the first fills the cache, the second is timed as "rescoring from cache".

Image sets (both measured unless --set says otherwise):
- `samples`: the sample photos, the astronaut, and mirrored copies of each (18 images, 0.01-3.3
  MP; one group photo with six faces, twice).
- `upscaled`: the nine originals enlarged 2x with Lanczos, as a generation's upscale pass leaves
  them (0.05-13 MP).

    python bench/score.py [--set samples|upscaled|both] [--workers N] [--no-body-pose]
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

import likeness

SAMPLES = Path(likeness.__file__).parent / "data" / "samples" / "faces"


def make_images(folder: Path, which: str) -> list[Path]:
    from skimage import data

    folder.mkdir(parents=True, exist_ok=True)
    sources = sorted(p for p in SAMPLES.iterdir() if p.suffix in (".jpg", ".png"))
    Image.fromarray(data.astronaut()).save(folder / "astronaut.png")
    sources.append(folder / "astronaut.png")
    paths = []
    for src in sources:
        image = Image.open(src).convert("RGB")
        if which == "upscaled":
            target = folder / f"{src.stem}_2x.png"
            image.resize((image.width * 2, image.height * 2), Image.Resampling.LANCZOS).save(target)
            paths.append(target)
            continue
        target = folder / src.name
        if src.parent != folder:
            target.write_bytes(src.read_bytes())
        paths.append(target)
        mirrored = folder / f"mirrored_{src.stem}.png"
        ImageOps.mirror(image).save(mirrored)
        paths.append(mirrored)
    return paths


def load_baseline_models() -> tuple[float, tuple]:
    """Seconds to load the three dlib models the plain loop uses, and the models."""
    import dlib

    start = time.perf_counter()
    spec = importlib.util.find_spec("face_recognition_models")
    folder = Path(list(spec.submodule_search_locations)[0]) / "models"
    models = (
        dlib.get_frontal_face_detector(),
        dlib.shape_predictor(str(folder / "shape_predictor_68_face_landmarks.dat")),
        dlib.face_recognition_model_v1(str(folder / "dlib_face_recognition_resnet_model_v1.dat")),
    )
    return time.perf_counter() - start, models


def baseline(paths: list[Path], reference: Path, models: tuple) -> tuple[float, list[bool]]:
    """Seconds (models already loaded) and verdicts of the plain loop."""
    detector, shape, encoder = models
    start = time.perf_counter()

    def faces(path: Path) -> list[tuple[float, np.ndarray]]:
        img = np.asarray(Image.open(path).convert("RGB"))
        out = []
        for rect in detector(img, 1):
            landmarks = shape(img, rect)
            out.append((rect.area(), np.asarray(encoder.compute_face_descriptor(img, landmarks))))
        return out

    ref = max(faces(reference), key=lambda f: f[0])[1]
    verdicts = []
    for path in paths:
        found = faces(path)
        if not found:
            verdicts.append(False)
            continue
        biggest = max(found, key=lambda f: f[0])[1]
        verdicts.append(bool(np.linalg.norm(biggest - ref) <= 0.6))
    return time.perf_counter() - start, verdicts


def cpu_seconds() -> float:
    """CPU time of this process (all threads) plus the scoring fork server and the workers it
    has reaped: what the pipeline cost in total, whatever else the machine was doing."""
    import multiprocessing.forkserver as forkserver
    import resource

    usage = resource.getrusage(resource.RUSAGE_SELF)
    total = usage.ru_utime + usage.ru_stime
    pid = getattr(forkserver._forkserver, "_forkserver_pid", None)
    if pid:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            ticks = os.sysconf("SC_CLK_TCK")
            # utime, stime, cutime, cstime are fields 14-17 (1-based) of /proc/PID/stat.
            total += sum(int(v) for v in fields[11:15]) / ticks
        except (OSError, IndexError, ValueError):
            pass
    return total


def pipeline(paths, reference, instruments, workers, conn=None):
    from likeness.metrics import score_images

    start = time.perf_counter()
    run = score_images(paths, [reference], instruments=instruments, conn=conn, workers=workers)
    return time.perf_counter() - start, run


def measure(name: str, paths: list[Path], reference: Path, instruments, args, folder: Path):
    """Cold: the first call in this process (the pipeline loads its models and boots its fork
    server; the plain loop's model loading is added to its time). Warm: later calls, models
    loaded on both sides (median of --repeat runs)."""
    from likeness.store.db import connect

    n = len(paths)
    load_time, models = load_baseline_models()
    base_times, runs = [], []
    base_cpu, pipe_cpu = [], []
    for _ in range(1 + args.repeat):
        c = cpu_seconds()
        t, base_verdicts = baseline(paths, reference, models)
        base_cpu.append(cpu_seconds() - c)
        base_times.append(t)
        c = cpu_seconds()
        runs.append(pipeline(paths, reference, instruments, args.workers))
        time.sleep(0.2)  # let the fork server reap the workers before reading its counters
        pipe_cpu.append(cpu_seconds() - c)
    conn = connect(folder / f"bench-{name}.db")
    pipeline(paths, reference, instruments, args.workers, conn)  # fills the cache
    cache_times = []
    for _ in range(max(3, args.repeat)):
        t, cached = pipeline(paths, reference, instruments, args.workers, conn)
        assert cached.analyzed == 0, "the second run should read everything from the cache"
        cache_times.append(t)
    conn.close()
    cold_base, cold = base_times[0] + load_time, runs[0][0]
    warm_base = statistics.median(base_times[1:])
    warm = statistics.median(t for t, _ in runs[1:])
    cache_t = statistics.median(cache_times)
    verdicts = [[s.passed for s in run.scores] for _, run in runs]
    same = (
        all(v == base_verdicts for v in verdicts)
        and [s.passed for s in cached.scores] == base_verdicts
    )
    print(f"[{name}] {n} images")
    print(
        f"  plain dlib loop, cold / warm:      {n / cold_base:7.2f} / {n / warm_base:7.2f} images/s"
    )
    print(f"  likeness score, cold / warm:       {n / cold:7.2f} / {n / warm:7.2f} images/s")
    print(f"  likeness score, from cache:        {n / cache_t:7.1f} images/s")
    print(f"  pipeline/plain: cold {cold_base / cold:.2f}x, warm {warm_base / warm:.2f}x")
    print(f"  cache/plain: {warm_base / cache_t:.0f}x   cache/pipeline: {warm / cache_t:.0f}x")
    b_cpu, p_cpu = statistics.median(base_cpu[1:]), statistics.median(pipe_cpu[1:])
    print(
        f"  CPU per image (warm, all processes): plain {1000 * b_cpu / n:.0f} ms, pipeline "
        f"{1000 * p_cpu / n:.0f} ms; on an idle machine with {os.cpu_count()} cores the "
        f"pipeline could reach {b_cpu / p_cpu * (args.workers or os.cpu_count()):.1f}x"
    )
    print(f"  verdicts equal: {same} ({sum(base_verdicts)} pass of {n})")
    if not same:
        for p, a, b in zip(paths, base_verdicts, verdicts[0], strict=True):
            if a != b:
                print(f"    differs: {p.name}: plain {a}, pipeline {b}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--set", choices=["samples", "upscaled", "both"], default="both")
    parser.add_argument("--workers", type=int, default=None, help="default: one per core")
    parser.add_argument("--no-body-pose", action="store_true", help="skip MediaPipe BlazePose")
    parser.add_argument("--repeat", type=int, default=2, help="warm runs of each (median)")
    args = parser.parse_args()

    from likeness.metrics import Instruments
    from likeness.metrics.body import default_pose_backend

    instruments = Instruments(pose=None if args.no_body_pose else default_pose_backend())
    print(
        f"{os.cpu_count()} cores, workers={args.workers or os.cpu_count()}, body pose="
        f"{'off' if instruments.pose is None else instruments.pose.name}, "
        f"load average {os.getloadavg()[0]:.1f}"
    )
    sets = ["samples", "upscaled"] if args.set == "both" else [args.set]
    with tempfile.TemporaryDirectory() as tmp:
        for name in sets:
            folder = Path(tmp) / name
            paths = make_images(folder, name)
            reference = paths[
                [p.stem for p in paths].index("obama" if name == "samples" else "obama_2x")
            ]
            measure(name, paths, reference, instruments, args, folder)


if __name__ == "__main__":
    main()
