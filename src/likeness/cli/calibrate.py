"""`likeness calibrate`: where the identity pass bar should sit for this character."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from likeness.cli.common import err, fail, open_workspace, out, print_json, progress_bar
from likeness.cli.score import _expand, _instruments, _workspace_images

if TYPE_CHECKING:
    from likeness.metrics import ScoreRun
    from likeness.metrics.separation import OtherPhoto, Proposal, SourcePhoto
    from likeness.workspace import Workspace


def calibrate(
    ctx: typer.Context,
    negatives: Annotated[
        list[Path] | None,
        typer.Option(
            "--negatives",
            help="Photos of other people, files or folders (repeatable): every face in them "
            "is a different-person sample.",
        ),
    ] = None,
    report: Annotated[
        Path | None,
        typer.Option(
            "--report",
            help="Write an HTML page (both histograms, bars, outliers) here.",
            file_okay=False,
        ),
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print one JSON object on stdout (shape: docs/cli.md).")
    ] = False,
    apply: Annotated[
        bool,
        typer.Option("--apply", help="Write the proposed identity.pass_match to likeness.toml."),
    ] = False,
    recursive: Annotated[
        bool, typer.Option("--recursive", "-r", help="Descend into --negatives folders.")
    ] = False,
    workers: Annotated[
        int | None, typer.Option(help="Worker processes (default: one per core).", min=1)
    ] = None,
    body_pose: Annotated[
        bool,
        typer.Option(
            "--body-pose/--no-body-pose",
            help="Run BlazePose too, so the cached analyses are the ones `likeness score` uses.",
        ),
    ] = True,
    insightface: Annotated[
        Path | None,
        typer.Option(
            help="Use InsightFace ONNX models from this local folder instead of dlib "
            "(non-commercial licence).",
            file_okay=False,
        ),
    ] = None,
) -> None:
    """Propose the identity pass bar from the workspace's own source photos.

    Measures how far apart the character's source photos are (every pair of distinct photos;
    copies of one shot, resized, cropped or mirrored, are left out) and, with --negatives, how
    near other people's faces come to the nearest source photo; every non-subject face in a
    source photo counts as another person too. The bar is proposed midway between the two
    (or, without other people, between the photos' spread and the backend's threshold), in
    distance and in the `match` units of `identity.pass_match`, with its error rates on these
    samples. Outlier sources (probably someone else) and overlapping distributions are
    warned of. Nothing is written without --apply. How the bar is chosen: docs/metrics.md.

    Example: likeness calibrate --negatives ~/photos/others --report calibration/ --apply
    """
    from likeness.metrics.same_shot import face_prints, same_shot_pairs
    from likeness.metrics.separation import measure_separation

    given = list(negatives or [])
    for path in given:
        if not path.exists():
            fail(f"--negatives {path}: no such file or folder; pass photos of other people")
    others = _expand(given, recursive)
    if given and not others:
        fail("--negatives: no images in the given folders (try --recursive)")
    with open_workspace(ctx) as ws:
        # 1. The source photos and the other people, analysed through the workspace cache.
        sources, names = _workspace_images(ws, origins=["source"])
        if not sources:
            fail("the workspace has no source photos; add some with `likeness add --origin source`")
        try:
            instruments = _instruments(insightface, body_pose, brisque=False)
        except (RuntimeError, OSError) as exc:
            fail(str(exc))
        run = _analyse(ws, others, sources, instruments, workers)
        source_photos, prints_for, notes = _sources(run, names)
        other_photos, other_notes = _others(run, {p.key for p in source_photos})
        notes += other_notes
        # 2. Copies of one shot among the sources, then the distributions and the bar.
        faces = instruments.faces
        prints = face_prints(prints_for, backend=f"{faces.name}={faces.version}", conn=ws.db)
        separation = measure_separation(
            source_photos,
            other_photos,
            threshold=faces.match_threshold,
            pass_match=ws.settings.identity.pass_match,
            same_shot=same_shot_pairs(prints),
        )
        data: dict[str, Any] = {
            "backend": {"name": faces.name, "version": faces.version},
            **separation.to_json(),
        }
        data["sources"]["photos"] = len(sources)
        _add_boxes(data, run)
        data["warnings"] = [*({"code": c, "message": m} for c, m in notes), *data["warnings"]]
        data["applied"] = None
        # 3. --apply: the proposal into likeness.toml.
        if apply:
            if separation.proposal is None:
                _print_warnings(data["warnings"])
                fail("no bar was proposed (see the warnings above), so nothing was written")
            data["applied"] = _apply(ws, separation.proposal)
        paths = {r.sha256: Path(r.path) for r in [*run.references.scores, *run.scores]}
        if report is not None:
            from likeness.report.calibration import write_calibration_report

            index = write_calibration_report(data, report, image_path=paths.__getitem__)
            err.print(f"report: {escape(str(index))}")
    # 4. Output.
    _print_warnings(data["warnings"])
    if as_json:
        print_json(data)
    else:
        _print_summary(data)
    if data["applied"]:
        a = data["applied"]
        err.print(escape(f"identity.pass_match: {a['old']} -> {a['new']} (written to {a['file']})"))
    elif data["proposal"] and not as_json:
        err.print("nothing written; run again with --apply to use the proposed bar")


def _analyse(
    ws: Workspace, others: list[Path], sources: list[Path], instruments: Any, workers: int | None
) -> ScoreRun:
    from likeness.metrics import score_images

    with progress_bar(transient=True) as bar:
        task = bar.add_task("analysing", total=None)
        return score_images(
            others,
            sources,
            instruments=instruments,
            conn=ws.db,
            workers=workers,
            progress=lambda done, total: bar.update(task, completed=done, total=total),
        )


def _sources(
    run: ScoreRun, names: dict[str, str]
) -> tuple[list[SourcePhoto], dict[str, tuple[Path, Any]], list[tuple[str, str]]]:
    """The source photos as separation inputs, the subject boxes to print, and notes."""
    from likeness.metrics.separation import SourcePhoto

    photos, boxes, notes = [], {}, []
    for row in run.references.scores:
        name = names.get(row.path, Path(row.path).name)
        analysis = run.analyses.get(row.sha256)
        if analysis is None:
            notes.append(("unreadable", f"source photo {name}: {row.error}"))
            continue
        embeddings = tuple(f.embedding for f in analysis.faces)
        photos.append(SourcePhoto(row.sha256, name, embeddings, analysis.subject))
        if analysis.face is not None:
            boxes[row.sha256] = (Path(row.path), analysis.face.box)
    return photos, boxes, notes


def _others(run: ScoreRun, source_keys: set[str]) -> tuple[list[OtherPhoto], list[tuple[str, str]]]:
    from likeness.metrics.separation import OtherPhoto

    photos, notes, seen = [], [], set()
    for row in run.scores:
        name = Path(row.path).name
        analysis = run.analyses.get(row.sha256)
        if analysis is None:
            notes.append(("unreadable", f"other photo {row.error}"))
        elif row.sha256 in source_keys:
            notes.append(
                ("negative_is_source", f"other photo {name} is one of the source photos; left out")
            )
        elif row.sha256 not in seen:
            seen.add(row.sha256)
            photos.append(OtherPhoto(row.sha256, name, tuple(f.embedding for f in analysis.faces)))
    return photos, notes


def _add_boxes(data: dict[str, Any], run: ScoreRun) -> None:
    """Face boxes for the faces the report shows (it crops its thumbnails to them)."""
    for entry in data["different_person"]["faces"]:
        entry["box"] = run.analyses[entry["sha256"]].faces[entry["face"]].box.as_list()
    for entry in data["outliers"]:
        face = run.analyses[entry["sha256"]].face
        entry["box"] = face.box.as_list() if face is not None else None


def _print_warnings(warnings: list[dict[str, str]]) -> None:
    for warning in warnings:
        err.print(f"[yellow]warning:[/yellow] {escape(warning['message'])}", highlight=False)


def _apply(ws: Workspace, proposal: Proposal) -> dict[str, Any]:
    """Write the proposal's match into likeness.toml; the old and new values."""
    identity = ws.settings.identity
    new = proposal.bar.match
    settings = ws.settings.replace(identity=dataclasses.replace(identity, pass_match=new))
    ws.save_settings(settings)
    return {
        "key": "identity.pass_match",
        "old": identity.pass_match,
        "new": new,
        "file": str(ws.settings_path),
    }


