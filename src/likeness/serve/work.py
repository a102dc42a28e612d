"""What each kind of job does, as library calls on the user's own workspace.

A runner gets a :class:`JobContext` (the job row, the user's open workspace, the path policy,
the engines) and returns the job's result (plain JSON). It reports progress through the
context, which also raises :class:`JobCancelled` when the user asked to stop. Every runner
resumes: generation and model cards run through `likeness.evaluate` cells (one image per
resolved recipe, never stored twice), training through the trainer's own resumable job.

Kinds: ``generate`` (n images, scored), ``card`` (the model card, or some of its shots),
``train`` (only when `likeness.train` provides ``train_lora``; see :func:`default_train_runner`).
"""

from __future__ import annotations

import dataclasses
import sqlite3
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from likeness.engines import Engine, resolve_seed
from likeness.engines.base import MAX_SEED
from likeness.jobs import job_key, start_job
from likeness.recipes import Recipe
from likeness.serve import queue
from likeness.serve.audit import record
from likeness.serve.engines import EngineProvider
from likeness.serve.policy import PathPolicy
from likeness.workspace import Workspace

_REPORT_EVERY_SECONDS = 0.5


class JobCancelled(Exception):
    """The user asked the job to stop; what it stored so far stays."""


class WorkerStopping(Exception):
    """The server is stopping: the job goes back to the queue and resumes at the next start."""


TrainRunner = Callable[["JobContext"], dict[str, Any]]


@dataclass
class Services:
    """What runners share in one worker: engines, the measuring models, the trainer."""

    engines: EngineProvider
    instruments: Any = None
    """`likeness.metrics.Instruments` for scoring (built on first use when None)."""
    train: TrainRunner | None = None

    def scoring_instruments(self) -> Any:
        if self.instruments is None:
            from likeness.metrics import Instruments

            self.instruments = Instruments()
        return self.instruments


@dataclass
class JobContext:
    """One job as a runner sees it."""

    job: queue.QueuedJob
    user_name: str
    ws: Workspace
    policy: PathPolicy
    services: Services
    server: sqlite3.Connection
    params: dict[str, Any] = field(default_factory=dict)
    stopping: Callable[[], bool] = lambda: False
    """True once the worker is asked to stop (checked at every progress report)."""
    _last_report: float = 0.0

    def __post_init__(self) -> None:
        self.params = dict(self.job.params)

    def progress(
        self,
        done: int | None = None,
        total: int | None = None,
        message: str | None = None,
        *,
        force: bool = True,
    ) -> None:
        """Record progress; raises JobCancelled when the user asked to stop, WorkerStopping
        when the server is stopping."""
        if self.stopping():
            raise WorkerStopping(f"job {self.job.id} interrupted by a stop; it resumes")
        now = time.monotonic()
        if not force and now - self._last_report < _REPORT_EVERY_SECONDS:
            return
        self._last_report = now
        if queue.report(self.server, self.job.id, done=done, total=total, message=message):
            raise JobCancelled(f"job {self.job.id} cancelled")

    def remember(self, **values: Any) -> None:
        """Keep choices made once (a random base seed) in the job's params, for resuming."""
        self.params.update(values)
        queue.set_params(self.server, self.job.id, self.params)

    def engine(self, name: str) -> Engine:
        return self.services.engines.get(name, self.job.user_id)

    def audit(self, action: str, target: str | None = None, **detail: Any) -> None:
        record(self.ws.db, actor=self.user_name, action=action, target=target, detail=detail)


Runner = Callable[[JobContext], dict[str, Any]]


def error_line(exc: BaseException) -> str:
    """One line for a failure: its class and every line of its message."""
    # Copied from likeness.cli.common.error_line (the server does not import the CLI).
    text = "; ".join(line.strip() for line in str(exc).splitlines() if line.strip())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


