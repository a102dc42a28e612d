"""`likeness init`: make a character workspace."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from likeness.cli.common import err, fail, out
from likeness.workspace import (
    TRIGGER_ADVICE,
    Workspace,
    WorkspaceError,
    check_trigger,
)


def init(
    directory: Annotated[
        Path, typer.Argument(help="Folder for the workspace (created if missing).")
    ],
    name: Annotated[str, typer.Option("--name", help="The character's name.")],
    trigger: Annotated[
        str | None,
        typer.Option(
            help="Trigger token for training and prompts; a rare made-up one is proposed."
        ),
    ] = None,
    class_word: Annotated[
        str, typer.Option("--class-word", help="Class of the character used in captions.")
    ] = "person",
) -> None:
    """Create a workspace: likeness.toml (settings), likeness.db (SQLite, WAL) and blobs/.

    Example: likeness init ~/characters/mara --name Mara --class-word woman
    """
    if trigger:
        warning = check_trigger(trigger)
        if warning:
            err.print(f"[yellow]warning:[/yellow] {warning}", highlight=False)
    try:
        ws = Workspace.create(directory, name=name, trigger=trigger, class_word=class_word)
    except WorkspaceError as exc:
        fail(str(exc))
    with ws:
        out.print(f"workspace for [bold]{name}[/bold] created in {ws.root}", highlight=False)
        if not trigger:
            out.print(
                f"trigger token: [bold]{ws.settings.character.trigger}[/bold] "
                f"(proposed; {TRIGGER_ADVICE}). Change it in likeness.toml before training.",
                highlight=False,
            )
        out.print(f"next: likeness --workspace {ws.root} add PHOTOS... --origin source")
