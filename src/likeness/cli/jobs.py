"""`likeness jobs`: what long work ran, is running, or stopped."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from likeness.cli.common import JSON_HELP, open_workspace, out, print_json
from likeness.jobs import list_jobs


def jobs(
    ctx: typer.Context,
    kind: Annotated[
        str | None, typer.Option(help="Only jobs of this kind (add, score, generate, ...).")
    ] = None,
    limit: Annotated[int, typer.Option(help="How many, newest first.")] = 20,
    as_json: Annotated[bool, typer.Option("--json", help=JSON_HELP)] = False,
) -> None:
    """List jobs with their state and progress. A `stale` job stopped without finishing: run
    the same command again to resume it.

    Example: likeness jobs --kind add
    """
    with open_workspace(ctx) as ws:
        found = list_jobs(ws.db, kind=kind, limit=limit)
    if as_json:
        print_json([j.to_dict() for j in found])
        return
    table = Table(title="jobs")
    for column in ("id", "kind", "state", "progress", "started", "heartbeat", "message"):
        table.add_column(column)
    colours = {"done": "green", "failed": "red", "stale": "yellow", "running": "cyan"}
    for j in found:
        progress = f"{j.done}/{j.total}" if j.total is not None else str(j.done)
        table.add_row(
            str(j.id),
            j.kind,
            f"[{colours[j.state]}]{j.state}[/]",
            progress,
            j.started_at[:19],
            j.heartbeat_at[11:19],
            j.error or j.message or "",
        )
    out.print(table)
