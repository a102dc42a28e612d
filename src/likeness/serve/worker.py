"""Workers: claim queued jobs and run them, in threads of the server process or in worker
processes of their own (the default: scoring and generation then never hold the pages'
interpreter).

A worker opens the user's workspace for each job and closes it after; a job that raises is
`failed` with one line, a cancelled one keeps what it stored. A worker that is stopped
mid-job leaves the row `running`; the next start puts it back in the queue.

Example (what `likeness serve` does)::

    workers = start_workers(root, settings)      # processes or threads, per settings
    ...
    workers.stop()
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import sqlite3
import threading
import traceback
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Protocol

from likeness.serve import queue
from likeness.serve.accounts import get_user_by_id
from likeness.serve.audit import record
from likeness.serve.engines import EngineProvider
from likeness.serve.policy import PathPolicy
from likeness.serve.serverdb import open_server_db
from likeness.serve.settings import ServeSettings, load_serve_settings
from likeness.serve.work import (
    RUNNERS,
    JobCancelled,
    JobContext,
    Runner,
    Services,
    WorkerStopping,
    error_line,
)
from likeness.workspace import Workspace

POLL_SECONDS = 0.25


class Worker:
    """Runs queued jobs one at a time."""

    def __init__(
        self,
        root: Path,
        settings: ServeSettings,
        services: Services,
        *,
        runners: Mapping[str, Runner] = RUNNERS,
        name: str = "worker",
    ) -> None:
        self.root = Path(root).resolve()
        self.settings = settings
        self.services = services
        self.runners = runners
        self.name = name
        self.conn = open_server_db(self.root)
        self.stop: Any = threading.Event()

    def run_once(self) -> bool:
        """Claim and run one job; False when the queue was empty."""
        job = queue.claim_next(self.conn, self.name)
        if job is None:
            return False
        self.run(job)
        return True

    def run(self, job: queue.QueuedJob) -> None:
        user = get_user_by_id(self.conn, job.user_id)
        if user is None or user.disabled:
            queue.finish(self.conn, job.id, "cancelled", message="the account is disabled")
            return
        runner = self.runners.get(job.kind)
        if runner is None:
            queue.finish(self.conn, job.id, "failed", error=f"kind: {job.kind!r} has no runner")
            return
        ws = Workspace.open(self.root / user.folder)
        ctx = JobContext(
            job=job,
            user_name=user.name,
            ws=ws,
            policy=PathPolicy(ws.root, tuple(self.settings.shared_folders())),
            services=self.services,
            server=self.conn,
            stopping=self.stop.is_set,
        )
        try:
            ctx.audit(f"job.{job.kind}.started", str(job.id), attempt=job.attempts)
            result = runner(ctx)
        except WorkerStopping:
            queue.requeue(self.conn, job.id)
            _audit_quietly(ws, user.name, f"job.{job.kind}.interrupted", job.id, "server stopping")
        except JobCancelled:
            queue.finish(self.conn, job.id, "cancelled", message="cancelled; what was made is kept")
            ctx.audit(f"job.{job.kind}.cancelled", str(job.id))
        except Exception as exc:
            line = error_line(exc)
            queue.finish(self.conn, job.id, "failed", error=line)
            _audit_quietly(ws, user.name, f"job.{job.kind}.failed", job.id, line)
            if os.environ.get("LIKENESS_SERVE_TRACEBACKS"):
                traceback.print_exc()
        else:
            queue.finish(self.conn, job.id, "done", result=result)
            ctx.audit(f"job.{job.kind}.done", str(job.id))
        finally:
            ws.close()

    def run_forever(self, stop: Any, poll: float = POLL_SECONDS) -> None:
        """Run jobs until `stop` (an Event) is set; a job running then stops at its next
        progress report and goes back to the queue."""
        self.stop = stop
        while not stop.is_set():
            try:
                ran = self.run_once()
            except sqlite3.OperationalError:
                ran = False  # a locked database: try again shortly
            if not ran:
                stop.wait(poll)

    def close(self) -> None:
        self.services.engines.close()
        self.conn.close()


def _audit_quietly(ws: Workspace, actor: str, action: str, job_id: int, why: str) -> None:
    with contextlib.suppress(sqlite3.Error):
        record(ws.db, actor=actor, action=action, target=str(job_id), detail={"why": why})


class Workers(Protocol):
    def stop(self, timeout: float = 10.0) -> None: ...


class ThreadWorkers:
    """Workers as threads of this process; `make_worker(index)` builds each."""

    def __init__(self, make_worker: Callable[[int], Worker], count: int) -> None:
        self._stop = threading.Event()
        self._workers = [make_worker(i) for i in range(count)]
        self._threads = [
            threading.Thread(
                target=w.run_forever, args=(self._stop,), name=f"likeness-{w.name}", daemon=True
            )
            for w in self._workers
        ]
        for thread in self._threads:
            thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout)
        for worker in self._workers:
            worker.close()


def worker_main(root: str, index: int, stop: Any) -> None:
    """Entry point of a worker process: settings from `serve.toml`, engines as configured."""
    settings = load_serve_settings(Path(root))
    if settings.serve.worker_nice and hasattr(os, "nice"):
        os.nice(settings.serve.worker_nice)
    services = Services(
        engines=EngineProvider(settings.serve),
        train=_train_runner(),
    )
    worker = Worker(Path(root), settings, services, name=f"process-{index}")
    parent = os.getppid()
    watcher = threading.Thread(target=_stop_with_parent, args=(parent, stop), daemon=True)
    watcher.start()
    try:
        worker.run_forever(stop)
    finally:
        worker.close()


def _stop_with_parent(parent: int, stop: Any) -> None:
    while not stop.wait(1.0):
        if os.getppid() != parent:
            stop.set()


def _train_runner() -> Any:
    from likeness.serve.work import default_train_runner

    return default_train_runner()


class ProcessWorkers:
    """Workers as processes of their own (spawned: no state of the server is inherited)."""

    def __init__(self, root: Path, count: int) -> None:
        context = multiprocessing.get_context("spawn")
        self._stop = context.Event()
        self._processes = [
            context.Process(
                target=worker_main,
                args=(str(root), i, self._stop),
                name=f"likeness-worker-{i}",
                daemon=False,  # scoring may start processes of its own
            )
            for i in range(count)
        ]
        for process in self._processes:
            process.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        for process in self._processes:
            process.join(timeout)
            if process.is_alive():
                process.terminate()
                process.join(5)


def start_workers(
    root: Path,
    settings: ServeSettings,
    *,
    services: Services | None = None,
    runners: Mapping[str, Runner] = RUNNERS,
) -> Workers:
    """Requeue what a stop interrupted, then start `serve.workers` workers as configured.
    `services` (engines, instruments, trainer) forces thread workers that share them."""
    conn = open_server_db(root)
    try:
        queue.requeue_interrupted(conn)
    finally:
        conn.close()
    count = settings.serve.workers
    if services is None and settings.serve.worker_mode == "process":
        return ProcessWorkers(root, count)

    def make(index: int) -> Worker:
        # Engines are not shared between workers: each holds its own models.
        own = services or Services(engines=EngineProvider(settings.serve), train=_train_runner())
        return Worker(root, settings, own, runners=runners, name=f"thread-{index}")

    return ThreadWorkers(make, count)
