"""`likeness loop`: one turn of the flywheel, as far as it goes without a person.

likeness loop [-n N] [--again] [--recipe FILE] [--train-recipe FILE] [--engine E]
              [--allow-pickle] [--allow-flag F ...] [--device D] [--json]

The current recipe is `<workspace>/recipe.toml` (write it with `likeness sweep SPEC
--best-out recipe.toml`, or by hand; `--recipe` points elsewhere). See
:mod:`likeness.evaluate.loop` for the steps. With a train recipe (`--train-recipe`, or
`[loop] train_recipe`), the loop first trains the dataset's latest version when it has no
LoRA, puts the best checkpoint into the recipe, runs the model card with it and compares
the turns (:mod:`likeness.train.turns`).

``--json`` shape (stable; new keys may be added)::

    {"turn": 2, "recipe_hash": "...", "n": 8, "generated": 8, "queued": 5, "filtered": 2,
     "duplicates": 1, "failed": 0, "review": {"undecided": 5, "accepted": 0, "rejected": 0},
     "waiting_for": "review" | "training" | "dataset" | "recipe" | "generation",
     "next_step": "one sentence: what to do next",
     "candidates": [{"position": 0, "seed": 8, "cell_key": "...", "image_sha": "...",
                     "outcome": "queued" | "filtered" | "duplicate" | "failed" | "pending",
                     "reason": null, "match": 8.1, "decision": "undecided" | null}, ...],
     "training": null | {
         "dataset": "mara@v2",
         "trained": null | {"run_id": 3, "steps": 2000, "state": "done",
                            "already_trained": false, "best_step": 1500,
                            "best_metrics": {...}},
         "lora": ".../mara-v2-step001500.safetensors",
         "recipe_written": ".../recipe.toml" | null,
         "card": {CARD SUMMARY: label, shots, first_try_rate, mean_match, ...},
         "turns": [{"dataset": "mara@v1", "lora": "mara-v1-step002000", "lora_sha256": "...",
                    "card": "loop-mara-v1", "shots": 23, "first_try_rate": 0.43,
                    "mean_match": 6.1, "pass_rate": 0.65, "complete": true,
                    "change": null | {"first_try_rate": 0.17, "mean_match": 0.8,
                                      "pass_rate": 0.13}}, ...]}}

``waiting_for`` is ``dataset`` (instead of ``training``) when a train recipe is set: the
review is done and the next dataset version is what the next call trains.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from likeness.cli.common import (
    JSON_HELP,
    fail,
    open_workspace,
    out,
    print_json,
    progress_bar,
    resumable,
)
from likeness.cli.sweep import (
    AllowPickleOption,
    ComfyUrlOption,
    EngineOption,
    MaxCostOption,
    MaxImagesOption,
    build_engine,
    engine_session,
    step_reporter,
)
from likeness.engines import Engine, EngineCannotHonour
from likeness.evaluate.cells import Cell
from likeness.evaluate.current import current_recipe
from likeness.evaluate.loop import LoopStatus, run_loop_turn
from likeness.evaluate.scorer import NoReferences, WorkspaceScorer
from likeness.recipes import Recipe, RecipeError
from likeness.train.turns import LoopTraining, adjust_status

if TYPE_CHECKING:
    from likeness.train.recipe import TrainRecipe
    from likeness.workspace import Workspace


def loop(
    ctx: typer.Context,
    n: Annotated[int, typer.Option("-n", min=1, help="Candidates to generate in a new turn.")] = 8,
    again: Annotated[
        bool, typer.Option("--again", help="Start a new turn even if the recipe is unchanged.")
    ] = False,
    recipe: Annotated[
        Path | None,
        typer.Option("--recipe", "-r", help="Recipe TOML (default: <workspace>/recipe.toml)."),
    ] = None,
    engine: EngineOption = None,
    comfy_url: ComfyUrlOption = None,
    allow_pickle: AllowPickleOption = False,
    max_cost: MaxCostOption = None,
    max_images: MaxImagesOption = None,
    allow_flag: Annotated[
        list[str] | None,
        typer.Option("--allow-flag", help="A flag that does not reject a candidate; repeatable."),
    ] = None,
    train_recipe: Annotated[
        Path | None,
        typer.Option(
            "--train-recipe",
            help="Train recipe TOML: train the dataset's new versions, card them and compare "
            "the turns (default: the workspace setting loop.train_recipe).",
        ),
    ] = None,
    device: Annotated[
        str | None, typer.Option(help="Training device: cpu, cuda or mps (default: the best).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help=JSON_HELP)] = False,
) -> None:
    """Run the steps of one loop turn that need no person, and say what waits for whom.

    Generates N candidates with the current recipe, scores them, rejects those whose identity
    fails or that carry a flag (recorded in the review history as `likeness loop`, undoable),
    sets same-face near duplicates aside, and leaves the rest undecided in the review queue.
    Then it names the step that waits: review (a person), or the next dataset version. With a
    train recipe it first trains the dataset's latest version if it has no LoRA (checkpoints
    judged by likeness), writes the best checkpoint into the recipe, runs the model card with
    it and prints each turn's numbers against the turn before. Run it again at any time: it
    resumes an interrupted turn or training, reports while the turn waits, and starts the
    next turn once the recipe changes (or with --again).

    Example: likeness loop -n 16 --train-recipe mara-lora.toml
    """
    if device is not None and device not in ("cpu", "cuda", "mps"):
        fail(f"--device: {device!r} is not cpu, cuda or mps")
    with open_workspace(ctx) as ws:
        try:
            loaded = current_recipe(ws, recipe)
            if engine is not None:
                loaded = loaded.with_overrides({"engine": engine})
        except RecipeError as exc:
            fail(str(exc))
        train_file, trainer = _train_recipe(ws, train_recipe)
        sessions = contextlib.ExitStack()
        engines: list[Engine] = []

        def make_engine() -> Engine:
            if engines:  # the card and the turn share one engine (one model in memory)
                return engines[0]
            made = build_engine(
                loaded.engine,
                comfy_url=comfy_url or ws.settings.comfyui.url,
                allow_pickle=allow_pickle,
                hosted=ws.settings.hosted,
                max_cost=max_cost,
                max_images=max_images,
            )
            engines.append(sessions.enter_context(engine_session(made)))
            return engines[0]

        def make_scorer() -> WorkspaceScorer:
            try:
                return WorkspaceScorer(ws)
            except NoReferences as exc:
                fail(str(exc))
            raise AssertionError("unreachable")

        with resumable("the turn"), sessions:
            training = None
            if trainer is not None:
                training = _train_and_card(
                    ws, trainer, loaded, make_engine, make_scorer, recipe, device, allow_pickle
                )
                loaded = training.recipe
            try:
                with progress_bar() as bar:
                    task = bar.add_task("candidates", total=None)

                    def on_candidate(done: int, total: int, cell: Cell) -> None:
                        bar.update(task, completed=done, total=total)

                    result = run_loop_turn(
                        ws,
                        loaded,
                        make_engine,
                        make_scorer,
                        n=n,
                        again=again,
                        progress=on_candidate,
                        engine_progress=step_reporter(bar),
                        allow_flags=tuple(allow_flag or ()),
                    )
            except EngineCannotHonour as exc:
                fail(f"{loaded.engine} cannot run {ws.root / 'recipe.toml'}: {exc}")
        dataset = trainer.dataset_name if trainer is not None else None
        result = adjust_status(result, train_file, dataset)
    if as_json:
        print_json({**result.to_json(), "training": training.to_json() if training else None})
    else:
        if training is not None:
            print_training(training)
        print_status(result)


def _train_recipe(ws: Workspace, given: Path | None) -> tuple[Path | None, TrainRecipe | None]:
    """The train recipe named by --train-recipe or [loop] train_recipe (relative to the
    workspace), or (None, None)."""
    from likeness.train.recipe import TrainRecipe

    path = given
    if path is None and ws.settings.loop.train_recipe:
        path = Path(ws.settings.loop.train_recipe).expanduser()
        if not path.is_absolute():
            path = ws.root / path
    if path is None:
        return None, None
    try:
        return path, TrainRecipe.from_toml_file(path)
    except RecipeError as exc:
        fail(f"train recipe: {exc}")
    raise AssertionError("unreachable")


def _train_and_card(
    ws: Workspace,
    trainer: TrainRecipe,
    recipe: Recipe,
    make_engine: Callable[[], Engine],
    make_scorer: Callable[[], WorkspaceScorer],
    recipe_file: Path | None,
    device: str | None,
    allow_pickle: bool,
) -> LoopTraining:
    """Train the dataset's new version if it has no LoRA, then card it (see train/turns)."""
    from likeness.evaluate.current import recipe_path
    from likeness.train.loop import Diverged, StepReport, TrainHooks
    from likeness.train.run import TrainError
    from likeness.train.turns import LoopTrainingError, loop_training

    with progress_bar() as bar:
        steps = bar.add_task("training", total=None, visible=False)
        task = bar.add_task("card", total=None)

        def on_step(report: StepReport) -> None:
            bar.update(steps, completed=report.step, total=report.total, visible=True,
                       description=f"training: loss {report.loss:.4f}")  # fmt: skip

        def notify(line: str) -> None:
            bar.console.print(line, highlight=False, markup=False)

        hooks = TrainHooks(on_step=on_step)

        def on_attempt(done: int, total: int, shot: Any, attempt: Any) -> None:
            bar.update(task, completed=done - 1, total=total,
                       description=f"card: {shot.id} try {attempt.attempt + 1}")  # fmt: skip

        try:
            return loop_training(
                ws,
                trainer,
                recipe,
                make_engine,
                make_scorer,
                recipe_path=recipe_file or recipe_path(ws),
                train_options={
                    "device": device,
                    "allow_pickle": allow_pickle,
                    "hooks": hooks,
                    "notify": notify,
                },  # fmt: skip
                notify=notify,
                card_progress=on_attempt,
                engine_progress=step_reporter(bar),
            )
        except (LoopTrainingError, TrainError, EngineCannotHonour) as exc:
            fail(str(exc))
        except Diverged as exc:
            fail(f"diverged: {exc}", code=1)
    raise AssertionError("unreachable")


