"""`likeness add` and `likeness dedup`: pour photos in; find and set aside near duplicates."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from likeness.cli.common import JSON_HELP, err, open_workspace, out, print_json, progress_bar
from likeness.curate.dedup import (
    DuplicateGroup,
    apply_groups,
    dedup_candidates,
    find_workspace_duplicates,
)
from likeness.curate.ingest import Ingester, IngestResult, expand_inputs
from likeness.jobs import job_key, start_job
from likeness.store.images import ORIGINS, ImageRecord
from likeness.workspace import Workspace


def add(
    ctx: typer.Context,
    paths: Annotated[list[Path], typer.Argument(help="Image files or folders.")],
    origin: Annotated[
        str, typer.Option(help=f"Where the images come from: {', '.join(ORIGINS)}.")
    ] = "source",
    recursive: Annotated[
        bool, typer.Option("--recursive", "-r", help="Descend into folders.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help=JSON_HELP)] = False,
) -> None:
    """Store images in the workspace, once each by content (sha256).

    Bad files (empty, truncated, not an image, too many pixels, unsupported format) are refused
    with one line each while the rest go on. Exact duplicates are not stored again; near
    duplicates are stored and reported (see `likeness dedup`). Exit status: 0 when every input
    was stored or already present, 1 when some were rejected. Running the same command again
    after an interruption resumes it.

    Example: likeness add ~/photos/mara --recursive --origin source
    """
    if origin not in ORIGINS:
        raise typer.BadParameter(
            f"{origin!r} is not one of {', '.join(ORIGINS)}", param_hint="--origin"
        )
    with open_workspace(ctx) as ws:
        files = list(expand_inputs(paths, recursive=recursive))
        job = start_job(
            ws.db,
            "add",
            job_key(sorted(str(p.resolve()) for p in files), origin),
            total=len(files),
            params={"paths": [str(p) for p in paths], "origin": origin, "recursive": recursive},
        )
        if job.resumed:
            err.print(f"resuming job {job.id} ({job.done}/{len(files)} seen before)")
        ingester = Ingester(ws, origin=origin)
        results: list[IngestResult] = []
        show_bar = len(files) > ws.settings.ingest.progress_after
        with progress_bar() as bar:
            task = bar.add_task("adding", total=len(files), visible=show_bar)
            for index, path in enumerate(files, start=1):
                result = ingester.ingest_file(path)
                results.append(result)
                if result.status == "rejected":
                    bar.console.print(
                        f"[red]rejected[/red] {result.path}: {result.reason}", highlight=False
                    )
                job.set_progress(index)
                bar.advance(task)
        counts = Counter(r.status for r in results)
        job.finish(message=", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    if as_json:
        print_json([r.to_dict() for r in results])
    else:
        _print_add_summary(results, counts)
    if counts["rejected"]:
        raise typer.Exit(1)


def _print_add_summary(results: list[IngestResult], counts: Counter) -> None:
    near = [r for r in results if r.status == "near_duplicate"]
    if near:
        table = Table(title="near duplicates (stored; `likeness dedup --apply` keeps the best)")
        table.add_column("file")
        table.add_column("looks like")
        table.add_column("pHash distance", justify="right")
        for r in near:
            table.add_row(r.path, (r.duplicate_of or "")[:12], str(r.distance))
        out.print(table)
    out.print(
        f"{len(results)} inputs: {counts['stored']} stored, {counts['near_duplicate']} near "
        f"duplicates stored, {counts['duplicate']} already present, {counts['rejected']} rejected",
        highlight=False,
    )


def dedup(
    ctx: typer.Context,
    apply: Annotated[
        bool, typer.Option("--apply", help="Keep the best of each group; mark the others excluded.")
    ] = False,
    faces: Annotated[
        bool,
        typer.Option(
            "--faces",
            help="Also group same-face near-identical images (same person, same shot) by face "
            "embedding; analyses are cached, so this is slow only the first time.",
        ),
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help=JSON_HELP)] = False,
) -> None:
    """Group near-duplicate images (re-encoded, resized, lightly cropped or colour-shifted copies).

    With --faces, images of the same person in the same shot (re-generated with one seed,
    lightly edited) are grouped too, by face embedding and pHash together, while different
    photos of one person stay apart. With --apply the best image of each group (most pixels,
    then sharpest) is kept and the others are marked excluded (never deleted), so they never
    reach a dataset.

    Example: likeness dedup --faces --apply
    """
    with open_workspace(ctx) as ws:
        settings = ws.settings.dedup
        extra = _same_face_groups(ws) if faces else []

        def find() -> list[DuplicateGroup]:
            return find_workspace_duplicates(
                ws.db, settings.phash_max_distance, settings.dhash_max_distance, extra
            )

        groups = find()
        changed = apply_groups(ws.db, groups) if apply else 0
        if apply:
            groups = find()
    if as_json:
        print_json({"groups": [g.to_dict() for g in groups], "applied": apply, "changed": changed})
        return
    if not groups:
        out.print("no near duplicates")
        return
    table = Table(title=f"{len(groups)} near-duplicate groups")
    table.add_column("group", justify="right")
    table.add_column("keep")
    table.add_column("set aside")
    for number, group in enumerate(groups, start=1):
        keeper = group.keeper
        table.add_row(
            str(number),
            f"{keeper.original_name} {keeper.width}x{keeper.height} ({keeper.sha256[:10]})",
            "\n".join(_member(r, group.distances[r.sha256]) for r in group.others),
        )
    out.print(table)
    if apply:
        out.print(f"{changed} images newly excluded; nothing was deleted")
    else:
        out.print("run with --apply to keep the best of each group")


def _member(record: ImageRecord, distance: int | None) -> str:
    how = "same face" if distance is None else f"d={distance}"
    excluded = " excluded" if record.excluded else ""
    return f"{record.original_name} {record.width}x{record.height} ({record.sha256[:10]}, {how}){excluded}"


def _same_face_groups(ws: Workspace) -> list[list[str]]:
    """Same-face groups among the dedup candidates, from (cached) face analyses."""
    from likeness.metrics import analyze_paths
    from likeness.metrics.dedup import face_items, same_face_groups

    records = dedup_candidates(ws.db)
    with progress_bar(transient=True) as bar:
        task = bar.add_task("faces", total=len(records))
        analyses = analyze_paths(
            [ws.blobs.path(r.sha256) for r in records],
            conn=ws.db,
            progress=lambda done, total: bar.update(task, completed=done, total=total),
        )
    return same_face_groups(face_items(analyses))
