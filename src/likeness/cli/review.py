"""`likeness review`: serve the review web app, and turn its decisions into data.

likeness review [--host 127.0.0.1] [--port 8765] [--open]
likeness review to-dataset NAME [--note TEXT] [--json]
likeness review corrections OUT.jsonl [--json]
"""

from __future__ import annotations

import sqlite3
import threading
import webbrowser
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from likeness.cli.common import JSON_HELP, err, fail, open_workspace, out, print_json
from likeness.review.decisions import count_decisions
from likeness.review.export import dataset_from_accepted, write_corrections
from likeness.review.security import is_loopback, token_for_bind
from likeness.store.datasets import DatasetError

app = typer.Typer(
    help="Review candidates in the browser; accepted images become the next dataset version.",
    invoke_without_command=True,
)


@app.callback()
def serve(
    ctx: typer.Context,
    host: Annotated[
        str,
        typer.Option(help="Address to listen on; anything but loopback requires a token."),
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port to listen on.")] = 8765,
    open_browser: Annotated[
        bool, typer.Option("--open", help="Open the queue in the default browser.")
    ] = False,
    token: Annotated[
        str | None,
        typer.Option(
            envvar="LIKENESS_REVIEW_TOKEN",
            help="Token to require (default: none on loopback, a new random one otherwise).",
        ),
    ] = None,
    reviewer: Annotated[
        str | None, typer.Option(help="Name stored with each decision (default: your user).")
    ] = None,
    allow_origin: Annotated[
        list[str] | None,
        typer.Option(help="Extra browser origin allowed to make changes; repeatable."),
    ] = None,
    warm: Annotated[
        bool,
        typer.Option(help="Make missing grid thumbnails in the background, queue order first."),
    ] = True,
) -> None:
    """Serve the review app for this workspace (Ctrl+C stops it; decisions are already saved).

    Example: likeness review --open
    """
    if ctx.invoked_subcommand is not None:
        return
    import uvicorn

    from likeness.review import create_app

    required = token_for_bind(host, token)
    with open_workspace(ctx) as ws:
        root = ws.root
        counts = count_decisions(ws.db)
    review_app = create_app(
        root, token=required, allowed_origins=tuple(allow_origin or ()), reviewer=reviewer
    )
    shown_host = f"[{host}]" if ":" in host else host
    url = f"http://{shown_host if host not in ('0.0.0.0', '::') else '127.0.0.1'}:{port}/"
    if required:
        url += f"?token={required}"
        if not is_loopback(host):
            err.print(
                "[yellow]listening beyond this machine: share the URL only with reviewers; "
                "the token is printed once[/yellow]",
                highlight=False,
            )
    out.print(
        f"review [bold]{escape(root.name)}[/bold]: {counts.undecided} left, {counts.accepted} accepted, "
        f"{counts.rejected} rejected",
        highlight=False,
    )
    out.print(f"open {escape(url)}", highlight=False, soft_wrap=True)
    if warm:
        threading.Thread(target=_warm_thumbnails, args=(review_app,), daemon=True).start()
    if open_browser:
        webbrowser.open(url)
    uvicorn.run(review_app, host=host, port=port, log_level="warning")


def _warm_thumbnails(review_app: object) -> None:
    """Thumbnails of the whole queue, in the default order, made while the reviewer works."""
    from likeness.review.deps import ReviewState
    from likeness.review.provenance import find_table, runs
    from likeness.review.queue import QueueFilter, build_queue
    from likeness.review.thumbs import warm
    from likeness.store.db import connect

    state: ReviewState = review_app.state.review  # type: ignore[attr-defined]
    try:
        conn = connect(state.db_path, migrate=False)
        try:
            state.metrics.refresh(conn)
            queue = build_queue(conn, state.metrics, runs(conn, find_table(conn)), QueueFilter())
        finally:
            conn.close()
    except sqlite3.Error:
        return  # a busy or damaged database: the pages make each thumbnail when first asked
    warm(state.thumbs, [e.sha256 for e in queue.entries])


@app.command("to-dataset")
def to_dataset(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Dataset name; its next version is made.")],
    note: Annotated[str | None, typer.Option(help="A note stored with the version.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help=JSON_HELP)] = False,
) -> None:
    """Make the next version of a dataset from every accepted image, recording which
    decisions produced it.

    Example: likeness review to-dataset mara --note "after sweep 3"
    """
    with open_workspace(ctx) as ws:
        try:
            made = dataset_from_accepted(ws, name, note=note)
        except DatasetError as exc:
            fail(str(exc))
    if as_json:
        print_json(made.to_dict())
        return
    version = made.version
    parent = f" (parent v{version.parent_version})" if version.parent_version else ""
    out.print(
        f"created [bold]{escape(version.ref)}[/bold]{parent}: {version.count} images from "
        f"{len(made.reviews)} accepted reviews",
        highlight=False,
    )


@app.command("corrections")
def corrections(
    ctx: typer.Context,
    out_path: Annotated[
        Path, typer.Argument(metavar="OUT", help="JSONL file to write.", dir_okay=False)
    ],
    as_json: Annotated[bool, typer.Option("--json", help=JSON_HELP)] = False,
) -> None:
    """Write the rejected images with their tags and notes as JSONL (one object per line),
    the raw material for training an edit model on corrections.

    Example: likeness review corrections corrections.jsonl
    """
    with open_workspace(ctx) as ws:
        try:
            count = write_corrections(ws, out_path)
        except OSError as exc:
            fail(f"{out_path}: cannot write ({exc.strerror}); pick a writable path")
    if as_json:
        print_json({"path": str(out_path), "count": count})
        return
    out.print(escape(f"wrote {count} rejected images to {out_path}"), highlight=False)
