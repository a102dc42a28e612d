"""`likeness score`: measure images against the character's reference photos."""

from __future__ import annotations

import csv
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from likeness.cli.common import err, fail, out, print_json, workspace_path
from likeness.cli.scaling import RayOption, notice, run_display
from likeness.config import ScaleSettings
from likeness.curate.ingest import expand_inputs

if TYPE_CHECKING:
    from likeness.metrics import Instruments, ScoreRun, Thresholds
    from likeness.scale.scoring import RayAnalyzer
    from likeness.workspace import Workspace

CSV_FIELDS = (
    "path", "sha256", "faces", "match", "distance", "centroid_distance", "pass", "yaw", "pitch",
    "roll", "angle", "expression", "expression_probability", "body_pose", "sharpness", "grain",
    "plastic", "plastic_relative", "skin_texture", "clipping", "face_px", "brisque", "flags",
    "is_reference", "error",
)  # fmt: skip


def score(
    ctx: typer.Context,
    paths: Annotated[
        list[Path] | None,
        typer.Argument(help="Images or folders to score (default in a workspace: all its images)."),
    ] = None,
    refs: Annotated[
        list[Path] | None,
        typer.Option(
            "--refs",
            help="Reference photos or folders (default in a workspace: its source images).",
        ),
    ] = None,
    as_json: Annotated[
        bool,
        typer.Option(
            "--json", help="Print one JSON object per image on stdout (shape: docs/metrics.md)."
        ),
    ] = False,
    csv_file: Annotated[
        Path | None, typer.Option("--csv", help="Also write one CSV row per image here.")
    ] = None,
    report: Annotated[
        Path | None,
        typer.Option("--report", help="Write an HTML report (contact sheet, histograms) here."),
    ] = None,
    recursive: Annotated[
        bool, typer.Option("--recursive", "-r", help="Descend into folders.")
    ] = False,
    workers: Annotated[
        int | None,
        typer.Option(
            help="Worker processes (default: one per core); with Ray, scoring workers "
            "(default: scale.workers, else one per CPU of the cluster).",
            min=1,
        ),
    ] = None,
    ray: RayOption = None,
    brisque: Annotated[bool, typer.Option(help="Also compute BRISQUE (slower).")] = False,
    body_pose: Annotated[
        bool, typer.Option("--body-pose/--no-body-pose", help="Run BlazePose (MediaPipe).")
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
    """Score images against reference photos: identity match (0-10), head angle, expression,
    body pose, sharpness, grain, plastic skin and flags, in parallel with a progress bar.

    Inside a workspace the references default to its `source` images and every analysis is
    cached by image hash, so scoring unchanged images again recomputes nothing. Outside one,
    pass --refs. Units and thresholds: docs/metrics.md. Exit status: 0 when every image was
    scored (whatever its verdict), 1 when some could not be read.

    Example: likeness score generated/ --refs photos/ --report report/
    """
    from likeness.metrics import Thresholds, score_images

    with _maybe_workspace(ctx) as ws:
        # 1. Inputs and references.
        names: dict[str, str] = {}
        targets = _expand(paths or [], recursive)
        if not paths:
            if ws is None:
                fail("no images given; pass image files or folders (or run inside a workspace)")
            targets, names = _workspace_images(ws, origins=None)
        if refs:
            references = _expand(refs, recursive)
        elif ws is not None:
            references, ref_names = _workspace_images(ws, origins=["source"])
            names.update(ref_names)
        else:
            fail("no reference photos; pass --refs PATH (or run inside a workspace)")
        if not references:
            fail("the reference set is empty; add source photos or pass --refs with images")
        if not targets:
            fail("no images to score in the given paths")
        # 2. Instruments and thresholds.
        try:
            instruments = _instruments(insightface, body_pose, brisque)
        except (RuntimeError, OSError) as exc:
            fail(str(exc))
        thresholds = Thresholds()
        if ws is not None:
            thresholds = Thresholds(pass_match=ws.settings.identity.pass_match)
        analyzer = _ray_analyzer(ws, ray, workers, instruments)
        # 3. Score, with a progress bar over the distinct images (and, in a workspace, a job
        #    record: an interrupted run resumes from the analyses already cached).
        job = None
        if ws is not None:
            from likeness.jobs import job_key, start_job

            job = start_job(
                ws.db,
                "score",
                job_key(sorted(map(str, targets)), sorted(map(str, references))),
                params={"paths": [str(p) for p in targets], "refs": len(references)},
            )
        with run_display(analyzer, transient=True) as bar:
            task = bar.add_task("scoring", total=None)

            def progress(done: int, total: int) -> None:
                bar.update(task, completed=done, total=total)
                if job is not None:
                    if job.total != total:
                        job.set_total(total)
                    job.set_progress(done)

            try:
                run = score_images(
                    targets,
                    references,
                    instruments=instruments,
                    conn=ws.db if ws is not None else None,
                    workers=workers,
                    thresholds=thresholds,
                    progress=progress,
                    analyze=analyzer,
                )
            except BaseException as exc:
                if job is not None:
                    job.fail(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)
                raise
            finally:
                if analyzer is not None:
                    analyzer.close()
        if job is not None:
            job.finish(message=f"{run.analyzed} analysed, {run.cached} from cache")
    rows = [s.to_json() for s in run.scores]
    ref_rows = [s.to_json() for s in run.references.scores]
    for row in [*rows, *ref_rows]:
        if row["path"] in names:
            row["name"] = names[row["path"]]
    # 4. Outputs.
    if csv_file is not None:
        _write_csv(csv_file, rows)
    if report is not None:
        from likeness.report import write_score_report

        index = write_score_report(
            report,
            rows,
            ref_rows,
            thresholds=_report_thresholds(thresholds, run),
            names=names,
        )
        err.print(f"report: {escape(str(index))}")
    unread = {r["path"]: r["error"] for r in ref_rows if r.get("error")}
    for path in run.references.skipped:
        if path in unread:
            err.print(f"[yellow]reference not read:[/yellow] {escape(unread[path])}")
        else:
            name = escape(names.get(path, path))
            err.print(f"[yellow]reference without a usable face:[/yellow] {name}")
    if run.references.calibration is None:
        err.print(
            f"[yellow]identity not measured:[/yellow] none of the {len(references)} reference "
            "photos has a usable face; pass --refs with clear photos of the character"
        )
    else:
        for sha in run.references.calibration.outliers:
            err.print(f"[yellow]reference looks like someone else:[/yellow] {sha[:12]}")
    if as_json:
        print_json(rows)
    else:
        _print_table(rows, names)
    failed = [r for r in rows if r.get("error")]
    for row in failed:
        err.print(f"[red]not scored[/red] {escape(row['error'])}", highlight=False)
    err.print(
        f"{len(rows)} scored, {sum(r['pass'] for r in rows)} pass; "
        f"{run.analyzed} analysed, {run.cached} from cache"
    )
    if failed:
        raise typer.Exit(1)


@contextmanager
def _maybe_workspace(ctx: typer.Context) -> Iterator[Workspace | None]:
    """The workspace when one is named or found, else None (plain folders)."""
    from likeness.workspace import Workspace, WorkspaceError, find_workspace

    explicit = workspace_path(ctx)
    try:
        ws = Workspace.open(find_workspace(explicit))
    except (WorkspaceError, ValueError) as exc:
        if explicit is not None:
            fail(str(exc))
        ws = None
    try:
        yield ws
    finally:
        if ws is not None:
            ws.close()


def _ray_analyzer(
    ws: Workspace | None, ray: str | None, workers: int | None, instruments: Instruments
) -> RayAnalyzer | None:
    """Scoring workers on Ray when --ray or the workspace's scale.address asks for them
    (None: local processes, as before)."""
    settings = ws.settings.scale if ws is not None else ScaleSettings()
    address = ray or settings.address
    if not address:
        return None
    from likeness.scale.cluster import ScaleError
    from likeness.scale.scoring import build_score_pool

    err.print(f"starting scoring workers on Ray ({address})...", highlight=False)
    try:
        return build_score_pool(
            settings, instruments, address=address, workers=workers, on_notice=notice
        )
    except ScaleError as exc:
        fail(str(exc))
    raise AssertionError("unreachable")


def _expand(paths: list[Path], recursive: bool) -> list[Path]:
    return list(expand_inputs(paths, recursive=recursive))


def _workspace_images(
    ws: Workspace, origins: list[str] | None
) -> tuple[list[Path], dict[str, str]]:
    from likeness.store.images import list_images

    records = list_images(ws.db, origins=origins)
    paths = [ws.blobs.path(r.sha256) for r in records]
    return paths, {str(p): r.original_name for p, r in zip(paths, records, strict=True)}


def _instruments(insightface: Path | None, body_pose: bool, brisque: bool) -> Instruments:
    from likeness.faces import DlibAnalyzer
    from likeness.faces.insightface_backend import InsightFaceAnalyzer
    from likeness.metrics import Instruments
    from likeness.metrics.body import default_pose_backend

    # Fail now, with the reason, rather than once per image in every worker.
    faces: DlibAnalyzer | InsightFaceAnalyzer
    if insightface is not None:
        faces = InsightFaceAnalyzer(insightface)
        faces.load()
    else:
        faces = DlibAnalyzer()
        faces.check()  # without loading: rescoring from the cache needs no model
    pose = default_pose_backend() if body_pose else None
    return Instruments(faces=faces, pose=pose, brisque=brisque)


def _report_thresholds(thresholds: Thresholds, run: ScoreRun) -> dict[str, float]:
    values = {
        "match": thresholds.pass_match,
        "sharpness": thresholds.min_sharpness,
        "grain": thresholds.max_grain,
        "plastic": thresholds.max_plastic,
        "clipping": thresholds.max_clipping,
        "brisque": thresholds.max_brisque,
    }
    if run.references.calibration is not None:
        values["distance"] = run.references.calibration.threshold
    return values


def _write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=CSV_FIELDS, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({**row, "flags": ";".join(row["flags"])})


def _print_table(rows: list[dict[str, Any]], names: dict[str, str]) -> None:
    table = Table(show_lines=False)
    for column, justify in [
        ("image", "left"), ("match", "right"), ("dist", "right"), ("pass", "center"),
        ("angle", "left"), ("expr", "left"), ("body", "left"), ("sharp", "right"),
        ("grain", "right"), ("plastic", "right"), ("flags", "left"),
    ]:  # fmt: skip
        table.add_column(column, justify=justify)  # type: ignore[arg-type]
    ordered = sorted(rows, key=lambda r: (r["match"] is None, -(r["match"] or 0.0)))
    for r in ordered:
        name = names.get(r["path"], Path(r["path"]).name)
        verdict = "[green]yes[/green]" if r["pass"] else "[red]no[/red]"
        flags = ", ".join(r["flags"]) if not r.get("error") else f"[red]{escape(r['error'])}[/red]"
        table.add_row(
            escape(name), _fmt(r["match"], 1), _fmt(r["distance"], 3), verdict, r["angle"] or "–",
            r["expression"] or "–", r["body_pose"], _fmt(r["sharpness"], 0),
            _fmt(r["grain"], 2), _fmt(r["plastic"], 2), flags,
        )  # fmt: skip
    out.print(table)


def _fmt(value: float | None, digits: int) -> str:
    return "–" if value is None else f"{value:.{digits}f}"
