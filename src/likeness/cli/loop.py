"""`likeness loop`: one turn of the flywheel, as far as it goes without a person.

likeness loop [-n N] [--again] [--recipe FILE] [--engine E] [--allow-pickle] [--allow-flag F ...] [--json]

The current recipe is `<workspace>/recipe.toml` (write it with `likeness sweep SPEC
--best-out recipe.toml`, or by hand; `--recipe` points elsewhere). See
:mod:`likeness.evaluate.loop` for the steps.

``--json`` shape (stable; new keys may be added)::

    {"turn": 2, "recipe_hash": "...", "n": 8, "generated": 8, "queued": 5, "filtered": 2,
     "duplicates": 1, "failed": 0, "review": {"undecided": 5, "accepted": 0, "rejected": 0},
     "waiting_for": "review" | "training" | "recipe" | "generation",
     "next_step": "one sentence: what to do next",
     "candidates": [{"position": 0, "seed": 8, "cell_key": "...", "image_sha": "...",
                     "outcome": "queued" | "filtered" | "duplicate" | "failed" | "pending",
                     "reason": null, "match": 8.1, "decision": "undecided" | null}, ...]}
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Annotated

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
from likeness.recipes import RecipeError


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
    as_json: Annotated[bool, typer.Option("--json", help=JSON_HELP)] = False,
) -> None:
    """Run the steps of one loop turn that need no person, and say what waits for whom.

    Generates N candidates with the current recipe, scores them, rejects those whose identity
    fails or that carry a flag (recorded in the review history as `likeness loop`, undoable),
    sets same-face near duplicates aside, and leaves the rest undecided in the review queue.
    Then it names the step that waits: review (a person) or training (not available in
    Likeness yet). Run it again at any time: it resumes an interrupted turn, reports while
    the turn waits, and starts the next turn once the recipe changes (or with --again).

    Example: likeness loop -n 16
    """
    with open_workspace(ctx) as ws:
        try:
            loaded = current_recipe(ws, recipe)
            if engine is not None:
                loaded = loaded.with_overrides({"engine": engine})
        except RecipeError as exc:
            fail(str(exc))
        sessions = contextlib.ExitStack()

        def make_engine() -> Engine:
            made = build_engine(
                loaded.engine,
                comfy_url=comfy_url or ws.settings.comfyui.url,
                allow_pickle=allow_pickle,
                hosted=ws.settings.hosted,
                max_cost=max_cost,
                max_images=max_images,
            )
            return sessions.enter_context(engine_session(made))

        def make_scorer() -> WorkspaceScorer:
            try:
                return WorkspaceScorer(ws)
            except NoReferences as exc:
                fail(str(exc))
            raise AssertionError("unreachable")

        with resumable("the turn"), sessions:
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
    if as_json:
        print_json(result.to_json())
    else:
        print_status(result)


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
