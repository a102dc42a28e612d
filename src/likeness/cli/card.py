"""`likeness card`: the model card, the acceptance test of a character.

likeness card [--recipe R] [--tries K] [--label v2] [--spec FILE] [--json] [--report DIR]
              [--workers N | --comfy-url URL ...] [--ray ADDRESS]   (docs/scale.md)
likeness card spec [OUT]                 write an editable copy of the 23-shot spec
likeness card compare [LABEL ...] [--json] [--report DIR]

``likeness card --json`` shape (stable; new keys may be added)::

    {"label": "v2", "shots": 23, "tries": 3, "first_try_passed": 19, "first_try_rate": 0.826,
     "within_tries_passed": 22, "within_tries_rate": 0.957, "goal": 0.8, "meets_goal": true,
     "mean_match": 7.9, "pass_match": 7.0, "card_id": 2, "recipe_hash": "...",
     "model_sha256": "..." | null, "lora_sha256s": [...], "spec": "likeness-23",
     "spec_hash": "...", "created_at": "...", "complete": true, "grid": "path/to/grid.png",
     "per_shot": [{"id": "front_neutral", "kind": "portrait",
                   "expects": {"angle": "front", "expression": "neutral", "body_pose": null},
                   "first_try": false, "passed": true, "passed_on": 2,
                   "attempts": [{"attempt": 1, "image_sha": "...", "passed": false,
                                 "reasons": ["expression: smiling, expected neutral"],
                                 "match": 8.1, "angle": "front", "expression": "smiling",
                                 "body_pose": "not_visible", "flags": []}, ...]}, ...]}

``likeness card compare --json``::

    {"cards": [SUMMARY + {"recipe_hash", "model_sha256", "lora_sha256s", "spec_hash",
               "created_at"}, ...],
     "shots": [{"id": "front_neutral", "results": {"v1": "failed", "v2": "first_try"}}, ...],
     "plot": "path/to/compare.png"}

where SUMMARY holds the first ten keys of the card shape and a shot result is one of
`first_try`, `retry` (passed on a later try), `failed` or `missing`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from likeness.cli.common import JSON_HELP, err, fail, open_workspace, out, print_json, resumable
from likeness.cli.scaling import (
    ComfyUrlsOption,
    RayOption,
    WorkersOption,
    build_pool,
    run_display,
    scale_ask,
)
from likeness.cli.sweep import (
    AllowPickleOption,
    EngineOption,
    MaxCostOption,
    MaxImagesOption,
    build_engine,
    engine_session,
    output_error,
    step_reporter,
)
from likeness.engines import EngineCannotHonour
from likeness.evaluate.card import AttemptResult, CardError, CardResult, run_card
from likeness.evaluate.card_spec import CardSpecError, Shot, default_spec_text, load_card_spec
from likeness.evaluate.compare import CardComparison, compare_cards
from likeness.evaluate.current import current_recipe, with_workspace_trigger
from likeness.evaluate.scorer import NoReferences, WorkspaceScorer
from likeness.recipes import Recipe, RecipeError

app = typer.Typer(invoke_without_command=True)
CARDS_DIR = "cards"


@app.callback()
def card(
    ctx: typer.Context,
    recipe: Annotated[
        Path | None,
        typer.Option("--recipe", "-r", help="Recipe TOML (default: <workspace>/recipe.toml)."),
    ] = None,
    tries: Annotated[
        int | None,
        typer.Option("--tries", "-k", min=1, help="Attempts per shot (default: card.tries)."),
    ] = None,
    label: Annotated[
        str | None, typer.Option(help="Name of this card, e.g. v2 (default: from the recipe).")
    ] = None,
    spec: Annotated[
        Path | None, typer.Option("--spec", help="Card spec TOML (default: the shipped 23 shots).")
    ] = None,
    engine: EngineOption = None,
    comfy_url: ComfyUrlsOption = None,
    workers: WorkersOption = None,
    ray: RayOption = None,
    allow_pickle: AllowPickleOption = False,
    max_cost: MaxCostOption = None,
    max_images: MaxImagesOption = None,
    grid: Annotated[
        Path | None,
        typer.Option(help="Where to write the grid PNG (default: <workspace>/cards/LABEL.png)."),
    ] = None,
    report: Annotated[
        Path | None, typer.Option("--report", help="Write the HTML report into this folder.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help=JSON_HELP)] = False,
) -> None:
    """The model card: generate each shot, score it, decide; retry failures up to K times.

    A shot passes when identity passes, the head angle, expression and body pose are the
    expected ones and no flag fires. The headline is the first-try success rate (goal:
    card.first_try_goal, 80%). The card is stored under its label with the recipe and model
    hashes; the same command resumes an interrupted card. Exit status 1 when the goal is missed.

    Example: likeness card --recipe v2.toml --label v2 --tries 3 --report card-v2
    """
    if ctx.invoked_subcommand is not None:
        return
    try:
        shots = load_card_spec(spec)
    except CardSpecError as exc:
        fail(str(exc))
    with open_workspace(ctx) as ws:
        # 1. Recipe, engine, references; refuse before any work.
        try:
            loaded = (
                with_workspace_trigger(Recipe.from_toml_file(recipe), ws)
                if recipe is not None
                else current_recipe(ws)
            )
            if engine is not None:
                loaded = loaded.with_overrides({"engine": engine})
        except RecipeError as exc:
            fail(str(exc))
        label = label or f"card-{loaded.recipe_hash()[:8]}"
        scale = ws.settings.scale
        ask = scale_ask(scale, loaded.engine, workers=workers, comfy_urls=comfy_url, ray=ray)
        runner = (
            build_pool(ask, loaded.engine, scale, {"allow_pickle": allow_pickle})
            if ask is not None
            else build_engine(
                loaded.engine,
                comfy_url=(comfy_url or [ws.settings.comfyui.url])[0],
                allow_pickle=allow_pickle,
                hosted=ws.settings.hosted,
                max_cost=max_cost,
                max_images=max_images,
            )
        )
        with resumable("the card"), engine_session(runner):
            try:
                scorer = WorkspaceScorer(ws)
            except NoReferences as exc:
                fail(str(exc))
            k = tries or ws.settings.card.tries
            # 2. Run (or resume, or load).
            try:
                with run_display(runner) as bar:
                    task = bar.add_task("shots", total=len(shots.shots))
                    judged: set[str] = set()

                    def on_attempt(
                        done: int, total: int, shot: Shot, attempt: AttemptResult
                    ) -> None:
                        if ask is not None:  # shots finish in any order: count them
                            if attempt.passed or attempt.attempt + 1 >= k:
                                judged.add(shot.id)
                            done = len(judged) + 1
                        bar.update(
                            task,
                            completed=done - 1,
                            description=f"{shot.id} try {attempt.attempt + 1}",
                        )

                    result = run_card(
                        ws,
                        shots,
                        loaded,
                        runner,
                        scorer,
                        label=label,
                        tries=k,
                        progress=on_attempt,
                        engine_progress=None if ask else step_reporter(bar),
                    )
                    bar.update(task, completed=len(shots.shots))
            except (CardError, EngineCannotHonour) as exc:
                fail(str(exc))
        data = result.to_json()
        # 3. Grid image and report.
        from likeness.report.card import write_card_grid, write_card_report

        grid_path = grid or ws.root / CARDS_DIR / f"{_safe(label)}.png"
        index = None
        try:
            data["grid"] = str(write_card_grid(data, grid_path, image_path=ws.blobs.path))
            if report is not None:
                index = write_card_report(data, report, image_path=ws.blobs.path)
        except OSError as exc:
            fail(output_error(exc, f"card {label!r}"))
    if as_json:
        print_json(data)
    else:
        print_card(result)
        out.print(f"grid: {data['grid']}", highlight=False)
        if index is not None:
            out.print(f"report: {index}", highlight=False)
    if not result.meets_goal:
        raise typer.Exit(1)


@app.command("spec")
def spec_copy(
    out_file: Annotated[Path, typer.Argument(help="Where to write the editable copy.")] = Path(
        "card.toml"
    ),
) -> None:
    """Write an editable copy of the shipped 23-shot card spec (run it with --spec FILE).

    Example: likeness card spec my-card.toml
    """
    if out_file.exists():
        fail(f"{out_file} exists; pass another file name or remove it")
    out_file.write_text(default_spec_text(), encoding="utf-8")
    err.print(f"wrote {out_file}: edit shots and prompts, then `likeness card --spec {out_file}`")


@app.command("compare")
def compare(
    ctx: typer.Context,
    labels: Annotated[
        list[str] | None, typer.Argument(help="Card labels (default: every card, oldest first).")
    ] = None,
    plot: Annotated[
        Path | None,
        typer.Option(help="Where to write the plot (default: <workspace>/cards/compare.png)."),
    ] = None,
    report: Annotated[
        Path | None, typer.Option("--report", help="Write an HTML comparison into this folder.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help=JSON_HELP)] = False,
) -> None:
    """Show model cards side by side: first-try success, success within tries, mean match,
    and every shot's outcome per card.

    Example: likeness card compare v1 v2 v3
    """
    from likeness.report.card import write_compare_plot, write_compare_report

    with open_workspace(ctx) as ws:
        try:
            comparison = compare_cards(ws, labels or None)
        except CardError as exc:
            fail(str(exc))
        data = comparison.to_json()
        plot_path = plot or ws.root / CARDS_DIR / "compare.png"
        data["plot"] = str(write_compare_plot(data, plot_path))
        index = write_compare_report(data, report) if report is not None else None
    if as_json:
        print_json(data)
        return
    print_comparison(comparison)
    out.print(f"plot: {data['plot']}", highlight=False)
    if index is not None:
        out.print(f"report: {index}", highlight=False)


def print_card(result: CardResult) -> None:
    table = Table(title=f"model card {result.label}")
    table.add_column("shot")
    table.add_column("expects")
    table.add_column("result")
    table.add_column("match", justify="right")
    table.add_column("first-try reasons")
    for shot in result.shots:
        first = shot.attempts[0] if shot.attempts else None
        if shot.first_try:
            status = "[green]pass[/green]"
        elif shot.passed:
            status = f"[yellow]pass on try {shot.passed_on}[/yellow]"
        else:
            status = "[red]fail[/red]" if shot.attempts else "not run"
        match = (first.score or {}).get("match") if first else None
        table.add_row(
            shot.shot.id,
            ", ".join(v for v in shot.shot.expects().values() if v),
            status,
            "-" if match is None else f"{match:.1f}",
            "; ".join(first.reasons) if first else "",
        )
    out.print(table)
    n = len(result.shots)
    colour = "green" if result.meets_goal else "red"
    out.print(
        f"first try: [{colour}]{sum(s.first_try for s in result.shots)}/{n} "
        f"({result.first_try_rate:.0%})[/{colour}] (goal {result.goal:.0%}); within "
        f"{result.tries} tries: {sum(s.passed for s in result.shots)}/{n} "
        f"({result.within_rate:.0%}); mean match "
        + ("-" if result.mean_match is None else f"{result.mean_match:.2f}")
    )


def print_comparison(comparison: CardComparison) -> None:
    cards = comparison.cards
    table = Table(title="model cards")
    table.add_column("")
    for c in cards:
        table.add_column(c.label, justify="center")
    table.add_row("first try", *[f"{c.first_try_rate:.0%}" for c in cards], style="bold")
    table.add_row("within tries", *[f"{c.within_rate:.0%}" for c in cards])
    table.add_row(
        "mean match", *["-" if c.mean_match is None else f"{c.mean_match:.2f}" for c in cards]
    )
    table.add_row("recipe", *[c.recipe_hash[:10] for c in cards])
    table.add_section()
    marks = {"first_try": "[green]pass[/green]", "retry": "[yellow]retry[/yellow]",
             "failed": "[red]fail[/red]", "missing": "-"}  # fmt: skip
    for shot_id in comparison.shot_ids:
        table.add_row(shot_id, *[marks[comparison.outcome(c, shot_id)] for c in cards])
    out.print(table)
    for c in cards:
        bar = "#" * round(20 * c.first_try_rate)
        out.print(f"{c.label:>12} {bar:<20} {c.first_try_rate:.0%}", highlight=False)


def _safe(label: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in label)
