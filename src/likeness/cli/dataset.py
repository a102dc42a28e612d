"""`likeness dataset`: cut immutable, captioned versions and export them for trainers."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from likeness.cli.common import JSON_HELP, fail, open_workspace, out, print_json
from likeness.curate.captions import CaptionError
from likeness.curate.datasets import create_dataset_version
from likeness.curate.export import ExportError, export_version
from likeness.curate.selection import Selection
from likeness.evaluate.coverage import THIN_BELOW, CoverageError
from likeness.store.datasets import DatasetError, diff_versions, list_versions, resolve
from likeness.store.images import ORIGINS

app = typer.Typer(
    help="Immutable, captioned dataset versions and their export.", no_args_is_help=True
)


@app.command("create")
def create(
    ctx: typer.Context,
    name: Annotated[
        str, typer.Argument(help="Dataset name; creating it again makes the next version.")
    ],
    origin: Annotated[
        list[str] | None,
        typer.Option(help=f"Only these origins ({', '.join(ORIGINS)}); repeatable."),
    ] = None,
    include: Annotated[
        list[str] | None,
        typer.Option(
            help="Only images matching: sha256 prefix (6+ hex) or file-name glob; repeatable."
        ),
    ] = None,
    exclude: Annotated[
        list[str] | None,
        typer.Option(help="Leave out images matching (same patterns); repeatable."),
    ] = None,
    note: Annotated[str | None, typer.Option(help="A note stored with the version.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help=JSON_HELP)] = False,
) -> None:
    """Make a new version of a dataset from the stored images (excluded duplicates never enter).

    Example: likeness dataset create mara --origin source --exclude 'blurry*'
    """
    for value in origin or []:
        if value not in ORIGINS:
            raise typer.BadParameter(
                f"{value!r} is not one of {', '.join(ORIGINS)}", param_hint="--origin"
            )
    selection = Selection(
        origins=tuple(origin or ()), include=tuple(include or ()), exclude=tuple(exclude or ())
    )
    with open_workspace(ctx) as ws:
        try:
            version = create_dataset_version(ws, name, selection, note=note)
        except (DatasetError, CaptionError) as exc:
            fail(str(exc))
    if as_json:
        print_json(version.to_dict(with_items=False))
        return
    parent = f" (parent v{version.parent_version})" if version.parent_version else ""
    out.print(
        f"created [bold]{version.ref}[/bold]{parent}: {version.count} images", highlight=False
    )
    if version.items:
        out.print(f"caption: {version.items[0].caption}", highlight=False)


@app.command("list")
def list_(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help=JSON_HELP)] = False,
) -> None:
    """Every version of every dataset.

    Example: likeness dataset list --json
    """
    with open_workspace(ctx) as ws:
        versions = list_versions(ws.db)
    if as_json:
        print_json([v.to_dict(with_items=False) for v in versions])
        return
    table = Table(title="datasets")
    for column in ("version", "images", "parent", "created", "note"):
        table.add_column(column)
    for v in versions:
        table.add_row(
            v.ref,
            str(v.count),
            f"v{v.parent_version}" if v.parent_version else "",
            v.created_at[:19],
            v.note or "",
        )
    out.print(table)


@app.command("show")
def show(
    ctx: typer.Context,
    ref: Annotated[str, typer.Argument(help="NAME (latest) or NAME@vN.")],
    as_json: Annotated[bool, typer.Option("--json", help=JSON_HELP)] = False,
) -> None:
    """One version with its images and captions.

    Example: likeness dataset show mara@v2
    """
    with open_workspace(ctx) as ws:
        try:
            version = resolve(ws.db, ref)
        except DatasetError as exc:
            fail(str(exc))
        names = dict(
            ws.db.execute(
                "SELECT i.image_sha, m.original_name FROM dataset_items i "
                "JOIN images m ON m.sha256 = i.image_sha WHERE i.version_id = ?",
                (version.id,),
            ).fetchall()
        )
    if as_json:
        print_json(version.to_dict())
        return
    out.print(
        f"[bold]{version.ref}[/bold] {version.count} images, created {version.created_at[:19]}"
        + (f", parent v{version.parent_version}" if version.parent_version else ""),
        highlight=False,
    )
    out.print(
        f"selection: {version.selection or 'all'}; trigger {version.trigger!r}", highlight=False
    )
    table = Table()
    for column in ("sha256", "file", "caption"):
        table.add_column(column)
    for item in version.items:
        table.add_row(item.image_sha[:12], names.get(item.image_sha, ""), item.caption)
    out.print(table)


@app.command("diff")
def diff(
    ctx: typer.Context,
    a: Annotated[str, typer.Argument(help="NAME@vN")],
    b: Annotated[str, typer.Argument(help="NAME@vM")],
    as_json: Annotated[bool, typer.Option("--json", help=JSON_HELP)] = False,
) -> None:
    """What changed between two versions: images added, removed, recaptioned.

    Example: likeness dataset diff mara@v1 mara@v2
    """
    with open_workspace(ctx) as ws:
        try:
            result = diff_versions(resolve(ws.db, a), resolve(ws.db, b))
        except DatasetError as exc:
            fail(str(exc))
    if as_json:
        print_json(result.to_dict())
        return
    out.print(
        f"{result.a} -> {result.b}: +{len(result.added)} -{len(result.removed)} "
        f"~{len(result.recaptioned)} ={result.unchanged}",
        highlight=False,
    )
    for sha in result.added:
        out.print(f"[green]+ {sha}[/green]", highlight=False)
    for sha in result.removed:
        out.print(f"[red]- {sha}[/red]", highlight=False)
    for sha, cap_a, cap_b in result.recaptioned:
        out.print(f"[yellow]~ {sha}[/yellow] {cap_a!r} -> {cap_b!r}", highlight=False)


@app.command("export")
def export(
    ctx: typer.Context,
    ref: Annotated[str, typer.Argument(help="NAME (latest) or NAME@vN.")],
    out_dir: Annotated[Path, typer.Argument(help="Empty or new folder to write.")],
    fmt: Annotated[
        str,
        typer.Option(
            "--format",
            help="kohya (<repeats>_<trigger> <class>/ + .txt), imagefolder (metadata.jsonl) "
            "or edit-pairs (target/ + control/ + .txt instructions, for edit-model LoRAs).",
        ),
    ] = "kohya",
    repeats: Annotated[
        int | None, typer.Option(help="kohya repeats (default from likeness.toml).")
    ] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace a non-empty folder.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help=JSON_HELP)] = False,
) -> None:
    """Write a version where a LoRA trainer reads it.

    edit-pairs writes the version's kept edits as (control, target, instruction) in the
    layout ai-toolkit's Qwen-Image-Edit and FLUX Kontext LoRA training reads (docs/enrich.md).

    Example: likeness dataset export mara@v2 ./train/mara --format kohya
    """
    if fmt not in ("kohya", "imagefolder", "edit-pairs"):
        raise typer.BadParameter(
            f"{fmt!r}: use kohya, imagefolder or edit-pairs", param_hint="--format"
        )
    if fmt == "edit-pairs":
        _export_edit_pairs(ctx, ref, out_dir, overwrite=overwrite, as_json=as_json)
        return
    with open_workspace(ctx) as ws:
        try:
            version = resolve(ws.db, ref)
            result = export_version(ws, version, out_dir, fmt, repeats=repeats, overwrite=overwrite)  # type: ignore[arg-type]
        except (DatasetError, ExportError) as exc:
            fail(str(exc))
    if as_json:
        print_json({"ref": version.ref, "format": fmt, **result.to_dict()})
        return
    out.print(
        f"exported {version.ref} ({result.count} images, {result.reencoded} re-encoded as PNG) "
        f"to {result.image_folder}",
        highlight=False,
    )


def _export_edit_pairs(
    ctx: typer.Context, ref: str, out_dir: Path, *, overwrite: bool, as_json: bool
) -> None:
    from likeness.evaluate.edit_pairs import export_edit_pairs

    with open_workspace(ctx) as ws:
        try:
            version = resolve(ws.db, ref)
            result = export_edit_pairs(ws, version, out_dir, overwrite=overwrite)
        except (DatasetError, ExportError) as exc:
            fail(str(exc))
    data = {"ref": version.ref, "format": "edit-pairs", **result.to_dict()}
    if as_json:
        print_json(data)
        return
    out.print(
        f"exported {data['count']} edit pairs of {version.ref} ({data['corrections']} "
        f"corrections; {len(data['left_out'])} images left out) to {out_dir}; ai-toolkit "
        f"datasets entry: {data['config']}",
        highlight=False,
    )


@app.command("coverage")
def coverage(
    ctx: typer.Context,
    ref: Annotated[
        str | None, typer.Argument(help="NAME or NAME@vN (default: the images of --origin).")
    ] = None,
    origin: Annotated[
        list[str] | None,
        typer.Option(help=f"Count the images of this origin ({', '.join(ORIGINS)}); repeatable."),
    ] = None,
    thin: Annotated[
        int,
        typer.Option(
            "--thin", min=1, help=f"A cell with fewer images is thin (default {THIN_BELOW})."
        ),
    ] = THIN_BELOW,
    as_json: Annotated[bool, typer.Option("--json", help=JSON_HELP)] = False,
) -> None:
    """Count images into the model card's angle x expression grid; mark empty and thin cells.

    Each image lands in the cell of its measured head-angle bucket and expression (analyses
    come from the workspace cache; new images are analysed once). No face, or an expression the
    card does not ask for, counts off the grid. With neither NAME nor --origin: every image.

    Example: likeness dataset coverage mara@v2
    """
    from likeness.evaluate.coverage import card_grid, choose_images, count_coverage, score_chosen

    with open_workspace(ctx) as ws:
        try:
            chosen = choose_images(ws, dataset=ref, origins=origin or ())
            counted = count_coverage(score_chosen(ws, chosen.shas), card_grid(), thin)
        except CoverageError as exc:
            fail(str(exc))
    data = {"selection": chosen.to_json(), **counted.to_json()}
    if as_json:
        print_json(data)
        return
    print_coverage(data, title=f"coverage of {chosen.label}")


def print_coverage(data: Mapping[str, Any], *, title: str) -> None:
    """The grid as a table: angles down, expressions across; empty cells red, thin amber."""
    counts = {(c["angle"], c["expression"]): c for c in data["cells"]}
    table = Table(title=f"{title}: {data['counted']} of {data['images']} images on the grid")
    table.add_column("angle")
    for expression in data["expressions"]:
        table.add_column(expression, justify="right")
    for angle in data["angles"]:
        row = [angle]
        for expression in data["expressions"]:
            cell = counts.get((angle, expression))
            if cell is None:
                row.append("[dim]-[/dim]")
            elif cell["state"] == "empty":
                row.append("[red]0 empty[/red]")
            elif cell["state"] == "thin":
                row.append(f"[yellow]{cell['count']} thin[/yellow]")
            else:
                row.append(str(cell["count"]))
        table.add_row(*row)
    out.print(table)
    summary = f"{data['empty']} empty, {data['thin']} thin (fewer than {data['thin_below']})"
    off = ", ".join(f"{n} {reason}" for reason, n in sorted(data["off_grid"].items()))
    out.print(summary + (f"; off the grid: {off}" if off else ""), highlight=False)
