"""The evaluation commands mounted the way `likeness` mounts them, for tests and subprocesses.

Run as a script: `python tests/evaluate/cli_app.py --workspace WS sweep SPEC.toml`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from likeness.cli import card, loop, sweep

app = typer.Typer(pretty_exceptions_enable=False, no_args_is_help=True)


@app.callback()
def root(
    ctx: typer.Context,
    workspace: Annotated[Path | None, typer.Option("--workspace", "-w", file_okay=False)] = None,
) -> None:
    ctx.obj = {"workspace": workspace}


app.command("sweep")(sweep.sweep)
app.add_typer(card.app, name="card")
app.command("loop")(loop.loop)

if __name__ == "__main__":
    app()
