"""What every command shares: the consoles, the workspace lookup, JSON output, clean errors."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from likeness.workspace import Workspace, WorkspaceError, find_workspace

out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)

JSON_HELP = (
    "Print machine-readable JSON on stdout instead of tables (shape documented in docs/cli.md)."
)


def workspace_path(ctx: typer.Context) -> Path | None:
    """The `--workspace` given to `likeness` itself, if any."""
    root = ctx.find_root()
    return (root.obj or {}).get("workspace") if root else None


@contextmanager
def open_workspace(ctx: typer.Context) -> Iterator[Workspace]:
    """Open the workspace named by --workspace, $LIKENESS_WORKSPACE, or found upward from here."""
    try:
        root = find_workspace(workspace_path(ctx))
        ws = Workspace.open(root)
    except (WorkspaceError, ValueError) as exc:
        fail(str(exc))
    try:
        yield ws
    finally:
        ws.close()


def fail(message: str, code: int = 2) -> None:
    """Print one clear line and exit."""
    err.print(f"[red]error:[/red] {escape(message)}", highlight=False)
    raise typer.Exit(code)


def error_line(exc: BaseException) -> str:
    """One line for an unexpected failure: its class and every line of its message."""
    text = "; ".join(line.strip() for line in str(exc).splitlines() if line.strip())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


@contextmanager
def resumable(what: str, on_error: Callable[[str], None] | None = None) -> Iterator[None]:
    """Long work that may stop early. Ctrl-C exits 130; an engine or server failure prints one
    line (after `on_error(line)`, e.g. to mark the job failed) and exits 2. What was stored is
    kept either way, and the same command resumes `what`."""
    try:
        yield
    except typer.Exit:
        raise
    except KeyboardInterrupt:
        err.print(f"interrupted: run the same command again to resume {what}")
        raise typer.Exit(130) from None
    except Exception as exc:
        message = error_line(exc)
        if on_error is not None:
            on_error(message)
        fail(f"{message}; run the same command again to resume {what}")


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")
    sys.stdout.flush()


def progress_bar(transient: bool = False) -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=err,
        transient=transient,
    )