# -- generate --------------------------------------------------------------------------------
def run_generate(ctx: JobContext) -> dict[str, Any]:
    """`n` images of the recipe, seeds `seed + i`, each stored and scored once."""
    from likeness.evaluate.cells import CellRunner
    from likeness.evaluate.scorer import WorkspaceScorer

    # 1. The recipe (checked again: files may have moved since it was queued) and the engine.
    recipe = ctx.policy.check_recipe(Recipe.from_dict(ctx.params["recipe"]))
    n = int(ctx.params["n"])
    if "base_seed" not in ctx.params:
        ctx.remember(base_seed=resolve_seed(recipe).seed)
    recipe = recipe.with_overrides({"seed": ctx.params["base_seed"]})
    engine = ctx.engine(recipe.engine)
    engine.check(recipe)
    # 2. The workspace's own job record (what `likeness jobs` shows in the user's folder).
    ws_job = start_job(
        ctx.ws.db, "generate", job_key("serve", ctx.job.id), total=n, params={"queue": ctx.job.id}
    )
    scorer = WorkspaceScorer(ctx.ws, instruments=ctx.services.scoring_instruments())
    runner = CellRunner(
        ctx.ws,
        engine,
        scorer,
        name_prefix=f"gen-{ctx.job.id}",
        job_id=ws_job.id,
        engine_progress=lambda u: ctx.progress(
            message=f"{u.stage} {u.step}/{u.steps}", force=False
        ),
    )
    # 3. One cell per image; a resumed job finds the cells already made.
    images: list[dict[str, Any]] = []
    try:
        for i in range(n):
            ctx.progress(i, n, f"image {i + 1} of {n}")
            seed = (recipe.seed + i) % (MAX_SEED + 1)
            cell = runner.run(recipe.with_overrides({"seed": seed}))
            images.append(_cell_row(cell))
            ws_job.set_progress(i + 1)
        ctx.progress(n, n, f"{sum(1 for r in images if r['sha256'])} of {n} images stored")
    except BaseException as exc:
        ws_job.fail(f"{type(exc).__name__}: {exc}")
        raise
    ws_job.finish(message=f"{len(images)} images")
    return {"images": images, "workspace_job": ws_job.id, "recipe_hash": recipe.recipe_hash()}


def _cell_row(cell: Any) -> dict[str, Any]:
    score = cell.score or {}
    return {
        "sha256": cell.image_sha,
        "seed": cell.seed,
        "match": score.get("match"),
        "pass": score.get("pass"),
        "angle": score.get("angle"),
        "expression": score.get("expression"),
        "flags": list(score.get("flags") or []),
        "error": cell.error,
    }


# -- card --------------------------------------------------------------------------------------
def run_card(ctx: JobContext) -> dict[str, Any]:
    """The model card (or the shots asked for) with the recipe, judged shot by shot."""
    from likeness.evaluate.card import run_card as run
    from likeness.evaluate.card_spec import load_card_spec
    from likeness.evaluate.scorer import WorkspaceScorer

    recipe = ctx.policy.check_recipe(Recipe.from_dict(ctx.params["recipe"]))
    spec = card_spec(load_card_spec(), ctx.params.get("shots") or [])
    tries = int(ctx.params.get("tries") or ctx.ws.settings.card.tries)
    engine = ctx.engine(recipe.engine)
    scorer = WorkspaceScorer(ctx.ws, instruments=ctx.services.scoring_instruments())
    ctx.progress(0, len(spec.shots), "starting")

    def on_shot(done: int, total: int, shot: Any, attempt: Any) -> None:
        ctx.progress(done, total, f"shot {shot.id}")

    result = run(
        ctx.ws,
        spec,
        recipe,
        engine,
        scorer,
        label=ctx.params["label"],
        tries=tries,
        progress=on_shot,
    )
    return {"card": result.summary(), "label": result.label}


def card_spec(spec: Any, shots: list[str]) -> Any:
    """`spec` with only `shots` (all when empty); an unknown shot id raises ValueError."""
    if not shots:
        return spec
    known = {s.id for s in spec.shots}
    unknown = [s for s in shots if s not in known]
    if unknown:
        raise ValueError(f"shots: {unknown[0]!r} is not a card shot; known: {', '.join(known)}")
    return dataclasses.replace(spec, shots=tuple(s for s in spec.shots if s.id in shots))


# -- train -------------------------------------------------------------------------------------
def default_train_runner() -> TrainRunner | None:
    """The trainer as a runner, when this installation has one (`likeness.train.run`);
    otherwise None, and the server offers no training."""
    try:
        from likeness.train.recipe import TrainRecipe
        from likeness.train.run import train_lora
    except ImportError:
        return None

    def run(ctx: JobContext) -> dict[str, Any]:
        recipe = TrainRecipe.from_dict(ctx.params["recipe"])
        model = ctx.policy.resolve("model", recipe.model)
        recipe = recipe.with_overrides({"model": str(model)})
        ctx.progress(0, recipe.steps, "training")
        result = train_lora(
            ctx.ws,
            recipe,
            device=ctx.services.engines.section.device or None,
            notify=lambda line: ctx.progress(message=line[:200], force=False),
        )
        return result.to_json()

    return run


def run_train(ctx: JobContext) -> dict[str, Any]:
    if ctx.services.train is None:
        raise RuntimeError("training is not available on this server")
    return ctx.services.train(ctx)


RUNNERS: Mapping[str, Runner] = {
    "generate": run_generate,
    "card": run_card,
    "train": run_train,
}
