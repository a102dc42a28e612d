"""`likeness refs ...`: work on the reference photos themselves."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from likeness.cli.common import err, fail, out, print_json, progress_bar
from likeness.cli.score import _expand, _maybe_workspace, _workspace_images

app = typer.Typer(help="Reference photos: face crops for identity adapters.", no_args_is_help=True)

CROPS_DIR = "reference_crops"


@app.command("crop")
def crop(
    ctx: typer.Context,
    paths: Annotated[
        list[Path] | None,
        typer.Argument(help="Photos or folders (default in a workspace: its source images)."),
    ] = None,
    size: Annotated[int, typer.Option(help="Side of the square crop in pixels.", min=16)] = 1024,
    margin: Annotated[
        float,
        typer.Option(help="Context around the face, as a fraction of the face size.", min=0.0),
    ] = 0.4,
    out_dir: Annotated[
        Path | None,
        typer.Option(
            "--out",
            help=f"Where to write the crops (default in a workspace: <workspace>/{CROPS_DIR}).",
            file_okay=False,
        ),
    ] = None,
    recursive: Annotated[
        bool, typer.Option("--recursive", "-r", help="Descend into folders.")
    ] = False,
    as_json: Annotated[
        bool,
        typer.Option(
            "--json",
            help="Print a JSON list on stdout: one {source, name, crop, flags, box, error} "
            "object per photo (crop is null when no face was found).",
        ),
    ] = False,
) -> None:
    """Write square face-only crops of reference photos (PNG, `<name>_face.png`).

    Identity adapters such as InstantID copy hats, glasses and backgrounds from an uncropped
    reference into every output; a crop keeps the face and a little context. Photos without
    a face are reported and skipped; in a photo with several faces the subject (largest, then
    most central) is cropped and the flag says so.

    Example: likeness refs crop photos/ --out crops/ --size 1024 --margin 0.4
    """
    import numpy as np

    from likeness.faces import (
        DlibAnalyzer,
        FaceModelMissing,
        face_flags,
        reference_crop,
        select_subject,
    )
    from likeness.imaging import ImageRejected, open_image

    with _maybe_workspace(ctx) as ws:
        names: dict[str, str] = {}
        if paths:
            sources = _expand(paths, recursive)
        elif ws is not None:
            sources, names = _workspace_images(ws, origins=["source"])
        else:
            fail("no photos given; pass image files or folders (or run inside a workspace)")
        if out_dir is None:
            if ws is None:
                fail("pass --out DIR for the crops (outside a workspace there is no default)")
            out_dir = ws.root / CROPS_DIR
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        fail(f"--out {out_dir}: cannot create the folder ({exc.strerror or exc})")
    analyzer = DlibAnalyzer()
    try:
        analyzer.check()
    except FaceModelMissing as exc:
        fail(str(exc))
    results: list[dict[str, Any]] = []
    used: set[str] = set()
    with progress_bar(transient=True) as bar:
        task = bar.add_task("cropping", total=len(sources))
        for path in sources:
            label = names.get(str(path), path.name)
            entry: dict[str, Any] = {
                "source": str(path), "name": label, "crop": None, "flags": [], "box": None,
                "error": None,
            }  # fmt: skip
            try:
                image = open_image(path).image
            except (ImageRejected, OSError) as exc:
                entry["error"] = f"{path}: {getattr(exc, 'reason', exc)}"
                results.append(entry)
                bar.advance(task)
                continue
            faces = analyzer.analyze(np.asarray(image))
            subject = select_subject(faces, image.width, image.height)
            entry["flags"] = list(face_flags(faces, subject, image.width, image.height))
            if subject is not None:
                target = out_dir / _unique(Path(label).stem + "_face.png", used)
                reference_crop(image, faces[subject], size=size, margin=margin).save(target)
                entry["crop"] = str(target)
                entry["box"] = faces[subject].box.as_list()
            results.append(entry)
            bar.advance(task)
    if as_json:
        print_json(results)
        return
    for entry in results:
        if entry.get("error"):
            err.print(f"[red]skipped[/red] {escape(entry['error'])}", highlight=False)
        elif entry["crop"] is None:
            err.print(f"[yellow]no face[/yellow] {escape(entry['name'])}", highlight=False)
        else:
            flags = f" ({', '.join(entry['flags'])})" if entry["flags"] else ""
            out.print(escape(f"{entry['name']} -> {entry['crop']}{flags}"), highlight=False)
    written = sum(1 for e in results if e["crop"])
    err.print(escape(f"{written} of {len(results)} photos cropped to {size}x{size} in {out_dir}"))


def _unique(name: str, used: set[str]) -> str:
    stem, suffix = name.rsplit(".", 1)
    candidate, n = name, 2
    while candidate in used:
        candidate = f"{stem}-{n}.{suffix}"
        n += 1
    used.add(candidate)
    return candidate
