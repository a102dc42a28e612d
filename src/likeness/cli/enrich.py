"""`likeness enrich`: edit source photos into the empty and thin cells of the card's grid.

likeness enrich [--dataset NAME@vN | --origin source] [--plan auto | --plan FILE.toml]
                [--recipe edit.toml] [-n PER_SOURCE] [--thin N] [--report DIR] [--json]
likeness enrich plan --out plan.toml [--dataset NAME@vN | --origin source] [-n] [--thin N]

``likeness enrich --json`` shape (stable; new keys may be added)::

    {"job": 7, "resumed": false,
     "plan": {"origin": "auto" | "plan.toml", "selection": "origin source", "thin_below": 3,
              "per_source": 5, "unfilled": ["profile_left/sad (0 of 3 edits)"]},
     "recipe": {"engine": "diffusers", "model": "...", "steps": 30, "seed": 0,
                "max_side": 1024, "loras": []}, "recipe_hash": "...",
     "edits_planned": 12, "kept": 5, "rejected": 6, "failed": 1, "made": 12,
     "edits": [{"source": "<sha256>", "angle": "half_left", "expression": "neutral",
                "instruction": "...", "note": "...", "key": "...", "verdict": "rejected",
                "reasons": ["identity: match 1.3 < 5"], "result_sha": "..." | null,
                "image_sha": "..." | null, "match": 1.3, "pass": false,
                "measured_angle": "half_right", "yaw": -21.8, "measured_expression": "neutral",
                "flags": [], "fresh": true}, ...],
     "coverage": COVERAGE, "report": "enrich-report/index.html" | null}

``likeness enrich plan --json``: ``{"selection": SELECTION, "out": "plan.toml",
"plan": {... as above, with "edits": [{"source", "angle", "expression", "instruction",
"note"}]}, "coverage": COVERAGE}``; COVERAGE and SELECTION as `likeness dataset coverage`.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from likeness.cli.common import (
    JSON_HELP,
    err,
    fail,
    open_workspace,
    out,
    print_json,
    progress_bar,
    resumable,
)
from likeness.cli.dataset import print_coverage
from likeness.cli.sweep import AllowPickleOption, engine_session, output_error
from likeness.engines import EngineCannotHonour, get_engine
from likeness.evaluate.coverage import (
    THIN_BELOW,
    CoverageError,
    ImageChoice,
    card_grid,
    choose_images,
)
from likeness.evaluate.edit_recipe import EditRecipe
from likeness.evaluate.enrich import (
    EditOutcome,
    corrections_plan,
    coverage_with_enrichments,
    open_plan,
    plan_for,
    run_enrich,
)
from likeness.evaluate.enrich_plan import PER_SOURCE, Plan, PlanError, load_plan
from likeness.evaluate.scorer import NoReferences, WorkspaceScorer, reference_paths
from likeness.jobs import job_key
from likeness.recipes import RecipeError

if TYPE_CHECKING:
    from likeness.engines import Engine
    from likeness.workspace import Workspace

app = typer.Typer(invoke_without_command=True)
EDIT_RECIPE_FILE = "edit.toml"

DatasetOption = Annotated[
    str | None,
    typer.Option("--dataset", "-d", help="Count and edit the images of NAME or NAME@vN."),
]
OriginOption = Annotated[
    list[str] | None,
    typer.Option(help="Count and edit the images of this origin (default: source); repeatable."),
]
PerSourceOption = Annotated[
    int, typer.Option("-n", min=1, help="At most this many edits of each source photo per plan.")
]
ThinOption = Annotated[
    int,
    typer.Option("--thin", min=1, help=f"A cell with fewer images is thin (default {THIN_BELOW})."),
]
RecipeOption = Annotated[
    Path | None,
    typer.Option(
        "--recipe", "-r", help=f"Edit recipe TOML (default: <workspace>/{EDIT_RECIPE_FILE})."
    ),
]


@app.callback()
def enrich(
    ctx: typer.Context,
    dataset: DatasetOption = None,
    origin: OriginOption = None,
    plan: Annotated[
        str, typer.Option("--plan", help="`auto` (from coverage) or a plan TOML file.")
    ] = "auto",
    recipe: RecipeOption = None,
    per_source: PerSourceOption = PER_SOURCE,
    thin: ThinOption = THIN_BELOW,
    report: Annotated[
        Path | None,
        typer.Option("--report", help="Write the before/after report into this folder."),
    ] = None,
    engine: Annotated[
        str | None, typer.Option(help="Engine running the edits (default: the recipe's).")
    ] = None,
    allow_pickle: AllowPickleOption = False,
    device: Annotated[str | None, typer.Option(help="diffusers: cuda, mps or cpu.")] = None,
    dtype: Annotated[str | None, typer.Option(help="diffusers: bf16, fp16 or fp32.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help=JSON_HELP)] = False,
) -> None:
    """Edit source photos toward the empty and thin cells of the card's angle x expression grid.

    The plan asks for the empty cells first, each from the best-suited source photo (fewest
    changes, sharp, identity passing). Every edit is scored at once against the source photos
    and kept, as origin `enriched` with its provenance, only when identity passes and the asked
    angle and expression were reached; the others are recorded with their reasons. The run is
    a job: interrupted (even by kill -9), the same command resumes it and stores nothing twice.

    Example: likeness enrich plan --out plan.toml && likeness enrich --plan plan.toml
    --recipe edit.toml --report enrich-report
    """
    if ctx.invoked_subcommand is not None:
        return
    with open_workspace(ctx) as ws:
        # 1. Edit recipe, engine and references; refuse before any work.
        loaded = _edit_recipe(ws, recipe, engine)
        chosen = _choose(ws, dataset, origin)
        runner = build_edit_engine(loaded, allow_pickle=allow_pickle, device=device, dtype=dtype)
        with resumable("the enrichment"), engine_session(runner):
            try:
                scorer = WorkspaceScorer(ws)
            except NoReferences as exc:
                fail(str(exc))
            # 2. The plan: from a file, or from coverage (a killed run resumes its own).
            if plan == "auto":
                key = job_key(
                    "enrich",
                    "auto",
                    chosen.label,
                    chosen.shas,
                    thin,
                    per_source,
                    loaded.recipe_hash(),
                )
                the_plan, _ = open_plan(
                    ws,
                    key,
                    lambda: plan_for(
                        ws,
                        chosen,
                        loaded,
                        thin_below=thin,
                        per_source=per_source,
                        instruments=scorer.instruments,
                    ),
                )
            else:
                try:
                    the_plan = load_plan(plan, ws.db)
                except PlanError as exc:
                    fail(str(exc))
                key = job_key("enrich", the_plan.plan_hash(), loaded.recipe_hash())
            if not the_plan.edits:
                err.print(_nothing_to_do(the_plan), highlight=False)
            # 3. Edit, judge, store.
            with progress_bar() as bar:
                task = bar.add_task("edits", total=max(len(the_plan.edits), 1))

                def on_edit(done: int, _total: int, outcome: EditOutcome) -> None:
                    bar.update(task, completed=done, description=outcome.edit.cell[:28])
                    if outcome.fresh:
                        bar.console.print(_outcome_line(outcome), highlight=False)

                try:
                    result = run_enrich(
                        ws, the_plan, runner, loaded, scorer, key=key, progress=on_edit
                    )
                except EngineCannotHonour as exc:
                    fail(f"{loaded.engine} cannot run these edits: {exc}")
        data = result.to_json()
        # 4. Coverage now, and the report (the edits are stored: a failed write costs a rerun).
        coverage, _ = coverage_with_enrichments(
            ws, chosen.shas, card_grid(), thin, instruments=scorer.instruments
        )
        data["coverage"] = {"selection": chosen.to_json(), **coverage.to_json()}
        data["report"] = None
        if report is not None:
            from likeness.report.enrich import write_enrich_report

            try:
                data["report"] = str(write_enrich_report(data, report, image_path=ws.blobs.path))
            except OSError as exc:
                fail(output_error(exc, "every edit"))
    if as_json:
        print_json(data)
        return
    _print_run(data)
    print_coverage(data["coverage"], title=f"coverage of {chosen.label} with what was kept")
    if data["report"]:
        out.print(f"report: {data['report']}", highlight=False)


@app.command("plan")
def plan_command(
    ctx: typer.Context,
    out_file: Annotated[Path, typer.Option("--out", "-o", help="Where to write the plan TOML.")],
    dataset: DatasetOption = None,
    origin: OriginOption = None,
    recipe: RecipeOption = None,
    per_source: PerSourceOption = PER_SOURCE,
    thin: ThinOption = THIN_BELOW,
    corrections: Annotated[
        bool,
        typer.Option(
            "--corrections",
            help="Plan one fix per image rejected in review (its note and tags as instruction).",
        ),
    ] = False,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing plan file.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help=JSON_HELP)] = False,
) -> None:
    """Write the automatic plan as an editable TOML file (run it with `likeness enrich --plan`).

    Each edit names its source photo, the asked cell and a default instruction such as "turn
    the head about 45 degrees toward the left side of the picture ...; keep the face
    identical ...". Edits already made with the edit recipe (when one is given or found) are
    left out, so the next best source is asked instead. With --corrections, the edits fix the
    images rejected in review instead; kept fixes become correction pairs for
    `likeness dataset export --format edit-pairs`.

    Example: likeness enrich plan --dataset mara@v2 -n 4 --out plan.toml
    """
    if out_file.exists() and not overwrite:
        fail(f"{out_file} exists; pass another file or --overwrite")
    if corrections:
        with open_workspace(ctx) as ws:
            the_plan = corrections_plan(ws)
        _write_plan(the_plan, out_file)
        if as_json:
            print_json({"selection": None, "out": str(out_file), "plan": the_plan.to_json(),
                        "coverage": None})  # fmt: skip
            return
        _print_plan(the_plan)
        _wrote(out_file, the_plan)
        return
    with open_workspace(ctx) as ws:
        chosen = _choose(ws, dataset, origin)
        loaded = None
        if recipe is not None or (ws.root / EDIT_RECIPE_FILE).is_file():
            loaded = _edit_recipe(ws, recipe, None)
        if not reference_paths(ws):
            fail(
                f"{ws.root}: no source photos to judge identity against; "
                "run `likeness add PHOTOS --origin source` first"
            )
        the_plan = plan_for(ws, chosen, loaded, thin_below=thin, per_source=per_source)
        coverage, _ = coverage_with_enrichments(ws, chosen.shas, card_grid(), thin)
    _write_plan(the_plan, out_file)
    cov = {"selection": chosen.to_json(), **coverage.to_json()}
    if as_json:
        print_json(
            {
                "selection": chosen.to_json(),
                "out": str(out_file),
                "plan": the_plan.to_json(),
                "coverage": cov,
            }
        )
        return
    print_coverage(cov, title=f"coverage of {chosen.label}")
    _print_plan(the_plan)
    _wrote(out_file, the_plan)


def _write_plan(plan: Plan, path: Path) -> None:
    try:
        path.write_text(plan.to_toml(), encoding="utf-8")
    except OSError as exc:
        fail(f"{path}: cannot be written ({exc.strerror or exc})")


def _wrote(path: Path, plan: Plan) -> None:
    err.print(
        f"wrote {path} ({len(plan.edits)} edits): edit it, then `likeness enrich --plan {path}`",
        highlight=False,
    )


def build_edit_engine(
    recipe: EditRecipe, *, allow_pickle: bool, device: str | None, dtype: str | None
) -> Engine:
    """The engine whose ``edit`` runs the recipe's model; refuses a model it cannot load."""
    from likeness.engines.diffusers.edit import EditSettings, check_edit_model
    from likeness.engines.diffusers.loras import check_lora

    try:
        check_edit_model(recipe.model, allow_pickle=allow_pickle)
        for index, lora in enumerate(recipe.loras):
            check_lora(index, lora, allow_pickle=allow_pickle)
    except EngineCannotHonour as exc:
        fail(f"edit recipe: {exc}")
    settings = EditSettings(steps=recipe.steps, seed=recipe.seed, loras=recipe.loras)
    try:
        return get_engine(
            recipe.engine,
            allow_pickle=allow_pickle,
            device=device,
            dtype=dtype,
            edit_model=recipe.model,
            edit=settings,
        )
    except ValueError as exc:
        fail(str(exc))
    raise AssertionError("unreachable")


