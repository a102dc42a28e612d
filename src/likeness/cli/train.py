"""`likeness train`: train a character LoRA from a dataset version, as a resumable job.

likeness train new FILE [--family F] [--dataset REF] [--model PATH]   write a commented recipe
likeness train RECIPE.toml [--json] [--device D] [--again]              train (or resume) it

``likeness train RECIPE.toml`` is ``likeness train run RECIPE.toml``. ``--json`` shape (stable;
new keys may be added)::

    {"run_id": 1, "job_id": 4, "state": "done", "resumed_from": 250 | null, "steps": 2000,
     "total_steps": 2000, "output_dir": ".../training/run-1-mara-v1",
     "final_lora": ".../training/run-1-mara-v1/mara-v1.safetensors",
     "checkpoints": [{"id": 1, "run_id": 1, "step": 250, "path": "...", "sha256": "...",
                      "loss": 0.118, "lora_id": 3 | null, "metrics": {...} | null,
                      "created_at": "..."}],
     "cache": {"latents_encoded": 0, "latents_cached": 24, "texts_encoded": 0,
               "texts_cached": 2},
     "skipped": ["<sha256 of an excluded image>"], "warnings": ["..."], "seconds": 1840.2,
     "steps_per_s": 1.1 | null, "already_trained": false}
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from click import Context
from rich.progress import BarColumn, Progress, TextColumn
from typer.core import TyperGroup

from likeness.cli.common import JSON_HELP, err, fail, open_workspace, out, print_json, resumable
from likeness.recipes import FAMILIES, RecipeError


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
    as_json: Annotated[bool, typer.Option("--json", help=JSON_HELP)] = False,
) -> None:
    """Train the LoRA a recipe describes, as a job: killed, the same command resumes it.

    Latents and caption embeddings are cached in the workspace (a second run encodes
    nothing); a kohya LoRA file is written every checkpoint_every steps; a NaN or infinite
    loss stops training at once and keeps the last good checkpoint.

    Example: likeness train mara-lora.toml
    """
    from likeness.train.loop import Diverged, StepReport, TrainHooks
    from likeness.train.recipe import TrainRecipe
    from likeness.train.run import TrainError, train_lora

    if device is not None and device not in ("cpu", "cuda", "mps"):
        fail(f"--device: {device!r} is not cpu, cuda or mps")
    try:
        loaded = TrainRecipe.from_toml_file(recipe)
    except RecipeError as exc:
        fail(str(exc))
    with open_workspace(ctx) as ws:
        url = ws.settings.comfyui.url if comfy_url is None else comfy_url
        bar = _step_bar()
        task = bar.add_task("training", total=None, loss="", rate="", eta="")

        def on_step(report: StepReport) -> None:
            if not bar.live.is_started:  # the bar appears with the first step
                bar.start()
            bar.update(
                task,
                completed=report.step,
                total=report.total,
                loss=f"loss {report.loss:.4f}",
                rate=f"{report.steps_per_s:.2f} it/s" if report.steps_per_s else "",
                eta=f"ETA {_duration(report.eta_s)}" if report.eta_s is not None else "",
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
    if as_json:
        print_json(data)
        return
    _print_summary(data)


@app.command("new")
def new(
    ctx: typer.Context,
    file: Annotated[Path, typer.Argument(help="The recipe file to write.")],
    family: Annotated[str, typer.Option(help=f"Model family: {', '.join(FAMILIES)}.")] = "sdxl",
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
    """
    from likeness.train.recipe import TrainRecipe, write_example

    if file.exists() and not force:
        fail(f"{file} exists; pass another file name or --force")
    values: dict[str, Any] = {"family": family, "model": model}
    if family == "sdxl":
        values["noise_offset"] = 0.0357  # kohya: SDXL's base model was trained with it
    if family == "sd15":
        values["resolution"] = 512
    values.update(_workspace_defaults(ctx, dataset))
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
    for checkpoint in data["checkpoints"]:
        loss, fixed = checkpoint["loss"], checkpoint["fixed_loss"]
        out.print(
            f"  step {checkpoint['step']:>6}  loss {'' if loss is None else f'{loss:.4f}'}  "
            f"fixed-batch loss {'' if fixed is None else f'{fixed:.4f}'}  {checkpoint['path']}",
            highlight=False,
        )
