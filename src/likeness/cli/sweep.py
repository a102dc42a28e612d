"""`likeness sweep`: generate a grid of recipe variants, score every image, rank the variants.

likeness sweep new [FILE]                      write a commented example spec
likeness sweep SPEC.toml [--engine E] [--json] [--csv F] [--report DIR] [--best-out FILE]
                         [--workers N | --comfy-url URL ...] [--ray ADDRESS]   (docs/scale.md)

``--json`` shape (stable; new keys may be added)::

    {"sweep_id": 1, "name": "...", "spec_hash": "...", "axes": ["cfg", "loras.0.strength"],
     "seeds": [1, 2], "prompts": ["..."], "objective": {"match_weight": 1.0, ...,
     "formula": "1 x match - ..."}, "total": 18, "finished": 18, "generated": 5,
     "best": CONFIG | null, "configs": [CONFIG, ...]}

    CONFIG = {"rank": 1, "config_key": "...", "config": {"cfg": 4.0}, "label": "cfg=4",
              "objective": 7.1, "objective_std": 0.4, "mean_match": 7.9, "pass_rate": 1.0,
              "mean_grain": 0.8, "mean_plastic": 0.1, "mean_sharpness": 120.0, "images": 2,
              "failed": 0, "recipe_hash": "...", "cells": [CELL, ...]}
    CELL = {"cell_key": "...", "seed": 1, "prompt": "...", "image_sha": "...",
            "objective": 7.3, "match": 8.0, "pass": true, "angle": "front",
            "expression": "neutral", "body_pose": "not_visible", "grain": 0.7,
            "plastic": 0.1, "sharpness": 130.2, "flags": [], "error": null}

``--csv`` writes one row per image: rank, configuration label, each axis value, seed, prompt,
image sha256, objective, match, pass, angle, expression, grain, plastic, sharpness, flags.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import Progress
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
from likeness.config import HostedSettings
from likeness.engines import ENGINE_NAMES, Engine, EngineCannotHonour, ProgressUpdate, get_engine
from likeness.evaluate.cells import Cell
from likeness.evaluate.current import with_workspace_trigger
from likeness.evaluate.scorer import NoReferences, WorkspaceScorer
from likeness.evaluate.sweep import SweepResult, run_sweep
from likeness.evaluate.sweep_spec import EXAMPLE_SPEC, SweepCell, SweepSpecError, load_spec
from likeness.recipes import RecipeError

ENGINE_HELP = f"Engine: {', '.join(ENGINE_NAMES)} (default: the recipe's)."
# The engine options of sweep, card and loop.
EngineOption = Annotated[str | None, typer.Option(help=ENGINE_HELP)]
ComfyUrlOption = Annotated[
    str | None,
    typer.Option("--comfy-url", help="ComfyUI server URL (default: the workspace setting)."),
]
AllowPickleOption = Annotated[
    bool, typer.Option("--allow-pickle", help="Accept pickle model files (.ckpt .pt .bin).")
]
MaxCostOption = Annotated[
    float | None,
    typer.Option(
        "--max-cost",
        min=0.0,
        help="replicate, fal: stop before the estimated spend passes this many USD "
        "(default: [hosted] max_cost).",
    ),
]
MaxImagesOption = Annotated[
    int | None,
    typer.Option(
        "--max-images",
        min=0,
        help="replicate, fal: stop before submitting more predictions than this "
        "(default: [hosted] max_images).",
    ),
]


def build_engine(
    name: str,
    *,
    comfy_url: str | None,
    allow_pickle: bool = False,
    device: str | None = None,
    dtype: str | None = None,
    hosted: HostedSettings | None = None,
    max_cost: float | None = None,
    max_images: int | None = None,
) -> Engine:
    """The engine named ``name`` with the command line's options; exits with one line on
    an unknown name, a server that cannot be reached or a hosted API token that is missing."""
    options: dict[str, Any] = {}
    if name == "diffusers":
        options = {"device": device, "dtype": dtype}
    elif name in ("replicate", "fal"):
        options = {"settings": hosted, "max_cost": max_cost, "max_images": max_images}
    try:
        return get_engine(name, comfy_url=comfy_url, allow_pickle=allow_pickle, **options)
    except ValueError as exc:
        fail(str(exc))
    except Exception as exc:  # a missing extra, a server that cannot be reached
        fail(f"{name}: {type(exc).__name__}: {exc}")
    raise AssertionError("unreachable")


@contextlib.contextmanager
def engine_session(engine: Engine) -> Iterator[Engine]:
    """Release the engine's models and close its connections however the run ends.

    When the run already failed, a failing release (a server that went away) does not hide
    the first error.
    """
    try:
        yield engine
    except BaseException:
        with contextlib.suppress(Exception):
            engine.release()
        engine.close()
        raise
    try:
        engine.release()
    finally:
        engine.close()


def output_error(exc: OSError, what: str) -> str:
    """One line for an output file that could not be written after ``what`` was stored."""
    where = exc.filename or "output"
    return (
        f"{where}: cannot be written ({exc.strerror or exc}); {what} is stored, so the same "
        "command with another path only writes the outputs"
    )


def step_reporter(bar: Progress) -> Callable[[ProgressUpdate], None]:
    """A second bar line following the engine's passes and steps (load, sample, refiner...)."""
    task = bar.add_task("steps", total=1)

    def on_step(update: ProgressUpdate) -> None:
        bar.update(
            task, description=update.stage, completed=update.step, total=max(update.steps, 1)
        )

    return on_step