def _print_summary(data: dict[str, Any]) -> None:
    same, other = data["same_person"], data["different_person"]
    sources = data["sources"]
    out.print(
        f"{sources['photos']} source photos, {sources['with_face']} with a face, "
        f"{sources['shots']} distinct shots ({len(data['near_duplicates'])} near-duplicate "
        f"pairs left out); backend {data['backend']['name']}, threshold {data['threshold']:g}"
    )
    out.print(f"same person:   {same['count']} pairs, {_span(same)}")
    out.print(f"other people:  {other['count']} faces in {other['photos']} photos, {_span(other)}")
    table = Table()
    for column in ("bar", "distance", "match", "false reject", "false accept"):
        table.add_column(column, justify="left" if column == "bar" else "right")
    for label, bar in (("current", data["current"]), ("proposed", data["proposal"])):
        if bar is None:
            table.add_row(label, "–", "–", "–", "–")
            continue
        table.add_row(
            label, f"{bar['distance']:.3f}", f"{bar['match']:.2f}",
            _rate(bar["false_reject"], same["count"]), _rate(bar["false_accept"], other["count"]),
        )  # fmt: skip
    out.print(table)
    if data["proposal"]:
        out.print(f"rule: {escape(data['proposal']['explanation'])}")
    for outlier in data["outliers"]:
        out.print(
            f"[yellow]outlier[/yellow] {escape(outlier['name'])} (median distance "
            f"{outlier['median_distance']:.3f}, {outlier['kind'].replace('_', ' ')})"
        )


def _span(summary: dict[str, Any]) -> str:
    if not summary["count"]:
        return "none"
    return f"{summary['min']:.3f} .. {summary['max']:.3f} (median {summary['median']:.3f})"


def _rate(value: float | None, count: int) -> str:
    if value is None:
        return "–"
    return f"{value:.0%} of {count}"
