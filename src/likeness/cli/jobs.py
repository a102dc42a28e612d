"""`likeness jobs`: what long work ran, is running, or stopped."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from likeness.cli.common import JSON_HELP, fail, open_workspace, out, print_json
from likeness.engines.records import job_outputs
from likeness.jobs import get_job, list_jobs


def jobs(
    ctx: typer.Context,
    job: Annotated[
        int | None,
        typer.Argument(help="A job id: list the images it made and the worker that made each."),
    ] = None,
    kind: Annotated[
        str | None, typer.Option(help="Only jobs of this kind (add, score, generate, ...).")
    ] = None,
    limit: Annotated[int, typer.Option(help="How many, newest first.")] = 20,
    as_json: Annotated[bool, typer.Option("--json", help=JSON_HELP)] = False,
) -> None:
    """List jobs with their state and progress. A `stale` job stopped without finishing: run
    the same command again to resume it. With a job id: the images that job made, and which
    worker (host, GPU or ComfyUI server) made each when it ran on several.

    Example: likeness jobs --kind add
    """
    if job is not None:
        show_outputs(ctx, job, as_json)
        return
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


def show_outputs(ctx: typer.Context, job_id: int, as_json: bool) -> None:
    """`likeness jobs ID`: the job, then one row per image it made."""
    with open_workspace(ctx) as ws:
        info = get_job(ws.db, job_id)
        if info is None:
            fail(f"job {job_id}: no such job; `likeness jobs` lists them")
        outputs = job_outputs(ws.db, job_id)
    if as_json:
        print_json({"job": info.to_dict(), "outputs": outputs})
        return
    table = Table(title=f"job {job_id} ({info.kind}, {info.state}): {len(outputs)} images")
    for column in ("image", "seed", "engine", "worker", "where"):
        table.add_column(column)
    for row in outputs:
        worker = row["worker"] or {}
        where = worker.get("url") or " ".join(
            str(v) for v in (worker.get("host"), worker.get("gpu")) if v
        )
        table.add_row(
            row["image_sha"][:12],
            str(row["seed"]),
            row["engine"],
            worker.get("name") or "-",
            where or "-",
        )
    out.print(table)
