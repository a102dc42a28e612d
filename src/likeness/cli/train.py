"""`likeness train`: train a character LoRA from a dataset version, as a resumable job.

likeness train new FILE [--family F] [--dataset REF] [--model PATH]   write a commented recipe
likeness train RECIPE.toml [--json] [--device D] [--again] [--report DIR]  train (or resume) it
likeness train RECIPE.toml --engine replicate|fal [--destination O/M]  train it on a hosted API
likeness train report RUN --out DIR [--json]                           the HTML report of a run

``likeness train RECIPE.toml`` is ``likeness train run RECIPE.toml``. ``--json`` shape (stable;
new keys may be added)::

    {"run_id": 1, "job_id": 4, "state": "done", "resumed_from": 250 | null, "steps": 2000,
     "total_steps": 2000, "output_dir": ".../training/run-1-mara-v1",
     "final_lora": ".../training/run-1-mara-v1/mara-v1.safetensors",
     "checkpoints": [CHECKPOINT, ...], "best": CHECKPOINT | null,
     "cache": {"latents_encoded": 0, "latents_cached": 24, "texts_encoded": 0,
               "texts_cached": 2},
     "skipped": ["<sha256 of an excluded image>"], "warnings": ["..."], "seconds": 1840.2,
     "steps_per_s": 1.1 | null, "already_trained": false, "report": "DIR/index.html" | null}

    CHECKPOINT = {"id": 1, "run_id": 1, "step": 250, "path": "...", "sha256": "...",
                  "loss": 0.118, "fixed_loss": 0.121, "lora_id": 3 | null, "best": false,
                  "created_at": "...",
                  "metrics": null | {"match": 7.8, "pass_rate": 0.875, "grain": 1.2,
                                     "plastic": 1.05, "objective": 7.7, "objective_std": 0.9,
                                     "probes": 8, "failed": 0, "faces": 8, "memorised": 0,
                                     "memorised_probes": [{"shot", "seed", "image_sha", "of",
                                                           "by", ...}],
                                     "via": "in-memory" | "file" | ENGINE, "seconds": 41.2,
                                     "references": 12, "judge_hash": "..."},
                  "probes": [{"shot": "front_neutral", "seed": 1, "prompt": "...",
                              "image_sha": "...", "match": 8.1, "pass": true, "grain": 1.1,
                              "plastic": 1.0, "angle": "front", "expression": "neutral",
                              "flags": [], "memorised": null | {"of": "<sha256>",
                              "by": "perceptual_hash" | "same_face_shot", ...},
                              "error": null}, ...]}

``likeness train report RUN --json`` prints ``{"run": {...}, "losses": [[step, loss, lr], ...],
"checkpoints": [CHECKPOINT, ...], "best": CHECKPOINT | null, "objective": "...",
"report": "DIR/index.html"}``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from click import Context
from rich.progress import BarColumn, Progress, TextColumn
from rich.table import Table
from typer.core import TyperGroup

from likeness.cli.common import JSON_HELP, err, fail, open_workspace, out, print_json, resumable
from likeness.recipes import RecipeError
from likeness.train.recipe import QWEN_EDIT, TRAIN_FAMILIES


class _RunByDefault(TyperGroup):
    """`likeness train FILE` means `likeness train run FILE`: a first word that is not a
    subcommand (and not --help) is the recipe of `run`."""

    def parse_args(self, ctx: Context, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ("--help", "-h"):
            args = ["run", *args]
        return super().parse_args(ctx, args)


app = typer.Typer(
    cls=_RunByDefault,
    help="Train a character LoRA on a dataset version: `likeness train RECIPE.toml`; "
    "`likeness train new FILE` writes a commented recipe.",
    no_args_is_help=True,
)


@app.command("run")
def run(
    ctx: typer.Context,
    recipe: Annotated[Path, typer.Argument(help="Train recipe TOML (`likeness train new`).")],
    device: Annotated[
        str | None, typer.Option(help="cpu, cuda or mps (default: the best available).")
    ] = None,
    comfy_url: Annotated[
        str | None,
        typer.Option(
            "--comfy-url",
            help="ComfyUI server asked to free its memory first (default: the workspace's "
            "[comfyui] url; '' to skip).",
        ),
    ] = None,
    again: Annotated[
        bool, typer.Option("--again", help="Train again a recipe that already finished.")
    ] = False,
    allow_pickle: Annotated[
        bool,
        typer.Option("--allow-pickle", help="Accept pickle model files (.ckpt .pt .bin)."),
    ] = False,
    report: Annotated[
        Path | None,
        typer.Option("--report", help="Write the HTML report of the run into this folder."),
    ] = None,
    engine: Annotated[
        str | None,
        typer.Option(
            "--engine",
            help="Train on a hosted API instead of this machine: replicate or fal (FLUX).",
        ),
    ] = None,
    destination: Annotated[
        str | None,
        typer.Option(help="Replicate: the owner/model that receives the trained version."),
    ] = None,
    create_destination: Annotated[
        bool,
        typer.Option("--create-destination", help="Replicate: create the model if missing."),
    ] = False,
    max_cost: Annotated[
        float | None,
        typer.Option(help="Hosted: stop before spending more than this many USD (estimated)."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help=JSON_HELP)] = False,
) -> None:
    """Train the LoRA a recipe describes, as a job: killed, the same command resumes it.

    Latents and caption embeddings are cached in the workspace (a second run encodes
    nothing); a kohya LoRA file is written every checkpoint_every steps; a NaN or infinite
    loss stops training at once and keeps the last good checkpoint. Each checkpoint is
    judged by likeness (the recipe's judge table): a few model-card probes scored against the
    dataset's source photos; the best checkpoint is marked. With --engine replicate|fal the
    recipe trains a FLUX LoRA on that API (the job follows the training it started).

    Example: likeness train mara-lora.toml --report train-report
    """
    from likeness.train.recipe import TrainRecipe

    if device is not None and device not in ("cpu", "cuda", "mps"):
        fail(f"--device: {device!r} is not cpu, cuda or mps")
    if engine is not None and engine not in ("replicate", "fal"):
        fail(f"--engine: {engine!r} is not replicate or fal (omit it to train here)")
    try:
        loaded = TrainRecipe.from_toml_file(recipe)
    except RecipeError as exc:
        fail(str(exc))
    if engine is not None:
        data = _train_hosted(ctx, loaded, engine, destination, create_destination, max_cost,
                             report)  # fmt: skip
    else:
        data = _train_here(ctx, loaded, device, comfy_url, again, allow_pickle, report)
    if as_json:
        print_json(data)
        return
    _print_summary(data)


def _train_here(
    ctx: typer.Context,
    loaded: Any,
    device: str | None,
    comfy_url: str | None,
    again: bool,
    allow_pickle: bool,
    report: Path | None,
) -> dict[str, Any]:
    """`likeness train RECIPE`: train on this machine; the `--json` data."""
    from likeness.train.loop import Diverged, StepReport, TrainHooks
    from likeness.train.run import TrainError, train_lora

    with open_workspace(ctx) as ws:
        url = ws.settings.comfyui.url if comfy_url is None else comfy_url
        bar = _step_bar()
        task = bar.add_task("training", total=None, loss="", rate="", eta="")

        def on_step(step: StepReport) -> None:
            if not bar.live.is_started:  # the bar appears with the first step
                bar.start()
            bar.update(
                task,
                completed=step.step,
                total=step.total,
                loss=f"loss {step.loss:.4f}",
                rate=f"{step.steps_per_s:.2f} it/s" if step.steps_per_s else "",
                eta=f"ETA {_duration(step.eta_s)}" if step.eta_s is not None else "",
            )

        def notify(line: str) -> None:
            bar.console.print(line, highlight=False, markup=False)

        with resumable("the training run"):
            try:
                result = train_lora(
                    ws,
                    loaded,
                    device=device,
                    allow_pickle=allow_pickle,
                    comfy_url=url or None,
                    hooks=TrainHooks(on_step=on_step),
                    notify=notify,
                    again=again,
                )
            except TrainError as exc:
                fail(str(exc))
            except Diverged as exc:
                _stop(bar)
                err.print(f"[red]diverged:[/red] {exc}", highlight=False, markup=True)
                raise typer.Exit(1) from None
            finally:
                _stop(bar)
        data = result.to_json()
        data["report"] = _write_report(ws, result.run_id, report)
    return data


@app.command("report")
def report_(
    ctx: typer.Context,
    run_ref: Annotated[str, typer.Argument(metavar="RUN", help="Run id or run name.")],
    out_dir: Annotated[Path, typer.Option("--out", help="Folder to write index.html into.")],
    as_json: Annotated[bool, typer.Option("--json", help=JSON_HELP)] = False,
) -> None:
    """The HTML report of a training run: loss curve, likeness per checkpoint (best marked),
    a contact sheet of the probes of each checkpoint.

    Example: likeness train report 3 --out train-report
    """
    from likeness.train.runs import RunNotFound, find_run, report_data

    with open_workspace(ctx) as ws:
        try:
            run = find_run(ws, run_ref)
        except RunNotFound as exc:
            fail(str(exc))
        data = report_data(ws, run)
        data["report"] = _write_report(ws, run.id, out_dir)
    if as_json:
        print_json(data)
        return
    out.print(f"report: {data['report']}", highlight=False)


def _write_report(ws: Any, run_id: int, folder: Path | None) -> str | None:
    """Write the run's report into ``folder`` (nothing when None); its index path."""
    if folder is None:
        return None
    from likeness.cli.sweep import output_error
    from likeness.report.train import write_train_report
    from likeness.train import store
    from likeness.train.runs import report_data

    run = store.get_run(ws.db, run_id)
    assert run is not None
    try:
        index = write_train_report(report_data(ws, run), folder, image_path=ws.blobs.path)
    except OSError as exc:
        fail(output_error(exc, f"training run {run_id}"))
    return str(index)


def _train_hosted(
    ctx: typer.Context,
    recipe: Any,
    provider: str,
    destination: str | None,
    create_destination: bool,
    max_cost: float | None,
    report: Path | None,
) -> dict[str, Any]:
    """`likeness train RECIPE --engine replicate|fal`: the hosted path; the same `--json`."""
    from likeness.engines.base import EngineCannotHonour
    from likeness.engines.hosted import HostedError
    from likeness.train.hosted import train_hosted_recipe
    from likeness.train.run import TrainError

    with open_workspace(ctx) as ws:
        bar = _step_bar()
        task = bar.add_task(f"training on {provider}", total=None, loss="", rate="", eta="")

        def on_progress(step: int, steps: int, line: str) -> None:
            if not bar.live.is_started:
                bar.start()
            bar.update(task, completed=step, total=steps, loss=line[-40:])

        def notify(line: str) -> None:
            bar.console.print(line, highlight=False, markup=False)

        with resumable("the hosted training"):
            try:
                result = train_hosted_recipe(
                    ws,
                    recipe,
                    provider,
                    destination=destination or "",
                    create_destination=create_destination,
                    max_cost=max_cost,
                    progress=on_progress,
                    notify=notify,
                )
            except (TrainError, EngineCannotHonour, HostedError) as exc:
                _stop(bar)
                fail(str(exc))
            finally:
                _stop(bar)
        data = result.to_json()
        data["report"] = _write_report(ws, result.run_id, report)
    return data


@app.command("new")
def new(
    ctx: typer.Context,
    file: Annotated[Path, typer.Argument(help="The recipe file to write.")],
    family: Annotated[
        str, typer.Option(help=f"Model family: {', '.join(TRAIN_FAMILIES)}.")
    ] = "sdxl",
    dataset: Annotated[
        str | None,
        typer.Option(help="Dataset version NAME@vN (default: the workspace's latest)."),
    ] = None,
    model: Annotated[
        str, typer.Option(help="Base model: .safetensors checkpoint or diffusers folder.")
    ] = "",
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing file.")] = False,
) -> None:
    """Write a commented train recipe: every field, its default and where it comes from.

    Inside a workspace, the [training] settings of likeness.toml and the latest dataset
    version fill it in.

    Example: likeness train new mara-lora.toml --model models/bigLove_xl.safetensors

    An edit-model LoRA on a version's edit pairs (family qwen_image_edit):
    likeness train new angles.toml --family qwen_image_edit --model models/qwen-image-edit
    --dataset mara-edits@v1
    """
    from likeness.train.recipe import TrainRecipe, write_example

    if file.exists() and not force:
        fail(f"{file} exists; pass another file name or --force")
    values: dict[str, Any] = {"family": family, "model": model}
    if family == "sdxl":
        values["noise_offset"] = 0.0357  # kohya: SDXL's base model was trained with it
    if family == "sd15":
        values["resolution"] = 512
        values["judge"] = {"width": 512, "height": 768}
    if family == "flux":
        values["judge"] = {"cfg": 3.5}  # FLUX's distilled guidance in practice
    found = _workspace_defaults(ctx, dataset)
    if family == QWEN_EDIT:
        # The workspace's [training] values are for character LoRAs; an edit-model LoRA
        # keeps its own defaults (ai-toolkit's Qwen-Image-Edit example).
        found = {k: v for k, v in found.items() if k == "dataset"}
    values.update(found)
    try:
        recipe = TrainRecipe.from_dict(values)
    except RecipeError as exc:
        fail(str(exc))
    write_example(file, recipe)
    missing = [name for name in ("model", "dataset") if not getattr(recipe, name)]
    todo = f"set {' and '.join(missing)}, then " if missing else ""
    err.print(f"wrote {file}: {todo}`likeness train {file}`", highlight=False, markup=False)


def _workspace_defaults(ctx: typer.Context, dataset: str | None) -> dict[str, Any]:
    """[training] settings and the latest dataset version, when a workspace is found."""
    from likeness.cli.common import workspace_path
    from likeness.store.datasets import list_versions
    from likeness.workspace import Workspace, WorkspaceError, find_workspace

    values: dict[str, Any] = {} if dataset is None else {"dataset": dataset}
    try:
        ws = Workspace.open(find_workspace(workspace_path(ctx)))
    except (WorkspaceError, ValueError):
        return values
    with ws:
        training = ws.settings.training
        values.update(
            rank=training.network_rank,
            alpha=float(training.network_alpha),
            learning_rate=training.learning_rate,
            warmup_steps=training.warmup_steps,
            mixed_precision=training.mixed_precision,
        )
        versions = list_versions(ws.db)
        if dataset is None and versions:
            latest = max(versions, key=lambda v: v.created_at)
            values["dataset"] = latest.ref
    return values


def _step_bar() -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("step {task.completed}/{task.total}"),
        TextColumn("{task.fields[loss]}"),
        TextColumn("{task.fields[rate]}"),
        TextColumn("{task.fields[eta]}"),
        console=err,
    )


