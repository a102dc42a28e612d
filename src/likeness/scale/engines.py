"""Engine workers: one diffusers pipeline per GPU, or one per ComfyUI server, behind one queue.

:class:`RayEnginePool` implements :class:`likeness.engines.base.EnginePool`: ``sweep``,
``card`` and ``generate`` submit recipes and store the images that come back. Each worker
builds its engine once and keeps it (the diffusers engine keeps its pipeline loaded between
tasks); every image's provenance gets a ``worker`` entry (name, host, GPU or server URL), in
the database and inside the PNG.

Example::

    pool = build_engine_pool("comfyui", settings, comfy_urls=[url1, url2])
    pool.check(recipe)                   # a server that lacks a model is left out, in one line
    pool.submit("a", recipe)
    for result in pool.completed():
        store(result.images[0])
    pool.close()
"""

from __future__ import annotations

import json
from collections.abc import Callable, Hashable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from likeness.config import ScaleSettings
from likeness.engines.base import (
    Engine,
    EngineCannotHonour,
    EngineError,
    GeneratedImage,
    PoolResult,
    ProgressCallback,
)
from likeness.recipes import Recipe
from likeness.scale.cluster import ScaleError, connect
from likeness.scale.pool import (
    TaskFailed,
    TaskPool,
    WorkerInfo,
    WorkerLost,
    WorkerPlan,
    WorkerStats,
)

POOLED_ENGINES = ("diffusers", "comfyui")


class NoWorkerCan(EngineCannotHonour):
    """Every worker was left out by its check; the message has one reason per worker."""

    def __init__(self, lines: Sequence[str]) -> None:
        self.lines = list(lines)
        super().__init__("workers", len(self.lines), "; ".join(self.lines))

    def __str__(self) -> str:
        return "no worker can run it: " + "; ".join(self.lines)


# -- inside a worker ----------------------------------------------------------------------
@dataclass(frozen=True)
class EngineSetup:
    """Builds a worker's engine (inside the worker): ``get_engine(engine, **options)``, for
    ComfyUI bound to ``url`` and giving up on a silent server after ``reconnect_attempts``."""

    engine: str
    url: str | None = None
    options: Mapping[str, Any] = field(default_factory=dict)
    reconnect_attempts: int = 3

    def __call__(self, info: WorkerInfo) -> EngineWorker:
        from likeness.engines import get_engine

        options = dict(self.options)
        if self.engine == "comfyui":
            from likeness.engines.comfyui.run import RetryPolicy

            options["policy"] = RetryPolicy(
                reconnect_attempts=self.reconnect_attempts, backoff=0.25, max_backoff=2.0
            )
        engine = get_engine(self.engine, comfy_url=self.url, **options)
        return EngineWorker(engine, worker_entry(info, self.url))


@dataclass
class EngineWorker:
    """A worker's state: its engine and the ``worker`` entry written into provenance."""

    engine: Engine
    entry: dict[str, Any]

    def reachable(self) -> bool:
        """False when the engine's server stopped answering (the worker is then lost)."""
        http = getattr(self.engine, "http", None)
        if http is None:
            return True
        from likeness.engines.comfyui import client

        try:
            client.system_info(http)
        except Exception:
            return False
        return True

    def close(self) -> None:
        self.engine.close()


def worker_entry(info: WorkerInfo, url: str | None) -> dict[str, Any]:
    """The ``worker`` provenance entry: name, host and the GPU or server it used."""
    gpu = None
    if info.gpus:
        import torch

        gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
        gpu = f"{gpu or 'GPU'} (id {','.join(info.gpus)})"
    return {"name": info.name, "host": info.host, "gpu": gpu, "url": url}


def check_task(worker: EngineWorker, recipe: Recipe) -> TaskFailed | None:
    """The worker's engine's word on ``recipe`` (one line when it cannot run it)."""
    try:
        worker.engine.check(recipe)
    except EngineCannotHonour as exc:
        return TaskFailed(" ".join(str(exc).split("\n")))
    except Exception as exc:  # a server that cannot be reached
        return TaskFailed(f"{type(exc).__name__}: {' '.join(str(exc).split())}")
    return None


