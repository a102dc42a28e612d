"""Benchmark: `likeness score` against a plain single-process dlib loop, on the same
photo-sized images in the same run, with the verdicts of both compared image by image.

Baseline (what a script built on dlib alone does, with face_recognition's defaults): for each
image, HOG detection on the full-size image upsampled once, 68 landmarks and the 128-D
descriptor of every face, in one process; verdict = the largest face within 0.6 of the
reference's descriptor.

Candidate: `likeness score` (detection on a shared <= 640 px preview with verification,
landmarks and descriptor at full size, plus head pose, expression, body pose and every quality
metric), one process per core.

- cold: each side in a fresh Python process, from start to exit: `python -m likeness score
  FOLDER --refs REF --json` against this script's `--plain-loop FOLDER REF`.
- warm: in this process, models loaded on both sides (the scoring fork server and its workers
  are up, the plain loop's models are loaded); the two run alternately --repeat times, and the
  ratio is the median of the back-to-back pairs.
- from cache: `score_images` against a workspace database that already holds the analyses.

CPU time is counted for every process (resource usage of this process and of all its
descendants, the fork server's workers included), so that the numbers mean something on a
machine that is busy with other work. "Two idle cores allow" projects the ratio from CPU time:
warm, the plain loop's CPU time over the pipeline's, times the number of workers; cold, the
plain loop's CPU time over the CLI's serial part plus the workers' CPU time shared among the
workers, where the serial part is all of the CLI process's CPU time and the fork server's own
(its imports and model loading, before any worker can start): a lower bound, since the CLI
process also works while the workers do.

Image sets (--set):
- `photos` (default): the sample photos and scikit-image's astronaut, each enlarged with
  Lanczos to about 2 MP (long side 1600-2400 px) and saved as JPEG q90, plus a mirrored copy of
  each (18 images; one group photo with six faces, twice).
- `samples`: the sample photos as they are, plus mirrored copies (0.01-3.3 MP, PNG and JPEG).
- `--images N` adds cropped variants (1%, 2%, ... cut off two edges, JPEG q90) up to N images:
  the cold ratio grows with the folder, since both sides pay their start-up once.

    python bench/score.py [--set photos|samples|both] [--images N] [--workers N] [--repeat N]
        [--no-body-pose]
"""

from __future__ import annotations

import argparse
import ctypes
import importlib.util
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

import likeness

SAMPLES = Path(likeness.__file__).parent / "data" / "samples" / "faces"
PHOTO_PIXELS = 2.0e6
PHOTO_SIDES = (1600, 2400)