def _edit_recipe(ws: Workspace, path: Path | None, engine: str | None) -> EditRecipe:
    target = path or ws.root / EDIT_RECIPE_FILE
    if path is None and not target.is_file():
        fail(
            f"no edit recipe: pass --recipe edit.toml or write {target} with at least "
            'model = "<diffusers folder of Qwen-Image-Edit, FLUX Kontext or InstructPix2Pix>"'
        )
    try:
        loaded = EditRecipe.from_toml_file(target)
        if engine is not None:
            loaded = EditRecipe.from_dict({**loaded.to_dict(), "engine": engine})
    except RecipeError as exc:
        fail(f"edit recipe {target}: {exc}")
    return loaded


def _choose(ws: Workspace, dataset: str | None, origin: list[str] | None) -> ImageChoice:
    try:
        chosen = choose_images(
            ws, dataset=dataset, origins=origin or (() if dataset else ("source",))
        )
    except CoverageError as exc:
        fail(str(exc))
    if not chosen.shas:
        fail(f"{chosen.label}: no images; add photos with `likeness add` or pick another dataset")
    return chosen


def _nothing_to_do(plan: Plan) -> str:
    if plan.unfilled:
        return (
            f"nothing to edit: no usable source photo is left for {', '.join(plan.unfilled)} "
            "(raise -n, add source photos, or change the edit recipe)"
        )
    return "nothing to edit: every cell of the grid has enough images"


