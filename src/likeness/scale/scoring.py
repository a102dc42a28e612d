"""Scoring workers: the face models loaded once per worker, images analysed on the cluster.

:class:`RayAnalyzer` is an ``analyze`` for :func:`likeness.metrics.score_images`: the images
that are not in the analysis cache go to the workers (as bytes, so a worker on another machine
needs no shared disk), each worker runs the same per-file analysis as a local run, and the
driver stores each analysis in the cache as it arrives.

Example::

    analyzer = build_score_pool(settings, instruments, workers=4)
    try:
        run = score_images(paths, refs, instruments=instruments, conn=ws.db, analyze=analyzer)
    finally:
        analyzer.close()
"""

from __future__ import annotations

import pickle
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from likeness.config import ScaleSettings
from likeness.metrics.analysis import Instruments
from likeness.scale.cluster import ScaleError, connect
from likeness.scale.pool import TaskPool, WorkerInfo, WorkerPlan, WorkerStats

Deliver = Callable[[str, dict[str, Any] | str], None]


@dataclass(frozen=True)
class ScoreSetup:
    """Builds a worker's instruments from the driver's (pickled, as the local pool does)."""

    instruments: bytes

    def __call__(self, info: WorkerInfo) -> Instruments:
        import cv2

        cv2.setNumThreads(1)
        return pickle.loads(self.instruments)


def analyze_task(instruments: Instruments, payload: tuple[str, str, bytes]) -> dict[str, Any] | str:
    """The analysis dict of one image (or a one-line error naming the driver's path), by the
    same function a local run uses."""
    from likeness.metrics.workers import analyze_file

    path, sha, data = payload
    with tempfile.TemporaryDirectory(prefix="likeness-score-") as folder:
        local = Path(folder) / (Path(path).name or "image")
        local.write_bytes(data)
        result = analyze_file(local, sha, instruments)
    return result.replace(str(local), path) if isinstance(result, str) else result


def _with_bytes(payload: tuple[str, str]) -> tuple[str, str, bytes]:
    path, sha = payload
    return path, sha, Path(path).read_bytes()


class RayAnalyzer:
    """Analyses on Ray workers; see the module docstring."""

    def __init__(self, pool: TaskPool, version: str) -> None:
        self.pool = pool
        self.version = version

    def __call__(self, todo: dict[str, Path], instruments: Instruments, deliver: Deliver) -> None:
        if instruments.version != self.version:
            raise ValueError(
                f"instruments: version {instruments.version} differs from the workers' "
                f"{self.version}; build the pool with the instruments you score with"
            )
        for sha, path in todo.items():
            self.pool.submit(
                sha, analyze_task, (str(path), sha), label=path.name, prepare=_with_bytes
            )
        for outcome in self.pool.completed():
            if outcome.error is not None:
                path = outcome.payload[0]
                deliver(str(outcome.tag), f"{path}: analysis failed: {outcome.error}")
            else:
                deliver(str(outcome.tag), outcome.value)

    def stats(self) -> list[WorkerStats]:
        return self.pool.stats()

    def close(self) -> None:
        """End the workers (and the Ray this run started)."""
        self.pool.close()


def build_score_pool(
    settings: ScaleSettings,
    instruments: Instruments,
    *,
    address: str | None = None,
    workers: int | None = None,
    on_notice: Callable[[str], None] | None = None,
) -> RayAnalyzer:
    """Connect to Ray and start ``workers`` scoring workers (else ``settings.workers``, else
    one per CPU of the cluster), one CPU each."""
    disconnect = connect(address or settings.address or "local")
    try:
        import ray

        count = workers or settings.workers or max(1, int(ray.cluster_resources().get("CPU", 1)))
        setup = ScoreSetup(pickle.dumps(instruments))
        plans = [WorkerPlan(f"s{i}", None, setup, {"num_cpus": 1}) for i in range(1, count + 1)]
        pool = TaskPool(
            plans, max_retries=settings.max_retries, on_notice=on_notice, on_close=disconnect
        )
    except BaseException:
        disconnect()
        raise
    try:
        pool.start()
        if not pool.live:
            raise ScaleError("no scoring worker started: " + "; ".join(pool.notices))
    except BaseException:
        pool.close()
        raise
    return RayAnalyzer(pool, instruments.version)
