"""The task pool: Ray actors that each hold one piece of state, and tasks that run on them.

A worker is built from a *setup* callable (run once, in the worker: load an engine, the face
models) and then runs *tasks*: ``fn(state, payload) -> result`` for any picklable module-level
``fn``. The pool keeps every live worker busy (up to ``in_flight`` tasks queued on each, so a
worker never waits for the driver), and yields each result as it arrives.

Failures come in two kinds:
- the worker is gone (its actor died or was killed, its node left, or the task raised
  :class:`WorkerLost` because its server stopped answering): the worker is left out for the
  rest of the run and its unfinished tasks go to the others, each at most ``max_retries``
  times more, after which the task fails with the reasons in one line;
- the task itself failed (it returned :class:`TaskFailed`, or raised anything else): that is
  the task's result, reported once and not retried.

Example::

    pool = TaskPool([WorkerPlan("w1", "cpu", setup, {"num_cpus": 1})], max_retries=2)
    pool.start()
    for i, path in enumerate(paths):
        pool.submit(i, analyse, path, label=path.name)
    for outcome in pool.completed():
        store(outcome.tag, outcome.value) if outcome.error is None else report(outcome.error)
    pool.close()
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
import time
from collections import deque
from collections.abc import Callable, Hashable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import ray
import ray.exceptions

WorkerSetup = Callable[["WorkerInfo"], Any]
"""Builds a worker's state once, inside the worker (it may load models)."""
TaskFn = Callable[[Any, Any], Any]
"""``fn(state, payload) -> result``, run inside a worker."""

START_TIMEOUT = 300.0
"""Seconds a worker may take to start (import, load) before it is left out."""
WAIT_SLICE = 0.5
"""How long one wait for results blocks (Ctrl-C is answered between two waits)."""


class WorkerLost(RuntimeError):
    """Raised by a task whose worker can no longer work (its ComfyUI server stopped
    answering): the worker is left out and the task goes to another."""


@dataclass(frozen=True)
class TaskFailed:
    """Returned by a task that failed on its own account (the engine refused or failed the
    recipe): the pool reports ``reason`` as the task's error and does not retry it."""

    reason: str


@dataclass(frozen=True)
class WorkerInfo:
    """Who a worker is; recorded with what it makes."""

    name: str
    host: str
    pid: int
    gpus: tuple[str, ...]
    """Ray's GPU ids assigned to the worker (empty on a CPU worker)."""
    source: str
    """The folder ``likeness`` is imported from in the worker."""


@dataclass(frozen=True)
class WorkerPlan:
    """One worker to start: its name, where it works (a server URL; None: its host and GPU,
    known once it started), its setup and the Ray resources it holds (``num_cpus``,
    ``num_gpus``)."""

    name: str
    where: str | None
    setup: WorkerSetup
    resources: Mapping[str, float] = field(default_factory=lambda: {"num_cpus": 1})


@dataclass
class WorkerStats:
    """What the progress display shows for one worker."""

    name: str
    where: str
    state: str = "starting"
    """starting, idle, busy, left out, lost or closed."""
    current: str = ""
    done: int = 0
    """Units (images, analyses) this worker finished."""
    started_at: float | None = None
    """monotonic time of its first task."""
    note: str = ""
    """Why it was left out or lost."""

    def per_minute(self, now: float | None = None) -> float | None:
        if self.started_at is None or not self.done:
            return None
        elapsed = (now if now is not None else time.monotonic()) - self.started_at
        return 60.0 * self.done / elapsed if elapsed > 0 else None


@dataclass(frozen=True)
class Outcome:
    """One task's end: its value, or its error (one line), and the worker that ran it last."""

    tag: Hashable
    payload: Any
    value: Any
    error: str | None
    worker: str | None


@dataclass
class _Task:
    tag: Hashable
    fn: TaskFn
    payload: Any
    label: str
    units: int
    prepare: Callable[[Any], Any] | None
    tries: int = 0
    losses: list[str] = field(default_factory=list)


