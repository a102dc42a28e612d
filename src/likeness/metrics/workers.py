"""Where analyses run: in this process, or in worker processes that keep their models warm.

With more than one worker, every image is analysed in a pool process and the calling process
only hands out paths and receives results, so it never loads a model. The pool comes from a
fork server: a fresh, single-threaded process that imported the analysis code and loaded the
dlib models once (`likeness.metrics.warm`), so each worker starts with those models in memory.
Workers are not forked from the calling process: forking a process whose threads hold locks
(MediaPipe, TFLite, torch) deadlocks the child. Each worker builds its instruments from a
pickled copy.

The pool outlives the call. Starting a worker costs about half a second of CPU (MediaPipe's
graph, the TFLite interpreter, touching the inherited models), so a program that scores
several batches (a sweep, the review app, a script) would pay it again for every batch; the
next call with the same instruments and worker count reuses the warm workers instead. They are
stopped at exit, by `shutdown_workers()`, or when a call asks for other instruments while no
call is using them (a call that finds the pool busy with other instruments gets a pool of its
own for its duration).

Measured with `bench/score.py` (photo-sized JPEGs): loading the models in the calling process
as well, to start analysing while the fork server boots, cost about as much CPU time as it
saved wall time, and on a busy machine it cost wall time too.
"""

from __future__ import annotations

import atexit
import collections
import concurrent.futures as cf
import contextlib
import multiprocessing
import os
import pickle
import threading
from collections.abc import Callable, Iterator
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from likeness.metrics.analysis import Instruments, analyze_image

Deliver = Callable[[str, "dict[str, Any] | str"], None]


def run_parallel(
    todo: dict[str, Path], instruments: Instruments, workers: int | None, deliver: Deliver
) -> None:
    """Analyse `todo` (sha -> path) over `workers` processes (default: one per core), calling
    `deliver(sha, analysis dict or one-line error)` per image, always from this thread (so
    `deliver` may use a database connection)."""
    size = max(1, workers or os.cpu_count() or 1)
    active = min(size, len(todo))
    pending = collections.deque(todo.items())
    if active <= 1:
        while pending:
            sha, path = pending.popleft()
            deliver(sha, analyze_file(path, sha, instruments))
        return
    # The pool has `size` workers whatever this batch needs (they start on demand), so a
    # smaller batch does not replace it.
    with _lease(instruments, size) as pool:
        running: dict[cf.Future, str] = {}
        try:
            while pending or running:
                # One image ahead per worker, so none waits for this thread.
                while pending and len(running) < 2 * active:
                    sha, path = pending.popleft()
                    try:
                        running[pool.executor.submit(_worker_analyze, str(path), sha)] = sha
                    except BrokenProcessPool as exc:  # a worker died earlier in this call
                        pool.broken = True
                        deliver(sha, f"analysis failed: {one_line(exc)}")
                if not running:
                    continue
                done, _ = cf.wait(running, return_when=cf.FIRST_COMPLETED)
                for future in done:
                    sha = running.pop(future)
                    try:
                        result = future.result()
                    except Exception as exc:  # a crashed worker fails its image, not the batch
                        pool.broken |= isinstance(exc, BrokenProcessPool)
                        result = f"analysis failed: {one_line(exc)}"
                    deliver(sha, result)
        finally:
            # On an error or Ctrl-C here the pool takes nothing more of this call's (its
            # running images finish, and their results are dropped).
            for future in running:
                future.cancel()


def analyze_file(path: Path, sha: str, instruments: Instruments) -> dict[str, Any] | str:
    """The analysis of one image file as a dict, or a one-line error naming the file."""
    from likeness.imaging import ImageRejected, open_image

    try:
        rgb = np.asarray(open_image(path).image)
    except ImageRejected as exc:
        return f"{path}: {exc.reason}"
    except OSError as exc:
        return f"{path}: cannot read ({exc})"
    try:
        return analyze_image(rgb, instruments, sha256=sha).to_dict()
    except Exception as exc:  # as in the pool: a failing instrument fails its image only
        return f"{path}: analysis failed: {one_line(exc)}"


def one_line(exc: BaseException) -> str:
    """`Type: message` on one line (OpenCV's messages span several)."""
    return " ".join(f"{type(exc).__name__}: {exc}".split())


def shutdown_workers() -> None:
    """Stop the worker processes kept between calls (done at exit too)."""
    global _SHARED
    with _LOCK:
        pool, _SHARED = _SHARED, None
    if pool is not None:
        pool.executor.shutdown(wait=True, cancel_futures=True)


# --- the pool kept between calls -----------------------------------------------------------


@dataclass
class _Pool:
    key: tuple[bytes, int]
    executor: cf.ProcessPoolExecutor
    users: int = 0
    broken: bool = False


_LOCK = threading.Lock()
_SHARED: _Pool | None = None


@contextlib.contextmanager
def _lease(instruments: Instruments, workers: int) -> Iterator[_Pool]:
    """The shared pool for these instruments (started or replaced as needed), or a private
    one when the shared pool is busy with other instruments."""
    global _SHARED
    blob = pickle.dumps(instruments)
    key = (blob, workers)
    retired = None
    with _LOCK:
        shared = _SHARED
        if shared is not None and (shared.key != key or shared.broken) and shared.users == 0:
            retired, shared = shared, None
        if shared is None:
            shared = _SHARED = _Pool(key, _executor(blob, workers))
        usable = shared.key == key and not shared.broken
        if usable:
            shared.users += 1
    if retired is not None:
        retired.executor.shutdown(wait=False, cancel_futures=True)
    if not usable:
        private = _Pool(key, _executor(blob, workers))
        try:
            yield private
        finally:
            private.executor.shutdown(wait=True, cancel_futures=True)
        return
    try:
        yield shared
    finally:
        with _LOCK:
            shared.users -= 1


def _executor(blob: bytes, workers: int) -> cf.ProcessPoolExecutor:
    if "forkserver" in multiprocessing.get_all_start_methods():
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(["likeness.metrics.warm"])
    else:
        context = multiprocessing.get_context("spawn")
    return cf.ProcessPoolExecutor(
        max_workers=workers, mp_context=context, initializer=_init_worker, initargs=(blob,)
    )


atexit.register(shutdown_workers)


# --- inside a worker -----------------------------------------------------------------------

_WORKER_INSTRUMENTS: Instruments | None = None


def _init_worker(blob: bytes) -> None:
    global _WORKER_INSTRUMENTS
    import cv2

    from likeness.faces.dlib_resnet import blas_threads

    # One process per core already: library threads would only fight over the same cores.
    cv2.setNumThreads(1)
    blas_threads(1)
    # TFLite and MediaPipe print start-up chatter straight to fd 2; a worker reports its
    # failures through return values, so its stderr can go.
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    os.close(devnull)
    _WORKER_INSTRUMENTS = pickle.loads(blob)


def _worker_analyze(path: str, sha: str) -> dict[str, Any] | str:
    assert _WORKER_INSTRUMENTS is not None
    return analyze_file(Path(path), sha, _WORKER_INSTRUMENTS)