def print_training(training: LoopTraining) -> None:
    """What the training half did, and the turns side by side."""
    if training.trained is not None:
        best = training.trained.best
        out.print(
            f"trained {training.dataset}: run {training.trained.run_id}, "
            + (f"best checkpoint step {best['step']}" if best else "no checkpoint judged"),
            highlight=False,
        )
    if training.recipe_written is not None:
        out.print(f"{training.recipe_written} now uses {Path(training.lora).name}", highlight=False)
    table = Table(title="turns (model card with each dataset version's LoRA)")
    for column in ("dataset", "LoRA", "first try", "mean match", "pass rate", "vs turn before"):
        table.add_column(column)
    for turn in training.turns:
        change = turn.change or {}
        delta = ", ".join(
            f"{name} {value:+.2f}"
            for name, value in (
                ("first try", change.get("first_try_rate")),
                ("match", change.get("mean_match")),
                ("pass", change.get("pass_rate")),
            )
            if value is not None
        )
        table.add_row(
            turn.dataset,
            turn.lora or "-",
            f"{turn.first_try_rate:.0%}" + ("" if turn.complete else " (incomplete)"),
            "-" if turn.mean_match is None else f"{turn.mean_match:.2f}",
            f"{turn.pass_rate:.0%}",
            delta or "-",
        )
    out.print(table)


def print_status(result: LoopStatus) -> None:
    data = result.to_json()
    table = Table(title=f"loop turn {result.turn} (recipe {result.recipe_hash[:10]})")
    table.add_column("#", justify="right")
    table.add_column("seed", justify="right")
    table.add_column("image")
    table.add_column("match", justify="right")
    table.add_column("outcome")
    table.add_column("reason / review")
    colours = {"queued": "green", "filtered": "red", "duplicate": "yellow", "failed": "red"}
    for c in result.candidates:
        colour = colours.get(c.outcome, "white")
        table.add_row(
            str(c.position),
            str(c.seed),
            (c.image_sha or "")[:12],
            "-" if c.match is None else f"{c.match:.1f}",
            f"[{colour}]{c.outcome}[/{colour}]",
            c.reason or (c.decision or ""),
        )
    out.print(table)
    out.print(
        f"{result.generated} generated now; {data['queued']} queued for review, "
        f"{data['filtered']} auto-rejected, {data['duplicates']} near duplicates set aside, "
        f"{data['failed']} failed",
        highlight=False,
    )
    out.print(f"[bold]waiting for {result.waiting_for}:[/bold] {result.next_step}", highlight=False)