def _outcome_line(outcome: EditOutcome) -> str:
    colour = {"kept": "green", "rejected": "red"}.get(outcome.verdict, "yellow")
    what = f"{outcome.edit.cell} from {outcome.edit.source[:12]}"
    if outcome.verdict == "kept":
        match = (outcome.score or {}).get("match")
        return f"[{colour}]kept[/{colour}] {what} (match {match})"
    return f"[{colour}]{outcome.verdict}[/{colour}] {what}: {'; '.join(outcome.reasons)}"


def _print_run(data: dict) -> None:
    table = Table(
        title=f"enrichment job {data['job']}: {data['kept']} kept, {data['rejected']} "
        f"rejected, {data['failed']} failed"
    )
    for column in ("cell", "source", "verdict", "match", "measured", "reasons"):
        table.add_column(column)
    for e in data["edits"]:
        colour = {"kept": "green", "rejected": "red"}.get(e["verdict"], "yellow")
        table.add_row(
            f"{e['angle'] or 'any'}/{e['expression'] or 'any'}",
            e["source"][:12],
            f"[{colour}]{e['verdict']}[/{colour}]",
            "" if e["match"] is None else f"{e['match']:.1f}",
            f"{e['measured_angle'] or '-'}/{e['measured_expression'] or '-'}",
            "; ".join(e["reasons"]),
        )
    out.print(table)


def _print_plan(plan: Plan) -> None:
    table = Table(title=f"plan: {len(plan.edits)} edits")
    for column in ("#", "cell", "source", "instruction"):
        table.add_column(column)
    for i, e in enumerate(plan.edits, start=1):
        table.add_row(str(i), e.cell, e.source[:12], e.instruction)
    out.print(table)
    if plan.unfilled:
        err.print(
            f"short of edits (raise -n or add source photos): {', '.join(plan.unfilled)}",
            highlight=False,
        )
