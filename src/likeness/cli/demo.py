"""`likeness demo`: the main job on the embedded defaults, from the bundled sample photos.

One turn of the loop on real photos, offline, on the CPU: the character's source photos (four
photos of Barack Obama plus four near-duplicate copies of one of them) and four stand-ins for
generated candidates (another Obama photo, Joe Biden, Tom Hanks and a group photo). The demo
ingests them, sets the duplicates aside, cuts and exports a captioned dataset version, scores
the candidates against the source photos, writes the HTML report, and makes the next dataset
version from the candidates that pass every check.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from likeness.cli.common import err, out, progress_bar
from likeness.curate.datasets import create_dataset_version
from likeness.curate.dedup import apply_groups, find_workspace_duplicates
from likeness.curate.export import export_version
from likeness.curate.ingest import Ingester
from likeness.curate.selection import Selection
from likeness.curate.variants import near_duplicate_variants
from likeness.data import FACES
from likeness.imaging import open_image
from likeness.store.images import list_images
from likeness.workspace import Workspace

DEMO_NAME = "obama-demo"
SOURCE_PHOTOS = ("obama.jpg", "obama3.jpg", "obama_partial_face.jpg", "obama_partial_face2.jpg")
CANDIDATES = ("obama2.jpg", "biden.jpg", "Tom_Hanks_54745.png", "t1.jpg")


def prepare_inputs(folder: Path) -> tuple[list[Path], list[Path]]:
    """Copy the sample photos into `source/` (with near-duplicate copies of obama.jpg) and
    `candidates/`; return both lists."""
    source_dir, candidate_dir = folder / "source", folder / "candidates"
    source_dir.mkdir(parents=True, exist_ok=True)
    candidate_dir.mkdir(parents=True, exist_ok=True)
    sources = [_copy(FACES / name, source_dir / name) for name in SOURCE_PHOTOS]
    original = open_image(FACES / "obama.jpg").image
    for name, data in near_duplicate_variants(original).items():
        target = source_dir / f"obama_{name}"
        if not target.exists():
            target.write_bytes(data)
        sources.append(target)
    candidates = [_copy(FACES / name, candidate_dir / name) for name in CANDIDATES]
    return sources, candidates


def _copy(src: Path, dst: Path) -> Path:
    if not dst.exists():
        shutil.copyfile(src, dst)
    return dst


def demo(
    directory: Annotated[Path, typer.Argument(help="Where to build the demo workspace.")] = Path(
        "demo-workspace"
    ),
    fresh: Annotated[bool, typer.Option(help="Delete an earlier demo in DIRECTORY first.")] = False,
) -> None:
    """Run the main job on the bundled sample photos: ingest, dedup, dataset, export, score,
    report, and the next dataset version from the candidates that pass.

    Example: likeness demo ./demo-workspace --fresh
    """
    from likeness.metrics import Thresholds, score_images
    from likeness.report import write_score_report

    directory = directory.resolve()
    if fresh and directory.exists():
        shutil.rmtree(directory)
    # 1. Inputs and the workspace.
    sources, candidates = prepare_inputs(directory / "inputs")
    root = directory / "workspace"
    if (root / "likeness.toml").exists():
        ws = Workspace.open(root)
    else:
        ws = Workspace.create(root, name=DEMO_NAME, class_word="man")
    with ws:
        trigger = ws.settings.character.trigger
        out.print(f"[bold]1. workspace[/bold] {ws.root} (trigger {trigger})", highlight=False)
        # 2. Ingest: the source photos, then the candidates as synthetic images.
        for origin, paths in (("source", sources), ("synthetic", candidates)):
            ingester = Ingester(ws, origin=origin)
            for result in (ingester.ingest_file(p) for p in paths):
                line = f"   {origin:<9} {result.status:<15} {Path(result.path).name}"
                if result.status == "near_duplicate":
                    line += f"  (pHash distance {result.distance})"
                out.print(line, highlight=False)
        # 3. Dedup: keep the best of each group.
        dedup = ws.settings.dedup
        groups = find_workspace_duplicates(
            ws.db, dedup.phash_max_distance, dedup.dhash_max_distance
        )
        changed = apply_groups(ws.db, groups)
        out.print(f"[bold]2. dedup[/bold] {len(groups)} group(s), {changed} image(s) set aside")
        for group in groups:
            others = ", ".join(r.original_name for r in group.others)
            out.print(f"   keep {group.keeper.original_name}; set aside {others}", highlight=False)
        # 4. A dataset version of the source photos, exported for kohya.
        v1 = create_dataset_version(ws, "demo", Selection(origins=("source",)), note="sources")
        exported = export_version(
            ws, v1, directory / "export" / v1.ref.replace("@", "_"), "kohya", overwrite=True
        )
        out.print(
            f"[bold]3. dataset[/bold] {v1.ref}: {v1.count} images, caption "
            f"{v1.items[0].caption!r}; kohya folder {exported.image_folder}",
            highlight=False,
        )
        # 5. Score the candidates against the source photos (cached in the workspace).
        records = {r.sha256: r for r in list_images(ws.db)}
        refs = [ws.blobs.path(r.sha256) for r in records.values() if r.origin == "source"]
        targets = [ws.blobs.path(r.sha256) for r in records.values() if r.origin == "synthetic"]
        names = {str(ws.blobs.path(sha)): r.original_name for sha, r in records.items()}
        thresholds = Thresholds(pass_match=ws.settings.identity.pass_match)
        with progress_bar(transient=True) as bar:
            task = bar.add_task("scoring", total=None)
            run = score_images(
                targets,
                refs,
                conn=ws.db,
                thresholds=thresholds,
                progress=lambda done, total: bar.update(task, completed=done, total=total),
            )
        rows = [s.to_json() for s in run.scores]
        report = write_score_report(
            directory / "report",
            rows,
            [s.to_json() for s in run.references.scores],
            title=f"{DEMO_NAME}: candidates against the source photos",
            thresholds={"match": thresholds.pass_match},
            names=names,
        )
        out.print(
            f"[bold]4. score[/bold] {len(rows)} candidates against {len(refs)} source photos "
            f"({run.analyzed} analysed, {run.cached} from cache); report {report}",
            highlight=False,
        )
        out.print(_score_table(rows, names))
        # 6. The next dataset version: the sources plus the candidates that pass every check.
        keep = [r["sha256"] for r in rows if r["pass"] and not r["flags"]]
        if keep:
            v2 = create_dataset_version(
                ws,
                "demo",
                Selection(shas=(*(i.image_sha for i in v1.items), *keep)),
                note="sources + candidates that passed identity with no flags",
            )
            out.print(
                f"[bold]5. next version[/bold] {v2.ref} (parent v{v2.parent_version}): "
                f"{v2.count} images, {len(keep)} candidate(s) added",
                highlight=False,
            )
        else:
            out.print("[bold]5. next version[/bold] no candidate passed every check")
    err.print(f"demo done; open {report}, or: likeness --workspace {root} dataset list")


def _score_table(rows: list[dict], names: dict[str, str]) -> Table:
    table = Table(title="candidates (identity passes at match >= the workspace's pass_match)")
    for column in ("image", "faces", "match", "pass", "angle", "expression", "grain", "flags"):
        table.add_column(column)
    for row in sorted(rows, key=lambda r: -(r["match"] or -1)):
        table.add_row(
            names.get(row["path"], row["path"]),
            str(row["faces"]),
            "" if row["match"] is None else f"{row['match']:.1f}",
            "[green]yes[/green]" if row["pass"] else "[red]no[/red]",
            row["angle"] or "",
            row["expression"] or "",
            "" if row["grain"] is None else f"{row['grain']:.1f}",
            ", ".join(row["flags"]),
        )
    return table
