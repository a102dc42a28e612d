"""`likeness train export-config`: a dataset version and a job config for kohya or ai-toolkit."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from likeness.cli.common import JSON_HELP, err, fail, open_workspace, out, print_json
from likeness.curate.export import ExportError
from likeness.store.datasets import DatasetError, resolve
from likeness.train.export_config import (
    FORMATS,
    ExportConfigError,
    TrainJob,
    export_training_config,
)


def export_config(
    ctx: typer.Context,
    ref: Annotated[str, typer.Argument(help="The dataset version to train on: NAME@vN.")],
    out_dir: Annotated[Path, typer.Argument(help="Empty or new folder to write.")],
    fmt: Annotated[str, typer.Option("--format", help="kohya or ai-toolkit.")] = "kohya",
    family: Annotated[str, typer.Option(help="sdxl, flux or sd15.")] = "sdxl",
    base_model: Annotated[
        str | None,
        typer.Option(help="Base model path as the trainer will see it (checkpoint or folder)."),
    ] = None,
    rank: Annotated[int | None, typer.Option(help="LoRA rank (default [training]).")] = None,
    alpha: Annotated[float | None, typer.Option(help="LoRA alpha (default [training]).")] = None,
    lr: Annotated[float | None, typer.Option(help="Learning rate (default [training]).")] = None,
    warmup: Annotated[int | None, typer.Option(help="Warmup steps (default [training]).")] = None,
    steps: Annotated[int, typer.Option(help="Training steps.")] = 2000,
    batch: Annotated[int, typer.Option(help="Batch size.")] = 1,
    resolution: Annotated[
        int | None, typer.Option(help="Training size in px (default 1024; 512 for sd15).")
    ] = None,
    mixed_precision: Annotated[
        str | None, typer.Option(help="bf16, fp16 or no (default [training]).")
    ] = None,
    optimizer: Annotated[str, typer.Option(help="adamw8bit or adamw.")] = "adamw8bit",
    checkpoint_every: Annotated[int, typer.Option(help="Save a LoRA every N steps.")] = 250,
    seed: Annotated[int, typer.Option(help="Training seed.")] = 42,
    repeats: Annotated[
        int | None, typer.Option(help="Times each image is seen per epoch (default [export]).")
    ] = None,
    clip_l: Annotated[str | None, typer.Option(help="kohya FLUX: CLIP-L file.")] = None,
    t5xxl: Annotated[str | None, typer.Option(help="kohya FLUX: T5-XXL file.")] = None,
    ae: Annotated[str | None, typer.Option(help="kohya FLUX: autoencoder file.")] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace a non-empty folder.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help=JSON_HELP)] = False,
) -> None:
    """Write a dataset version with a kohya (TOML) or ai-toolkit (YAML) job config that uses
    Likeness' training defaults, to train on another machine with that tool.

    Example: likeness train export-config mara@v2 ./rent/mara-v2 --format ai-toolkit
    """
    if fmt not in FORMATS:
        raise typer.BadParameter(f"{fmt!r}: use {' or '.join(FORMATS)}", param_hint="--format")
    parts = {k: v for k, v in (("clip_l", clip_l), ("t5xxl", t5xxl), ("ae", ae)) if v}
    with open_workspace(ctx) as ws:
        try:
            job = TrainJob.from_settings(
                ws.settings.training,
                family=family,
                base_model=base_model,
                rank=rank,
                alpha=alpha,
                learning_rate=lr,
                warmup_steps=warmup,
                mixed_precision=mixed_precision,
                steps=steps,
                batch=batch,
                resolution=resolution,
                optimizer=optimizer,
                checkpoint_every=checkpoint_every,
                seed=seed,
                repeats=repeats if repeats is not None else ws.settings.export.repeats,
                flux_parts=parts,
            )
            version = resolve(ws.db, ref)
            result = export_training_config(ws, version, out_dir, fmt, job, overwrite=overwrite)
        except (DatasetError, ExportError, ExportConfigError) as exc:
            fail(str(exc))
    if as_json:
        print_json({"ref": version.ref, **result.to_dict()})
        return
    for warning in result.warnings:
        err.print(f"[yellow]warning:[/yellow] {warning}", highlight=False)
    out.print(
        f"exported {version.ref} ({result.dataset.count} images) and a {fmt} job to "
        f"{result.folder}",
        highlight=False,
    )
    for role, path in result.files.items():
        out.print(f"  {role:<15} {path}", highlight=False)
    var = "SD_SCRIPTS" if fmt == "kohya" else "AI_TOOLKIT"
    out.print(f"run it: {var}=/path/to/{fmt} sh {result.folder / 'train.sh'}", highlight=False)