def _stop(bar: Progress) -> None:
    if bar.live.is_started:
        bar.stop()


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}"


def _print_summary(data: dict[str, Any]) -> None:
    if data["already_trained"]:
        out.print(
            f"run {data['run_id']} already trained this recipe: {data['final_lora']} "
            "(pass --again to train it again)",
            highlight=False,
        )
        return
    resumed = f", resumed at step {data['resumed_from']}" if data["resumed_from"] else ""
    rate = f", {data['steps_per_s']:.2f} steps/s" if data["steps_per_s"] else ""
    out.print(
        f"run {data['run_id']}: {data['steps']} steps{resumed}{rate}; LoRA {data['final_lora']}",
        highlight=False,
    )
    cache = data["cache"]
    out.print(
        f"cache: {cache['latents_encoded']} latents encoded, {cache['latents_cached']} reused; "
        f"{cache['texts_encoded']} captions encoded, {cache['texts_cached']} reused",
        highlight=False,
    )
    table = Table("step", "loss", "fixed loss", "match", "pass", "grain", "plastic",
                  "objective", "memorised", "", "file")  # fmt: skip
    for checkpoint in data["checkpoints"]:
        m = checkpoint.get("metrics") or {}
        memorised = m.get("memorised")
        table.add_row(
            str(checkpoint["step"]),
            _num(checkpoint["loss"], 4),
            _num(checkpoint["fixed_loss"], 4),
            _num(m.get("match")),
            "-" if not m else f"{m['pass_rate']:.0%}",
            _num(m.get("grain")),
            _num(m.get("plastic")),
            _num(m.get("objective")),
            "-" if memorised is None else (f"[red]{memorised}[/red]" if memorised else "0"),
            "[green]best[/green]" if checkpoint.get("best") else "",
            Path(checkpoint["path"]).name,
        )
    out.print(table)
    best = data.get("best")
    if best:
        out.print(f"best checkpoint: step {best['step']}: {best['path']}", highlight=False)
    elif data["checkpoints"]:
        out.print("no checkpoint judged ([judge] is off, or nothing to judge against)")
    if data.get("report"):
        out.print(f"report: {data['report']}", highlight=False)


def _num(value: Any, digits: int = 2) -> str:
    return "-" if value is None else f"{float(value):.{digits}f}"