def make_images(folder: Path, which: str, count: int = 0) -> list[Path]:
    """The image set `which` in `folder`, mirrored copies included; with `count` above that,
    cropped variants of them until there are `count` images (a folder the size people score)."""
    from skimage import data

    folder.mkdir(parents=True, exist_ok=True)
    sources = [
        (p.stem, p.suffix, Image.open(p).convert("RGB"))
        for p in sorted(SAMPLES.iterdir())
        if p.suffix in (".jpg", ".png")
    ]
    sources.append(("astronaut", ".png", Image.fromarray(data.astronaut())))
    paths = []
    for stem, suffix, image in sources:
        if which == "photos":
            image, suffix = photo_sized(image), ".jpg"
        for name, version in ((stem, image), (f"mirrored_{stem}", ImageOps.mirror(image))):
            path = folder / f"{name}{suffix}"
            if suffix == ".jpg" and which == "samples" and name == stem:
                path.write_bytes((SAMPLES / f"{stem}{suffix}").read_bytes())  # as shipped
            elif suffix == ".jpg":
                version.save(path, quality=90)
            else:
                version.save(path)
            paths.append(path)
    base = list(paths)
    for i in range(max(0, count - len(base))):
        paths.append(cropped_variant(base[i % len(base)], i // len(base) + 1))
    return paths


def cropped_variant(path: Path, k: int) -> Path:
    """A copy of `path` with k% cut off two of its edges (which two turns with k): other
    bytes and pixels, the same faces, so that nothing is served from a cache."""
    image = Image.open(path).convert("RGB")
    dx, dy = round(image.width * k / 100), round(image.height * k / 100)
    left, top = (dx, dy) if k % 2 else (0, 0)
    box = (left, top, left + image.width - dx, top + image.height - dy)
    out = path.with_name(f"{path.stem}_crop{k}.jpg")
    image.crop(box).save(out, quality=90)
    return out


def photo_sized(image: Image.Image) -> Image.Image:
    """`image` resized with Lanczos to about 2 MP, its long side kept within 1600-2400 px."""
    factor = math.sqrt(PHOTO_PIXELS / (image.width * image.height))
    long_side = max(image.size) * factor
    factor *= min(max(long_side, PHOTO_SIDES[0]), PHOTO_SIDES[1]) / long_side
    size = (round(image.width * factor), round(image.height * factor))
    return image.resize(size, Image.Resampling.LANCZOS)


# --- the plain loop ----------------------------------------------------------------------


def load_baseline_models() -> tuple:
    import dlib

    spec = importlib.util.find_spec("face_recognition_models")
    folder = Path(list(spec.submodule_search_locations)[0]) / "models"
    return (
        dlib.get_frontal_face_detector(),
        dlib.shape_predictor(str(folder / "shape_predictor_68_face_landmarks.dat")),
        dlib.face_recognition_model_v1(str(folder / "dlib_face_recognition_resnet_model_v1.dat")),
    )


def plain_loop(paths: list[Path], reference: Path, models: tuple) -> list[float | None]:
    """Distance of each image's largest face to the reference's (None: no face)."""
    detector, shape, encoder = models

    def largest_face(path: Path) -> np.ndarray | None:
        img = np.asarray(Image.open(path).convert("RGB"))
        faces = []
        for rect in detector(img, 1):
            landmarks = shape(img, rect)
            faces.append((rect.area(), np.asarray(encoder.compute_face_descriptor(img, landmarks))))
        return max(faces, key=lambda f: f[0])[1] if faces else None

    ref = largest_face(reference)
    distances = []
    for path in paths:
        face = largest_face(path)
        distances.append(None if face is None else float(np.linalg.norm(face - ref)))
    return distances


def verdict(distance: float | None) -> bool:
    return distance is not None and distance <= 0.6


def plain_loop_main(folder: Path, reference: Path) -> None:
    """`--plain-loop`: the whole plain loop in this (fresh) process, as JSON on stdout."""
    paths = sorted(p for p in folder.iterdir() if p.suffix in (".jpg", ".png"))
    distances = plain_loop(paths, reference, load_baseline_models())
    print(json.dumps({p.name: d for p, d in zip(paths, distances, strict=True)}))


# --- measuring ---------------------------------------------------------------------------


def become_subreaper() -> None:
    """Adopt orphaned descendants (the scoring fork server outlives the CLI process by a
    moment), so that waiting for them adds their CPU time to this process's children."""
    PR_SET_CHILD_SUBREAPER = 36
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)


def reap_orphans(timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            time.sleep(0.05)


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def own_cpu() -> float:
    """CPU time of this process (all threads), of the scoring fork server and of every
    process under it, the warm workers included (those that have exited as well)."""
    import multiprocessing.forkserver as forkserver

    usage = resource.getrusage(resource.RUSAGE_SELF)
    total = usage.ru_utime + usage.ru_stime
    server = getattr(forkserver._forkserver, "_forkserver_pid", None)
    if server:
        total += sum(_proc_cpu(pid) for pid in _descendants(server) | {server})
    return total


def _proc_stat(pid: int) -> list[str]:
    # Fields after the command name; utime, stime, cutime, cstime are fields 14-17 of
    # /proc/PID/stat (1-based), so 11-14 here, and the parent pid is field 4 (1 here).
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def _proc_cpu(pid: int) -> float:
    try:
        return sum(int(v) for v in _proc_stat(pid)[11:15]) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


def _descendants(root: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                children.setdefault(int(_proc_stat(int(entry.name))[1]), []).append(int(entry.name))
            except (OSError, IndexError, ValueError):
                continue
    found, todo = set(), [root]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


@dataclass
class Timing:
    wall: float
    cpu: float
    serial: float = 0.0
    """CPU time spent before any worker could start: the process itself and, for the scoring
    CLI, the fork server's own (imports and model loading)."""

    def idle(self, workers: int) -> float:
        """The wall time on `workers` idle cores: the serial part, then the rest side by side."""
        return self.serial + (self.cpu - self.serial) / workers


def run_fresh(command: list[str], cwd: Path) -> tuple[Timing, str]:
    """Wall and CPU time (the process and all its descendants) of a fresh process, and the
    serial part of it: the process's own CPU time (from wait4) plus the fork server's own
    (sampled from /proc every 50 ms while it runs; it works at start and then idles)."""
    cpu, start = children_cpu(), time.perf_counter()
    with tempfile.TemporaryFile("w+") as stdout, tempfile.TemporaryFile("w+") as stderr:
        proc = subprocess.Popen(command, cwd=cwd, stdout=stdout, stderr=stderr, text=True)
        server = 0.0
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            for child in _descendants(proc.pid):
                try:
                    if b"forkserver" in Path(f"/proc/{child}/cmdline").read_bytes():
                        fields = _proc_stat(child)
                        own = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
                        server = max(server, own)
                except (OSError, IndexError, ValueError):
                    continue
            time.sleep(0.05)
        proc.returncode = os.waitstatus_to_exitcode(status)
        wall = time.perf_counter() - start
        reap_orphans()
        stdout.seek(0)
        stderr.seek(0)
        if proc.returncode != 0:
            raise SystemExit(f"{' '.join(command[:4])} ... failed:\n{stderr.read()[-2000:]}")
        serial = usage.ru_utime + usage.ru_stime + server
        return Timing(wall, children_cpu() - cpu, serial), stdout.read()


def call_timed(fn) -> tuple[Timing, object]:
    """Wall and CPU time of one call of `fn`, and its result."""
    cpu, start = own_cpu(), time.perf_counter()
    result = fn()
    wall = time.perf_counter() - start
    time.sleep(0.3)  # let the fork server reap any worker that exits before reading counters
    return Timing(wall, own_cpu() - cpu), result


def median_timing(timings: list[Timing]) -> Timing:
    return Timing(
        statistics.median(t.wall for t in timings), statistics.median(t.cpu for t in timings)
    )


def interleaved(first, second, repeat: int) -> tuple[Timing, Timing, float, object]:
    """Median timings of `repeat` calls of each of `first` and `second`, alternating, after
    one call of each to warm up; the median of the pairwise wall-time ratios (each pair run
    back to back, so that a change in the machine's load hits both sides of a ratio alike);
    and `second`'s last result."""
    first(), second()
    a, b, ratios, result = [], [], [], None
    for _ in range(repeat):
        ta, _ = call_timed(first)
        tb, result = call_timed(second)
        a.append(ta)
        b.append(tb)
        ratios.append(ta.wall / tb.wall)
    return median_timing(a), median_timing(b), statistics.median(ratios), result


def measure(name: str, paths: list[Path], reference: Path, args, folder: Path) -> dict:
    from likeness.metrics import Instruments, score_images
    from likeness.metrics.body import default_pose_backend
    from likeness.store.db import connect

    n = len(paths)
    names = [p.name for p in paths]
    workers = args.workers or os.cpu_count() or 1
    # 1. Cold: both sides from a fresh process.
    plain_cmd = [sys.executable, str(Path(__file__).resolve()), "--plain-loop", str(folder),
                 str(reference)]  # fmt: skip
    score_cmd = [sys.executable, "-m", "likeness", "score", *map(str, paths), "--refs",
                 str(reference), "--json", "--workers", str(workers)]  # fmt: skip
    if args.no_body_pose:
        score_cmd.append("--no-body-pose")
    cold_plain, out = run_fresh(plain_cmd, folder)
    plain_distances = json.loads(out)
    cold_score, out = run_fresh(score_cmd, folder)
    cold_rows = {Path(r["path"]).name: r for r in json.loads(out)}
    # 2. Warm: in this process, models loaded on both sides.
    models = load_baseline_models()
    instruments = Instruments(pose=None if args.no_body_pose else default_pose_backend())
    warm_plain, warm_score, ratio_warm, run = interleaved(
        lambda: plain_loop(paths, reference, models),
        lambda: score_images(paths, [reference], instruments=instruments, workers=workers),
        args.repeat,
    )
    # 3. From the cache.
    conn = connect(folder / f"bench-{name}.db")
    score_images(paths, [reference], instruments=instruments, conn=conn, workers=workers)
    cache_runs = [
        call_timed(
            lambda: score_images(
                paths, [reference], instruments=instruments, conn=conn, workers=workers
            )
        )
        for _ in range(max(3, args.repeat))
    ]
    cached, cached_run = median_timing([t for t, _ in cache_runs]), cache_runs[-1][1]
    assert cached_run.analyzed == 0, "the second run should read everything from the cache"
    conn.close()
    # 4. Verdicts: the plain loop's, the CLI's (cold), the library's (warm, cached).
    plain = [verdict(plain_distances[k]) for k in names]
    cli = [bool(cold_rows[k]["pass"]) for k in names]
    warm = [s.passed for s in run.scores]
    from_cache = [s.passed for s in cached_run.scores]
    same = plain == cli == warm == from_cache
    gaps = {
        k: abs(plain_distances[k] - s.distance)
        for k, s in zip(names, run.scores, strict=True)
        if plain_distances[k] is not None and s.distance is not None
    }
    widest = max(gaps, key=gaps.get)
    ratio_cold = cold_plain.wall / cold_score.wall
    idle = warm_plain.cpu / warm_score.cpu * workers
    megapixels = [Image.open(p).width * Image.open(p).height / 1e6 for p in paths]
    print(f"[{name}] {n} images, {min(megapixels):.2f}-{max(megapixels):.2f} MP, "
          f"{workers} workers, load average {os.getloadavg()[0]:.1f}")  # fmt: skip
    print(f"  plain dlib loop, cold / warm:   {n / cold_plain.wall:6.2f} / "
          f"{n / warm_plain.wall:6.2f} images/s")  # fmt: skip
    print(f"  likeness score, cold / warm:    {n / cold_score.wall:6.2f} / "
          f"{n / warm_score.wall:6.2f} images/s")  # fmt: skip
    print(f"  likeness score, from cache:     {n / cached.wall:6.1f} images/s")
    print(f"  likeness score / plain dlib loop: {ratio_cold:.2f}x (cold), {ratio_warm:.2f}x (warm,"
          " median of back-to-back pairs)")  # fmt: skip
    print(f"  CPU per image, all processes: plain {1000 * cold_plain.cpu / n:.0f} ms cold, "
          f"{1000 * warm_plain.cpu / n:.0f} ms warm; likeness score {1000 * cold_score.cpu / n:.0f}"
          f" ms cold, {1000 * warm_score.cpu / n:.0f} ms warm")  # fmt: skip
    idle_cold = cold_plain.idle(1) / cold_score.idle(workers)
    print(f"  two idle cores allow: {idle:.1f}x warm, at least {idle_cold:.1f}x cold (all of "
          f"the CLI process's CPU time and the fork server's start-up, {cold_score.serial:.1f} s,"
          " counted in series; the workers side by side)")  # fmt: skip
    print(f"  verdicts equal: {same} ({sum(plain)} pass of {n}); distance vs plain loop: "
          f"median {statistics.median(gaps.values()):.3f}, max {gaps[widest]:.3f} ({widest})")  # fmt: skip
    if not same:
        for k, a, b, c in zip(names, plain, cli, warm, strict=True):
            if not a == b == c:
                print(f"    differs: {k}: plain {a}, cli {b}, library {c}")
    return {"cold": ratio_cold, "warm": ratio_warm, "idle": idle, "idle_cold": idle_cold,
            "same": same}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--set", choices=["photos", "samples", "both"], default="photos")
    parser.add_argument("--workers", type=int, default=None, help="default: one per core")
    parser.add_argument("--no-body-pose", action="store_true", help="skip MediaPipe BlazePose")
    parser.add_argument("--repeat", type=int, default=3, help="warm runs of each (median)")
    parser.add_argument(
        "--images",
        type=int,
        default=0,
        help="add cropped variants up to this many images (default: 18)",
    )
    parser.add_argument("--plain-loop", nargs=2, type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.plain_loop:
        plain_loop_main(*args.plain_loop)
        return
    become_subreaper()
    print(f"{os.cpu_count()} cores, body pose {'off' if args.no_body_pose else 'on'}")
    sets = ["photos", "samples"] if args.set == "both" else [args.set]
    with tempfile.TemporaryDirectory() as tmp:
        for name in sets:
            folder = Path(tmp) / name
            paths = make_images(folder, name, args.images)
            reference = folder / "obama.jpg"
            measure(name, paths, reference, args, folder)


if __name__ == "__main__":
    main()