def sweep(
    ctx: typer.Context,
    spec: Annotated[
        str, typer.Argument(help="Sweep spec TOML file, or `new` to write an example spec.")
    ],
    out_file: Annotated[
        Path | None, typer.Argument(help="With `new`: where to write (default sweep.toml).")
    ] = None,
    engine: EngineOption = None,
    comfy_url: ComfyUrlsOption = None,
    workers: WorkersOption = None,
    ray: RayOption = None,
    allow_pickle: AllowPickleOption = False,
    max_cost: MaxCostOption = None,
    max_images: MaxImagesOption = None,
    device: Annotated[str | None, typer.Option(help="diffusers: cuda, mps or cpu.")] = None,
    dtype: Annotated[str | None, typer.Option(help="diffusers: bf16, fp16 or fp32.")] = None,
    csv_out: Annotated[
        Path | None, typer.Option("--csv", help="Also write one CSV row per image here.")
    ] = None,
    report: Annotated[
        Path | None, typer.Option("--report", help="Write the HTML report into this folder.")
    ] = None,
    best_out: Annotated[
        Path | None,
        typer.Option("--best-out", help="Write the best configuration's recipe (TOML) here."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help=JSON_HELP)] = False,
) -> None:
    """Generate every configuration of a sweep spec, score each image, and rank them.

    Each image is stored (origin synthetic, with provenance) and scored against the
    workspace's source photos. The sweep is a job: interrupted (even by kill -9), the same
    command resumes it, skipping finished images and never storing one twice. Configurations
    are ranked by the spec's objective (default: mean match minus grain and plastic
    penalties; see `likeness sweep new`).

    Example: likeness sweep new sweep.toml && likeness sweep sweep.toml --report sweep-report
    """
    # 0. `likeness sweep new [FILE]`.
    if spec == "new" and not Path("new").is_file():
        target = out_file or Path("sweep.toml")
        if target.exists():
            fail(f"{target} exists; pass another file name or remove it")
        target.write_text(EXAMPLE_SPEC, encoding="utf-8")
        err.print(f"wrote {target}: edit the base recipe and axes, then `likeness sweep {target}`")
        return
    if out_file is not None:
        fail(f"unexpected argument {out_file}; only `likeness sweep new FILE` takes a second one")
    # 1. Spec, engine; refuse before any work.
    try:
        loaded = load_spec(spec)
    except SweepSpecError as exc:
        fail(str(exc))
    with open_workspace(ctx) as ws:
        try:
            base = with_workspace_trigger(loaded.base, ws)
            if engine is not None:
                base = base.with_overrides({"engine": engine})
        except RecipeError as exc:
            fail(str(exc))
        loaded = dataclasses.replace(loaded, base=base)
        scale = ws.settings.scale
        ask = scale_ask(scale, base.engine, workers=workers, comfy_urls=comfy_url, ray=ray)
        options = {"allow_pickle": allow_pickle, "device": device, "dtype": dtype}
        runner = (
            build_pool(ask, base.engine, scale, options)
            if ask is not None
            else build_engine(
                base.engine,
                comfy_url=(comfy_url or [ws.settings.comfyui.url])[0],
                allow_pickle=allow_pickle,
                device=device,
                dtype=dtype,
                hosted=ws.settings.hosted,
                max_cost=max_cost,
                max_images=max_images,
            )
        )
        with resumable("the sweep"), engine_session(runner):
            try:
                scorer = WorkspaceScorer(ws)
            except NoReferences as exc:
                fail(str(exc))
            # 2. Run (or resume).
            total = len(loaded.cells())
            try:
                with run_display(runner) as bar:
                    task = bar.add_task("cells", total=total)

                    def on_cell(
                        done: int, _total: int, cell: SweepCell, result: Cell | None
                    ) -> None:
                        bar.update(task, completed=done, description=cell.label[:40])
                        if result is not None and result.error:
                            bar.console.print(
                                f"[red]failed[/red] {cell.label} seed {cell.seed}: {result.error}",
                                highlight=False,
                            )

                    result = run_sweep(
                        ws,
                        loaded,
                        runner,
                        scorer,
                        progress=on_cell,
                        engine_progress=None if ask else step_reporter(bar),
                    )
            except EngineCannotHonour as exc:
                fail(f"{base.engine} cannot run this sweep: {exc}")
        data = result.to_json()
        # 3. Outputs (the sweep is stored: a write that fails costs only a rerun).
        index = None
        try:
            if best_out is not None and result.best is not None:
                result.best.recipe.write_toml(best_out)
            if csv_out is not None:
                write_csv(data, csv_out)
            if report is not None:
                from likeness.report.sweep import write_sweep_report

                index = write_sweep_report(data, report, image_path=ws.blobs.path)
        except OSError as exc:
            fail(output_error(exc, "the sweep"))
    if as_json:
        print_json(data)
    else:
        print_ranking(result)
        if best_out is not None and result.best is not None:
            out.print(f"best recipe written to {best_out}", highlight=False)
        if index is not None:
            out.print(f"report: {index}", highlight=False)
    if not result.complete:
        err.print(
            f"{result.total - result.finished} images failed; run the same command to retry them"
        )
        raise typer.Exit(1)