def generate_task(worker: EngineWorker, payload: tuple[Recipe, int]) -> Any:
    """``n`` images of the recipe, each with the worker in its provenance; TaskFailed when the
    engine fails the recipe; WorkerLost when its server went away."""
    recipe, n = payload
    try:
        images = worker.engine.generate(recipe, n)
    except Exception as exc:
        line = f"{type(exc).__name__}: {' '.join(str(exc).split())}"
        if not worker.reachable():
            raise WorkerLost(f"{worker.entry.get('url')} stopped answering ({line})") from None
        if isinstance(exc, EngineError):
            return TaskFailed(" ".join(str(exc).split()))
        raise
    return tuple(with_worker(image, worker.entry) for image in images)


def with_worker(image: GeneratedImage, entry: Mapping[str, Any]) -> GeneratedImage:
    """The image with ``worker`` in its provenance and in the PNG's provenance chunk."""
    from likeness.pnginfo import PROVENANCE_KEY

    provenance = {**image.provenance, "worker": dict(entry)}
    png = replace_text_chunk(
        image.png, PROVENANCE_KEY, json.dumps(provenance, sort_keys=True, default=str)
    )
    return GeneratedImage(png=png, seed=image.seed, provenance=provenance)


def replace_text_chunk(png: bytes, keyword: str, text: str) -> bytes:
    """``png`` with its text chunks named ``keyword`` replaced by one holding ``text``
    (pixels untouched)."""
    import struct

    from likeness.engines.comfyui.pngtext import PNG_SIGNATURE, add_text_chunks

    key = keyword.encode("latin-1") + b"\0"
    kept = [PNG_SIGNATURE]
    pos = len(PNG_SIGNATURE)
    while pos + 8 <= len(png):
        (length,) = struct.unpack(">I", png[pos : pos + 4])
        kind = png[pos + 4 : pos + 8]
        chunk = png[pos : pos + 12 + length]
        if not (kind in (b"tEXt", b"iTXt", b"zTXt") and chunk[8:].startswith(key)):
            kept.append(chunk)
        pos += 12 + length
    return add_text_chunks(b"".join(kept), {keyword: text})


# -- in the driver --------------------------------------------------------------------------
class RayEnginePool:
    """Engines on Ray workers behind one queue (see the module docstring).

    Args:
        pool (`TaskPool`): started workers whose state is an :class:`EngineWorker`.
        name (`str`): the engine's name ("diffusers", "comfyui").
    """

    def __init__(self, pool: TaskPool, name: str) -> None:
        self.pool = pool
        self.name = name
        self._recipes: dict[Hashable, Recipe] = {}
        self._checked: set[str] = set()

    def check(self, recipe: Recipe) -> None:
        """Ask every worker; one that cannot run ``recipe`` is left out (one line each).
        Raises :class:`NoWorkerCan` when none is left."""
        key = recipe.recipe_hash()
        if key in self._checked:
            return
        refused: list[str] = []
        for name, answer in self.pool.each(check_task, recipe).items():
            if isinstance(answer, TaskFailed):
                self.pool.leave_out(name, f"cannot run the recipe: {answer.reason}")
                refused.append(f"{name}: {answer.reason}")
        if not self.pool.live:
            gone = [f"{s.name}: {s.note}" for s in self.pool.stats() if s.note]
            raise NoWorkerCan(refused or gone or ["no worker started"])
        self._checked.add(key)

    def submit(self, tag: Hashable, recipe: Recipe, n: int = 1, label: str = "") -> None:
        self._recipes[tag] = recipe
        label = label or f"seed {recipe.seed}" + (f" +{n - 1}" if n > 1 else "")
        self.pool.submit(tag, generate_task, (recipe, n), label=label, units=n)

    def completed(self) -> Iterator[PoolResult]:
        for outcome in self.pool.completed():
            recipe = self._recipes.pop(outcome.tag)
            images = tuple(outcome.value) if outcome.error is None else ()
            yield PoolResult(outcome.tag, recipe, images, outcome.error, outcome.worker)

    def generate(
        self, recipe: Recipe, n: int, progress: ProgressCallback | None = None
    ) -> list[GeneratedImage]:
        """The Engine call: ``n`` images of ``recipe`` from one worker (the pool must be idle)."""
        if self.pool.pending:
            raise RuntimeError("generate: the pool has submitted work in progress")
        self.check(recipe)
        tag = object()
        self.submit(tag, recipe, n)
        results = list(self.completed())
        if results[0].error is not None:
            raise EngineError(results[0].error)
        return list(results[0].images)

    def edit(self, image: Any, instruction: str) -> GeneratedImage:
        raise NotImplementedError("edit: an engine pool runs recipes only")

    def stats(self) -> list[WorkerStats]:
        return self.pool.stats()

    def release(self) -> None:
        """Each live worker frees its engine's models (a ComfyUI server its VRAM). Skipped
        while tasks are in flight (an interrupted run): ending the workers frees them."""
        if not self.pool.pending:
            self.pool.each(_release_task, None, timeout=30)

    def close(self) -> None:
        """End the workers (and the Ray this run started)."""
        self.pool.close()


