"""`likeness demo`: the main job on the embedded defaults, from the bundled sample photos.

Creates a workspace, pours in the sample photos plus near-duplicate copies of one of them,
sets the duplicates aside, cuts a captioned dataset version and exports it for kohya.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Annotated

import typer

from likeness.cli.common import err, out
from likeness.curate.datasets import create_dataset_version
from likeness.curate.dedup import apply_groups, find_workspace_duplicates
from likeness.curate.export import export_version
from likeness.curate.ingest import Ingester
from likeness.curate.selection import Selection
from likeness.curate.variants import near_duplicate_variants
from likeness.data import FACES, sample_faces
from likeness.imaging import open_image
from likeness.workspace import Workspace

DEMO_NAME = "obama-demo"


def prepare_inputs(folder: Path) -> list[Path]:
    """Copy the sample photos and write near-duplicate copies of obama.jpg."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for photo in sample_faces():
        target = folder / photo.name
        if not target.exists():
            shutil.copyfile(photo, target)
        paths.append(target)
    original = open_image(FACES / "obama.jpg").image
    for name, data in near_duplicate_variants(original).items():
        target = folder / f"obama_{name}"
        if not target.exists():
            target.write_bytes(data)
        paths.append(target)
    return paths


def demo(
    directory: Annotated[Path, typer.Argument(help="Where to build the demo workspace.")] = Path(
        "demo-workspace"
    ),
    fresh: Annotated[bool, typer.Option(help="Delete an earlier demo in DIRECTORY first.")] = False,
) -> None:
    """Run the main job on the bundled sample photos: ingest, dedup, dataset, export.

    Example: likeness demo ./demo-workspace --fresh
    """
    directory = directory.resolve()
    if fresh and directory.exists():
        shutil.rmtree(directory)
    # 1. Inputs: the sample photos and four near-duplicate copies of one of them.
    inputs = prepare_inputs(directory / "inputs")
    # 2. Workspace.
    root = directory / "workspace"
    ws = (
        Workspace.open(root)
        if (root / "likeness.toml").exists()
        else Workspace.create(root, name=DEMO_NAME, class_word="man")
    )
    with ws:
        out.print(
            f"[bold]1. workspace[/bold] {ws.root} (trigger {ws.settings.character.trigger})",
            highlight=False,
        )
        # 3. Ingest.
        ingester = Ingester(ws, origin="source")
        results = [ingester.ingest_file(p) for p in inputs]
        for r in results:
            line = f"   {r.status:<15} {Path(r.path).name}"
            if r.status == "near_duplicate":
                line += f"  (pHash distance {r.distance})"
            out.print(line, highlight=False)
        # 4. Dedup: keep the best of each group.
        settings = ws.settings.dedup
        groups = find_workspace_duplicates(
            ws.db, settings.phash_max_distance, settings.dhash_max_distance
        )
        changed = apply_groups(ws.db, groups)
        out.print(
            f"[bold]2. dedup[/bold] {len(groups)} group(s); {changed} image(s) set aside",
            highlight=False,
        )
        for group in groups:
            out.print(
                f"   keep {group.keeper.original_name}; set aside "
                f"{', '.join(r.original_name for r in group.others)}",
                highlight=False,
            )
        # 5. A dataset version of the source photos.
        version = create_dataset_version(ws, "demo", Selection(origins=("source",)), note="demo")
        out.print(
            f"[bold]3. dataset[/bold] {version.ref}: {version.count} images, "
            f"caption {version.items[0].caption!r}",
            highlight=False,
        )
        # 6. Export for kohya.
        export_dir = directory / "export" / version.ref.replace("@", "_")
        result = export_version(ws, version, export_dir, "kohya", overwrite=True)
        out.print(
            f"[bold]4. export[/bold] {result.count} images + captions in {result.image_folder}",
            highlight=False,
        )
    err.print(f"demo done; inspect it with: likeness --workspace {root} dataset show demo")
