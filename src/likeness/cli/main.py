"""The `likeness` command: joins the command groups and handles the global options."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from likeness import __version__
from likeness.cli import (
    add,
    calibrate,
    card,
    comfy,
    dataset,
    demo,
    enrich,
    generate,
    init,
    jobs,
    loop,
    lora,
    models,
    recipe,
    refs,
    review,
    score,
    serve,
    sweep,
    train,
    train_export,
)

app = typer.Typer(
    name="likeness",
    help="Build a consistent AI character, and measure every step of the loop.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"likeness {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    ctx: typer.Context,
    workspace: Annotated[
        Path | None,
        typer.Option(
            "--workspace",
            "-w",
            help="Workspace folder (default: $LIKENESS_WORKSPACE, or found from here upward).",
            file_okay=False,
        ),
    ] = None,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")
    ] = False,
) -> None:
    """Likeness keeps a character's photos and datasets, drives the engines and measures results."""
    ctx.obj = {"workspace": workspace}


app.command("init")(init.init)
app.command("add")(add.add)
app.command("dedup")(add.dedup)
app.command("jobs")(jobs.jobs)
app.command("demo")(demo.demo)
app.command("score")(score.score)
app.command("calibrate")(calibrate.calibrate)
app.command("generate")(generate.generate)
app.add_typer(dataset.app, name="dataset")
app.add_typer(comfy.app, name="comfy")
recipe.app.command("export-comfy")(comfy.export_comfy)
app.add_typer(recipe.app, name="recipe")
app.add_typer(refs.app, name="refs")
app.add_typer(models.app, name="models")
app.add_typer(review.app, name="review")
app.command("sweep")(sweep.sweep)
app.add_typer(card.app, name="card")
app.command("loop")(loop.loop)
app.add_typer(enrich.app, name="enrich")
app.add_typer(lora.app, name="lora")
train.app.command("export-config")(train_export.export_config)
app.add_typer(train.app, name="train")
app.add_typer(serve.app, name="serve")


def main() -> None:
    app()