def _release_task(worker: EngineWorker, _: None) -> None:
    worker.engine.release()


# -- building -------------------------------------------------------------------------------
def build_engine_pool(
    engine: str,
    settings: ScaleSettings,
    *,
    address: str | None = None,
    workers: int | None = None,
    comfy_urls: Sequence[str] = (),
    options: Mapping[str, Any] | None = None,
    on_notice: Callable[[str], None] | None = None,
) -> RayEnginePool:
    """Connect to Ray and start the workers of ``engine``.

    comfyui: one worker per server (``comfy_urls``, else ``settings.comfy_urls``); it holds
    no CPU of the cluster (its server does the work). diffusers: ``workers`` workers (else
    ``settings.workers``, else one per GPU of the cluster, or one), each holding
    ``settings.gpus_per_worker`` GPUs when the cluster has GPUs, else one CPU.
    """
    if engine not in POOLED_ENGINES:
        raise ScaleError(
            f"--engine {engine}: runs on its provider's servers; workers fan out "
            f"{' and '.join(POOLED_ENGINES)} runs only"
        )
    urls = list(comfy_urls) or list(settings.comfy_urls)
    if engine == "comfyui" and not urls:
        raise ScaleError(
            "--comfy-url: name each ComfyUI server (repeat the flag) or list them in "
            "[scale] comfy_urls"
        )
    if engine == "comfyui" and workers and workers != len(urls):
        raise ScaleError(
            f"--workers {workers}: a ComfyUI run has one worker per server ({len(urls)} "
            "given); repeat --comfy-url instead"
        )
    disconnect = connect(address or settings.address or "local")
    try:
        plans = _plans(engine, settings, workers, urls, dict(options or {}), on_notice)
        pool = TaskPool(
            plans, max_retries=settings.max_retries, on_notice=on_notice, on_close=disconnect
        )
    except BaseException:
        disconnect()
        raise
    try:
        pool.start()
    except BaseException:
        pool.close()
        raise
    return RayEnginePool(pool, engine)


def _plans(
    engine: str,
    settings: ScaleSettings,
    workers: int | None,
    urls: list[str],
    options: dict[str, Any],
    on_notice: Callable[[str], None] | None,
) -> list[WorkerPlan]:
    if engine == "comfyui":
        return [
            WorkerPlan(
                f"w{i}",
                url,
                EngineSetup("comfyui", url=url, reconnect_attempts=settings.reconnect_attempts),
                {"num_cpus": 0},
            )
            for i, url in enumerate(urls, start=1)
        ]
    import ray

    totals = ray.cluster_resources()
    gpus = 0.0 if options.get("device") == "cpu" else float(totals.get("GPU", 0.0))
    if gpus:
        fit = int(gpus // settings.gpus_per_worker)
        resources = {"num_gpus": settings.gpus_per_worker, "num_cpus": 1}
    else:
        fit = int(totals.get("CPU", 1.0))
        resources = {"num_cpus": 1}
    count = workers or settings.workers or (fit if gpus else 1)
    if count > fit:
        unit = f"{settings.gpus_per_worker:g} GPU" if gpus else "1 CPU"
        if on_notice is not None:
            on_notice(
                f"{count} diffusers workers asked for, {max(fit, 1)} fit on the cluster "
                f"({unit} each); starting {max(fit, 1)}"
            )
        count = max(fit, 1)
    setup = EngineSetup("diffusers", options=options)
    return [WorkerPlan(f"w{i}", None, setup, resources) for i in range(1, count + 1)]