class _Worker:
    """The actor: builds its state once, then runs tasks one at a time. A setup that fails
    is reported by :meth:`describe` in one line (Ray would report a whole traceback)."""

    def __init__(self, name: str, setup: WorkerSetup) -> None:
        from likeness.scale.cluster import source_root

        gpus = tuple(str(g) for g in ray.get_gpu_ids())
        self.info = WorkerInfo(name, socket.gethostname(), os.getpid(), gpus, source_root())
        self.error: str | None = None
        try:
            self.state = setup(self.info)
        except Exception as exc:
            self.state, self.error = None, _one_line(exc)

    def describe(self) -> tuple[WorkerInfo, str | None]:
        return self.info, self.error

    def call(self, fn: TaskFn, payload: Any) -> Any:
        return fn(self.state, payload)

    def close(self) -> None:
        close = getattr(self.state, "close", None)
        if callable(close):
            close()


_RemoteWorker = ray.remote(_Worker)


class TaskPool:
    """Workers started from ``plans``; see the module docstring.

    Args:
        plans (`Sequence[WorkerPlan]`): one per worker.
        max_retries (`int`, defaults to 2): how often a task whose worker was lost is tried
            on another.
        in_flight (`int`, defaults to 2): tasks queued on a worker at once.
        on_notice (*optional*): called with one line when a worker is left out or lost.
        on_close (*optional*): called last by :meth:`close` (e.g. to stop a Ray started for
            this pool).
    """

    def __init__(
        self,
        plans: Sequence[WorkerPlan],
        *,
        max_retries: int = 2,
        in_flight: int = 2,
        on_notice: Callable[[str], None] | None = None,
        on_close: Callable[[], None] | None = None,
        start_timeout: float = START_TIMEOUT,
    ) -> None:
        names = [p.name for p in plans]
        if len(set(names)) != len(names):
            raise ValueError(f"plans: worker names must differ, got {names}")
        self.plans = {p.name: p for p in plans}
        self.max_retries = max_retries
        self.in_flight = max(1, in_flight)
        self.on_notice = on_notice
        self.on_close = on_close
        self.start_timeout = start_timeout
        self.notices: list[str] = []
        self._stats = {p.name: WorkerStats(p.name, p.where or "starting") for p in plans}
        self._actors: dict[str, Any] = {}
        self._info: dict[str, WorkerInfo] = {}
        self._queue: deque[_Task] = deque()
        self._running: dict[Any, tuple[_Task, str]] = {}
        self._ready: deque[Outcome] = deque()

    # -- workers ------------------------------------------------------------------------
    def start(self) -> None:
        """Start every worker; one that fails to start (or finds no room) is left out."""
        refs = {}
        for plan in self.plans.values():
            actor = _RemoteWorker.options(
                max_restarts=0, max_task_retries=0, **dict(plan.resources)
            ).remote(plan.name, plan.setup)
            self._actors[plan.name] = actor
            refs[actor.describe.remote()] = plan.name
        ready, waiting = ray.wait(list(refs), num_returns=len(refs), timeout=self.start_timeout)
        for ref in ready:
            name = refs[ref]
            try:
                info, error = ray.get(ref)
            except ray.exceptions.RayError as exc:
                error = _reason(exc)
            if error is not None:
                self.leave_out(name, f"could not start ({error})")
            else:
                self._info[name] = info
                self._stats[name].state = "idle"
                if self.plans[name].where is None:
                    gpus = f"GPU {','.join(info.gpus)}" if info.gpus else "CPU"
                    self._stats[name].where = f"{info.host} {gpus}"
        for ref in waiting:
            resources = ", ".join(f"{k} {v:g}" for k, v in self.plans[refs[ref]].resources.items())
            self.leave_out(
                refs[ref],
                f"did not start within {self.start_timeout:.0f} s (it needs {resources}: "
                "does the cluster have room?)",
            )

    @property
    def live(self) -> list[str]:
        """Workers that take tasks, in plan order."""
        return [n for n, s in self._stats.items() if s.state in ("idle", "busy")]

    def info(self, name: str) -> WorkerInfo | None:
        return self._info.get(name)

    def actor(self, name: str) -> Any:
        """The Ray actor handle of a live worker (to inspect or kill it)."""
        return self._actors[name]

    def stats(self) -> list[WorkerStats]:
        return [replace(s) for s in self._stats.values()]

    def leave_out(self, name: str, reason: str) -> None:
        """Stop giving ``name`` tasks (it cannot honour the run); reported in one line."""
        self._drop(name, "left out", reason)

    def each(self, fn: TaskFn, payload: Any, timeout: float | None = None) -> dict[str, Any]:
        """Run ``fn(state, payload)`` on every live worker at once: worker name -> result.
        A worker lost meanwhile is left out of the answer (and of the pool), and so is one
        that has not answered within ``timeout`` seconds."""
        refs = {self._actors[name].call.remote(fn, payload): name for name in self.live}
        ready, _ = ray.wait(list(refs), num_returns=len(refs), timeout=timeout)
        answers: dict[str, Any] = {}
        for ref in ready:
            name = refs[ref]
            try:
                answers[name] = ray.get(ref)
            except ray.exceptions.RayError as exc:
                lost, reason = _classify(exc)
                if lost:
                    self._drop(name, "lost", reason)
                else:
                    answers[name] = TaskFailed(reason)
        return answers

    # -- tasks --------------------------------------------------------------------------
    def submit(
        self,
        tag: Hashable,
        fn: TaskFn,
        payload: Any,
        *,
        label: str = "",
        units: int = 1,
        prepare: Callable[[Any], Any] | None = None,
    ) -> None:
        """Queue ``fn(state, payload)``; ``prepare(payload)`` (run here, just before the task
        is handed out) may turn the payload into what is sent, e.g. read a file's bytes."""
        self._queue.append(_Task(tag, fn, payload, label or str(tag), units, prepare))

    @property
    def pending(self) -> int:
        """Tasks queued or running."""
        return len(self._queue) + len(self._running) + len(self._ready)

    def completed(self) -> Iterator[Outcome]:
        """Yield each task's outcome as it arrives until none is queued or running (tasks
        submitted meanwhile are included). Workers are handed their next task before an
        outcome is yielded, so they work while the caller stores it."""
        while True:
            self._dispatch()
            while self._ready:
                yield self._ready.popleft()
            if not self._running:
                if not self._queue:
                    return
                self._fail_queued()
                continue
            done, _ = ray.wait(list(self._running), num_returns=1, timeout=WAIT_SLICE)
            for ref in done:
                outcome = self._collect(ref)
                self._dispatch()
                if outcome is not None:
                    yield outcome

    def close(self) -> None:
        """Let every idle worker close its state (a few seconds at most), then end every
        actor: a worker still busy (the run was interrupted) is ended at once."""
        try:
            busy = {name for _, name in self._running.values()}
            closing = {
                actor.close.remote(): name
                for name, actor in self._actors.items()
                if name not in busy
            }
            if closing:
                with contextlib.suppress(ray.exceptions.RayError):
                    ray.wait(list(closing), num_returns=len(closing), timeout=10)
            for name, actor in self._actors.items():
                with contextlib.suppress(Exception):
                    ray.kill(actor, no_restart=True)
                if self._stats[name].state in ("idle", "busy"):
                    self._stats[name].state = "closed"
            self._actors.clear()
            self._running.clear()
            self._queue.clear()
        finally:
            on_close, self.on_close = self.on_close, None
            if on_close is not None:
                on_close()

    # -- inside -------------------------------------------------------------------------
    def _dispatch(self) -> None:
        """Hand queued tasks to live workers: one each first, then up to ``in_flight``."""
        for depth in range(1, self.in_flight + 1):
            for name in self.live:
                while self._queue and self._load(name) < depth:
                    task = self._queue.popleft()
                    try:
                        payload = task.prepare(task.payload) if task.prepare else task.payload
                    except Exception as exc:  # an input that cannot be read fails its task
                        self._ready.append(
                            Outcome(task.tag, task.payload, None, _one_line(exc), None)
                        )
                        continue
                    ref = self._actors[name].call.remote(task.fn, payload)
                    self._running[ref] = (task, name)
                    self._mark_busy(name)

    def _load(self, name: str) -> int:
        return sum(1 for _, worker in self._running.values() if worker == name)

    def _mark_busy(self, name: str) -> None:
        stats = self._stats[name]
        if stats.state not in ("idle", "busy"):
            return
        first = next((t for t, w in self._running.values() if w == name), None)
        stats.state = "busy" if first is not None else "idle"
        stats.current = first.label if first is not None else ""
        if first is not None and stats.started_at is None:
            stats.started_at = time.monotonic()

    def _collect(self, ref: Any) -> Outcome | None:
        """The outcome of a finished task, or None when it went back to the queue."""
        task, name = self._running.pop(ref)
        try:
            value = ray.get(ref)
        except ray.exceptions.RayError as exc:
            lost, reason = _classify(exc)
            if not lost:
                self._mark_busy(name)
                return Outcome(task.tag, task.payload, None, reason, name)
            self._drop(name, "lost", reason)
            return self._retry(task, name, reason)
        self._mark_busy(name)
        if isinstance(value, TaskFailed):
            return Outcome(task.tag, task.payload, None, value.reason, name)
        self._stats[name].done += task.units
        return Outcome(task.tag, task.payload, value, None, name)

    def _retry(self, task: _Task, worker: str, reason: str) -> Outcome | None:
        task.tries += 1
        task.losses.append(f"{worker}: {reason}")
        if task.tries > self.max_retries:
            return Outcome(
                task.tag,
                task.payload,
                None,
                f"gave up after {task.tries} workers were lost under it ({'; '.join(task.losses)})",
                worker,
            )
        self._queue.appendleft(task)
        return None

    def _drop(self, name: str, state: str, reason: str) -> None:
        stats = self._stats[name]
        if stats.state in ("left out", "lost"):
            return
        stats.state, stats.note, stats.current = state, reason, ""
        what = "its tasks go to the other workers" if state == "lost" else "the others go on"
        self._notice(f"worker {name} ({stats.where}) {state}: {reason}; {what}")
        actor = self._actors.pop(name, None)
        if actor is not None:  # its resources (a GPU) go back to the cluster
            with contextlib.suppress(Exception):
                ray.kill(actor, no_restart=True)

    def _fail_queued(self) -> None:
        """No worker is left: every queued task fails, naming why the workers went."""
        why = "; ".join(f"{s.name}: {s.note}" for s in self._stats.values() if s.note)
        while self._queue:
            task = self._queue.popleft()
            self._ready.append(
                Outcome(task.tag, task.payload, None, f"no worker left ({why})", None)
            )

    def _notice(self, line: str) -> None:
        self.notices.append(line)
        if self.on_notice is not None:
            self.on_notice(line)


def _classify(exc: BaseException) -> tuple[bool, str]:
    """(worker lost?, one line) for an error a task ended with."""
    if isinstance(exc, ray.exceptions.RayTaskError):
        cause = getattr(exc, "cause", None)
        if isinstance(cause, WorkerLost):
            return True, _one_line(cause, with_type=False)
        if cause is not None:
            return False, _one_line(cause)
        return False, _reason(exc)
    return True, _reason(exc)


def _reason(exc: BaseException) -> str:
    """One line for a Ray error (they run to many lines, some with a whole traceback: then
    the exception line at its end)."""
    if isinstance(exc, ray.exceptions.RayTaskError) and getattr(exc, "cause", None) is not None:
        return _one_line(exc.cause)
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    if not lines:
        return type(exc).__name__
    raised = [i for i, line in enumerate(lines) if _RAISED.match(line)]
    if raised:
        return " ".join(lines[raised[-1] :])
    return f"{type(exc).__name__}: {lines[0]}"


_RAISED = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Exit|Interrupt)\b:?")


def _one_line(exc: BaseException, with_type: bool = True) -> str:
    text = " ".join(str(exc).split())
    if not with_type:
        return text or type(exc).__name__
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