def print_ranking(result: SweepResult) -> None:
    spec = result.spec
    table = Table(title=f"sweep {spec.name}: {result.finished}/{result.total} images")
    table.add_column("#", justify="right")
    for axis in spec.axis_names:
        table.add_column(axis)
    for name in ("objective", "± std", "match", "pass", "grain", "plastic", "images"):
        table.add_column(name, justify="right")
    for c in result.configs:
        table.add_row(
            str(c.rank),
            *[_cell(c.config.get(axis)) for axis in spec.axis_names],
            f"{c.objective:.2f}",
            f"{c.objective_std:.2f}",
            _num(c.mean_match),
            f"{c.pass_rate:.0%}",
            _num(c.mean_grain),
            _num(c.mean_plastic),
            f"{len(c.cells) - c.failed}/{len(c.cells)}",
            style="bold green" if c.rank == 1 else None,
        )
    out.print(table)
    out.print(f"objective: {spec.objective.describe()} (higher is better)", highlight=False)


def write_csv(data: dict[str, Any], path: Path) -> None:
    """One row per image (see the module docstring)."""
    axes = list(data["axes"])
    fields = ["rank", "configuration", *axes, "seed", "prompt", "image_sha", "objective",
              "match", "pass", "angle", "expression", "grain", "plastic", "sharpness",
              "flags", "error"]  # fmt: skip
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields)
        writer.writeheader()
        for config in data["configs"]:
            for cell in config["cells"]:
                writer.writerow(
                    {
                        "rank": config["rank"],
                        "configuration": config["label"],
                        **{a: config["config"].get(a) for a in axes},
                        **{k: cell.get(k) for k in fields if k in cell and k != "flags"},
                        "flags": " ".join(cell.get("flags") or []),
                    }
                )


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    text = "" if value is None else str(value)
    return Path(text).name if "/" in text else text


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"
