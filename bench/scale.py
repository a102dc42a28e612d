"""Benchmark: one sweep on two ComfyUI test servers through Ray workers against the same sweep
on one server, and Ray's own cost per task against a plain loop, in the same run.

Part 1. The ComfyUI test server (tests/engines/comfyui/fake_server.py) runs one prompt at a
time, like ComfyUI, and sleeps `--seconds` per image (spread over the sampler's steps): it
stands for a GPU that takes a fixed time per image. The same spec (`--images` cells) runs as a
whole sweep (generate, store, score, rank) three ways, each on fresh servers and a fresh
workspace: the comfyui engine in this process on one server (baseline: a run today), a pool of
one Ray worker on one server, and a pool of two workers on two servers (candidate; target
>= 1.8x the baseline's images per second).

Part 2. `--tasks` calls of a task that sleeps `--task-ms` and returns a PNG-sized payload
(`--payload-kb`), first in a plain loop here, then through a pool of one Ray worker: the
difference per task is what Ray (and the pool) add to every image.

Ray's start-up and the workers' start are timed apart and left out of both ratios.

    python bench/scale.py [--images 12] [--seconds 1.0] [--tasks 200] [--task-ms 5]
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "engines" / "comfyui"))

from fake_server import FakeComfyUI  # noqa: E402

from likeness.config import ScaleSettings  # noqa: E402
from likeness.curate.ingest import Ingester  # noqa: E402
from likeness.data import FACES  # noqa: E402
from likeness.evaluate.scorer import WorkspaceScorer  # noqa: E402
from likeness.evaluate.sweep import run_sweep  # noqa: E402
from likeness.evaluate.sweep_spec import SweepSpec, spec_from_dict  # noqa: E402
from likeness.workspace import Workspace  # noqa: E402

STEPS = 4


def make_spec(images: int) -> SweepSpec:
    return spec_from_dict(
        {
            "name": "bench",
            "seeds": list(range(1, images + 1)),
            "prompts": ["portrait photo of a man"],
            "base": {
                "engine": "comfyui",
                "model": "tiny_sd15_slim.safetensors",
                "family": "sd15",
                "width": 64,
                "height": 64,
                "steps": STEPS,
                "refiner": {"enabled": False},
            },
        }
    )


def workspace(folder: Path, name: str) -> tuple[Workspace, WorkspaceScorer]:
    """A workspace with one source photo, its analysis already done (not part of a timing)."""
    ws = Workspace.create(folder / name, name="Barack", class_word="man")
    sha = Ingester(ws, origin="source").ingest_file(FACES / "obama.jpg").sha256
    scorer = WorkspaceScorer(ws)
    scorer.score([sha])
    return ws, scorer


def timed_sweep(
    args: argparse.Namespace, folder: Path, name: str, spec: SweepSpec, servers: int, how: str
) -> float:
    """Seconds for the whole sweep on fresh servers (their history would answer a repeat)."""
    from likeness.engines.comfyui import ComfyUIEngine
    from likeness.scale.engines import build_engine_pool

    ws, scorer = workspace(folder, name)
    delay = args.seconds / STEPS
    fakes = [FakeComfyUI(step_delay=delay) for _ in range(servers)]
    for fake in fakes:
        fake.start()
    try:
        if how == "here":
            engine = ComfyUIEngine(fakes[0].url)
        else:
            start = time.perf_counter()
            engine = build_engine_pool(
                "comfyui", ScaleSettings(), comfy_urls=[f.url for f in fakes]
            )
            print(f"  {name}: {servers} worker(s) started in {time.perf_counter() - start:.2f} s")
        try:
            start = time.perf_counter()
            result = run_sweep(ws, spec, engine, scorer)
            took = time.perf_counter() - start
        finally:
            engine.close()
        assert result.finished == result.total == len(spec.cells()), result.to_json()
    finally:
        for fake in fakes:
            fake.stop()
        ws.close()
    return took


def plain_task(state: object, payload: tuple[float, int]) -> bytes:
    seconds, size = payload
    time.sleep(seconds)
    return bytes(size)


def task_overhead(args: argparse.Namespace) -> tuple[float, float]:
    """(plain loop, pool) seconds per task."""
    from likeness.scale.pool import TaskPool, WorkerPlan

    payload = (args.task_ms / 1000, args.payload_kb * 1024)
    start = time.perf_counter()
    for _ in range(args.tasks):
        plain_task(None, payload)
    plain = (time.perf_counter() - start) / args.tasks
    pool = TaskPool([WorkerPlan("w1", "bench", _no_state, {"num_cpus": 0})])
    pool.start()
    try:
        for i in range(args.tasks):
            pool.submit(i, plain_task, payload)
        start = time.perf_counter()
        done = sum(1 for o in pool.completed() if o.error is None and len(o.value) == payload[1])
        pooled = (time.perf_counter() - start) / args.tasks
    finally:
        pool.close()
    assert done == args.tasks
    return plain, pooled


def _no_state(info: object) -> None:
    return None


def main(args: argparse.Namespace) -> None:
    import ray

    from likeness.scale.cluster import quiet_driver

    start = time.perf_counter()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR)
    quiet_driver(True)
    print(f"Ray start-up (local, 2 CPUs): {time.perf_counter() - start:.2f} s")
    spec = make_spec(args.images)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            # 1. Same spec: one server here, one server through Ray, two servers through Ray.
            rounds: dict[str, list[float]] = {"here": [], "pool1": [], "pool2": []}
            for r in range(args.rounds):
                rounds["here"].append(timed_sweep(args, folder, f"here{r}", spec, 1, "here"))
                rounds["pool1"].append(timed_sweep(args, folder, f"pool1-{r}", spec, 1, "pool"))
                rounds["pool2"].append(timed_sweep(args, folder, f"pool2-{r}", spec, 2, "pool"))
            n = len(spec.cells())
            here, one, two = (statistics.median(rounds[k]) for k in ("here", "pool1", "pool2"))
            print(
                f"sweep of {n} images, {args.seconds:.2f} s per image per server "
                f"({args.rounds} round(s), medians; store and score included)"
            )
            print(f"  one server, engine here:     {n / here:6.2f} images/s ({here:.2f} s)")
            print(f"  one server, 1 Ray worker:    {n / one:6.2f} images/s ({one:.2f} s)")
            print(f"  two servers, 2 Ray workers:  {n / two:6.2f} images/s ({two:.2f} s)")
            ratio = here / two
            print(
                f"two servers/one server: {ratio:.2f}x images per second "
                f"(target >= 1.8: {'ok' if ratio >= 1.8 else 'under'}); "
                f"1 worker/engine here: {here / one:.2f}x"
            )
        # 2. Ray's own cost per task.
        plain, pooled = task_overhead(args)
        print(
            f"{args.tasks} tasks of {args.task_ms:g} ms returning {args.payload_kb} KB: "
            f"plain loop {plain * 1000:.2f} ms/task, 1 Ray worker {pooled * 1000:.2f} ms/task"
        )
        print(
            f"Ray overhead: {(pooled - plain) * 1000:.2f} ms per task "
            f"(pool/plain: {pooled / plain:.2f}x)"
        )
    finally:
        ray.shutdown()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=12, help="cells in the sweep")
    parser.add_argument("--seconds", type=float, default=1.0, help="seconds per image per server")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--tasks", type=int, default=200)
    parser.add_argument("--task-ms", type=float, default=5.0)
    parser.add_argument("--payload-kb", type=int, default=200)
    main(parser.parse_args())
