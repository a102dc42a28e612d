"""`likeness serve`: the multi-user server, and its accounts.

likeness serve [--root DIR] [--host 127.0.0.1] [--port 8800] [--cert FILE --key FILE]
likeness serve user add NAME [--character NAME] [--class-word WORD] [--json]
likeness serve user list|token|disable|enable|remove NAME ...
likeness serve user quota NAME [--images N] [--train-runs N] [--disk 20G] [--queued-jobs N]
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from likeness.cli.common import JSON_HELP, err, fail, out, print_json
from likeness.serve import accounts
from likeness.serve.serverdb import open_server_db

ROOT_ENV = "LIKENESS_SERVE_ROOT"
RootOption = Annotated[
    Path | None,
    typer.Option(
        "--root",
        envvar=ROOT_ENV,
        file_okay=False,
        help=f"The server folder (default: ${ROOT_ENV}, or the current folder).",
    ),
]
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)i?b?\s*$", re.IGNORECASE)

app = typer.Typer(
    help="Serve Likeness to many people, each with their own workspace; manage accounts.",
    invoke_without_command=True,
)
user_app = typer.Typer(help="Accounts: one workspace per person.", no_args_is_help=True)
app.add_typer(user_app, name="user")


def _root(ctx: typer.Context, given: Path | None) -> Path:
    parent = ctx.find_object(dict) or {}
    return (given or parent.get("serve_root") or Path.cwd()).resolve()


@contextmanager
def _server(ctx: typer.Context, given: Path | None) -> Iterator[tuple[Path, Any]]:
    root = _root(ctx, given)
    root.mkdir(parents=True, exist_ok=True)
    conn = open_server_db(root)
    try:
        yield root, conn
    except accounts.AccountError as exc:
        fail(str(exc))
    finally:
        conn.close()


@app.callback()
def serve(
    ctx: typer.Context,
    root: RootOption = None,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port to listen on.")] = 8800,
    cert: Annotated[
        Path | None, typer.Option(help="TLS certificate (PEM) to serve HTTPS directly.")
    ] = None,
    key: Annotated[Path | None, typer.Option(help="TLS private key (PEM) for --cert.")] = None,
    forwarded_allow_ips: Annotated[
        str,
        typer.Option(help="Proxies whose X-Forwarded-For/Proto headers are trusted (audit IPs)."),
    ] = "127.0.0.1",
) -> None:
    """Serve the studio: each signed-in person reaches only their own workspace
    (`ROOT/users/NAME`), runs jobs on the engines in `ROOT/serve.toml`, and reviews there.

    Cookies are Secure: run behind a TLS proxy or pass --cert/--key (browsers make an
    exception for localhost only). Ctrl+C stops it; running jobs resume at the next start.

    Example: likeness serve --root /srv/likeness --host 0.0.0.0 --cert cert.pem --key key.pem
    """
    ctx.ensure_object(dict)
    ctx.obj["serve_root"] = root
    if ctx.invoked_subcommand is not None:
        return
    import uvicorn

    from likeness.config import SettingsError
    from likeness.review.security import is_loopback
    from likeness.serve.app import create_server_app
    from likeness.serve.settings import load_serve_settings

    if (cert is None) != (key is None):
        fail("--cert and --key go together; pass both or neither")
    with _server(ctx, root) as (folder, conn):
        users = accounts.list_users(conn)
    try:
        settings = load_serve_settings(folder)
    except SettingsError as exc:
        fail(str(exc))
    if not users:
        err.print("no accounts yet: add one with `likeness serve user add NAME`", highlight=False)
    if not is_loopback(host) and cert is None:
        err.print(
            "[yellow]listening beyond this machine without --cert: put a TLS proxy in front "
            "(session cookies are Secure and travel over HTTPS only)[/yellow]",
            highlight=False,
        )
    if not is_loopback(host) and not settings.serve.hosts:
        err.print(
            "[yellow]serve.hosts is empty: any Host header is answered; name your host "
            "in serve.toml[/yellow]",
            highlight=False,
        )
    server_app = create_server_app(folder, settings=settings, bind_host=host)
    scheme = "https" if cert else "http"
    shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    out.print(
        f"serving {escape(str(folder))} for {len(users)} users at {scheme}://{shown}:{port}/login",
        highlight=False,
    )
    uvicorn.run(
        server_app,
        host=host,
        port=port,
        log_level="warning",
        ssl_certfile=str(cert) if cert else None,
        ssl_keyfile=str(key) if key else None,
        proxy_headers=True,
        forwarded_allow_ips=forwarded_allow_ips,
    )


@user_app.command("add")
def user_add(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Account name (it names the user's folder).")],
    character: Annotated[
        str | None, typer.Option(help="The character's name (default: the account name).")
    ] = None,
    class_word: Annotated[str, typer.Option(help="woman, man, person...")] = "person",
    root: RootOption = None,
    as_json: Annotated[bool, typer.Option("--json", help=JSON_HELP)] = False,
) -> None:
    """Make an account and its workspace; print its sign-in token once (only its sha256 is
    kept, so a lost token is replaced with `user token NAME`, never recovered).

    Example: likeness serve user add ana --character Mara --class-word woman
    """
    with _server(ctx, root) as (folder, conn):
        user, token = accounts.add_user(
            conn, folder, name, character=character, class_word=class_word
        )
    if as_json:
        print_json({**user.to_dict(), "token": token})
        return
    out.print(
        f"user [bold]{escape(user.name)}[/bold]: workspace {escape(str(folder / user.folder))}"
    )
    out.print(f"token (shown once): {token}", highlight=False, soft_wrap=True)


@user_app.command("list")
def user_list(
    ctx: typer.Context,
    root: RootOption = None,
    as_json: Annotated[bool, typer.Option("--json", help=JSON_HELP)] = False,
) -> None:
    """List the accounts with their folders, state, quotas and live sessions.

    Example: likeness serve user list --json
    """
    from likeness.serve.sessions import live_sessions

    with _server(ctx, root) as (_folder, conn):
        users = [(u, live_sessions(conn, u.id)) for u in accounts.list_users(conn)]
    if as_json:
        print_json([{**u.to_dict(), "sessions": s} for u, s in users])
        return
    table = Table(title=f"{len(users)} users")
    for column in ("name", "folder", "state", "sessions", "quota (images/runs/disk/jobs)"):
        table.add_column(column)
    for user, sessions in users:
        q = user.quota
        limits = "/".join(
            "default" if v is None else str(v)
            for v in (q.images, q.train_runs, q.disk_bytes, q.queued_jobs)
        )
        table.add_row(
            user.name,
            user.folder,
            "disabled" if user.disabled else "enabled",
            str(sessions),
            limits,
        )
    out.print(table)


@user_app.command("token")
def user_token(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Account name.")],
    root: RootOption = None,
) -> None:
    """Give an account a new token (printed once); the old one and its sessions end now.

    Example: likeness serve user token ana
    """
    with _server(ctx, root) as (_folder, conn):
        token = accounts.set_token(conn, name)
    out.print(f"new token for {escape(name)} (shown once): {token}", highlight=False)


@user_app.command("disable")
def user_disable(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Account name.")],
    root: RootOption = None,
) -> None:
    """Stop an account from signing in: its sessions and queued jobs end now, its data stays.

    Example: likeness serve user disable ana
    """
    with _server(ctx, root) as (_folder, conn):
        accounts.set_disabled(conn, name, True)
    out.print(f"{escape(name)} disabled")


@user_app.command("enable")
def user_enable(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Account name.")],
    root: RootOption = None,
) -> None:
    """Let a disabled account sign in again (with its token).

    Example: likeness serve user enable ana
    """
    with _server(ctx, root) as (_folder, conn):
        accounts.set_disabled(conn, name, False)
    out.print(f"{escape(name)} enabled")


@user_app.command("remove")
def user_remove(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Account name.")],
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask.")] = False,
    root: RootOption = None,
) -> None:
    """Delete an account; its workspace is moved to `ROOT/removed/NAME-<time>` (a plain
    workspace: open it with `likeness --workspace`), so nothing is lost and a new account of
    the same name starts empty.

    Example: likeness serve user remove ana --yes
    """
    if not yes and not typer.confirm(f"remove user {name} (their folder is moved aside)?"):
        raise typer.Exit(1)
    with _server(ctx, root) as (folder, conn):
        moved = accounts.remove_user(conn, folder, name)
    where = f"; workspace moved to {moved}" if moved else ""
    out.print(escape(f"{name} removed{where}"), highlight=False)


def parse_size(text: str) -> int:
    """`20G`, `500M`, `1.5GiB` or a byte count -> bytes; `-1` clears (server default)."""
    if text.strip() == "-1":
        return -1
    match = _SIZE.match(text)
    if not match:
        raise typer.BadParameter(f"{text!r} is not a size; write e.g. 20G, 500M or 1048576")
    number, unit = float(match.group(1)), match.group(2).lower()
    return int(number * 1024 ** " kmgt".index(unit or " "))


@user_app.command("quota")
def user_quota(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Account name.")],
    images: Annotated[int | None, typer.Option(help="Images stored (-1: default).")] = None,
    train_runs: Annotated[int | None, typer.Option(help="Training runs (-1: default).")] = None,
    disk: Annotated[
        str | None, typer.Option(help="Bytes in the user's folder: 20G, 500M (-1: default).")
    ] = None,
    queued_jobs: Annotated[
        int | None, typer.Option(help="Jobs queued or running at once (-1: default).")
    ] = None,
    root: RootOption = None,
    as_json: Annotated[bool, typer.Option("--json", help=JSON_HELP)] = False,
) -> None:
    """Show or set an account's own limits (0: none; -1: back to serve.toml's [quota]).

    Example: likeness serve user quota ana --images 2000 --disk 10G
    """
    with _server(ctx, root) as (_folder, conn):
        user = accounts.set_quota(
            conn,
            name,
            images=images,
            train_runs=train_runs,
            disk_bytes=parse_size(disk) if disk is not None else None,
            queued_jobs=queued_jobs,
        )
    if as_json:
        print_json(user.to_dict())
        return
    q = user.quota
    out.print(
        f"{escape(user.name)}: images {q.images}, training runs {q.train_runs}, disk bytes "
        f"{q.disk_bytes}, queued jobs {q.queued_jobs} (None: the server default)",
        highlight=False,
    )
