"""Scoring images against a reference set: the library behind `likeness score`.

1. Hash every input (sha256 of the file bytes).
2. Look the analyses up in the workspace cache (when a connection is given).
3. Analyse the rest in parallel, one process per core, storing each result as it arrives
   (`likeness.metrics.workers`: the workers keep their models between calls).
4. Calibrate identity on the references (leave-one-out) and take their skin texture.
5. Score each image: match, angle, plastic index, quality flags, verdict.
"""

from __future__ import annotations

import hashlib
import math
import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from likeness.metrics.analysis import ANALYZER_NAME, ImageAnalysis, Instruments
from likeness.metrics.angle import yaw_bucket
from likeness.metrics.identity import IdentityCalibration, calibrate, identify
from likeness.metrics.skin import plastic_index, plastic_relative
from likeness.metrics.workers import run_parallel

Progress = Callable[[int, int], None]
"""Called as progress(done, total) after each image."""
AnalyzeRun = Callable[
    [dict[str, Path], Instruments, Callable[[str, dict[str, Any] | str], None]], None
]
"""Analyses ``todo`` (sha -> path) somewhere else (e.g. Ray workers, see likeness.scale),
calling ``deliver(sha, analysis dict or one-line error)`` from the caller's thread."""


@dataclass(frozen=True)
class Thresholds:
    """Where a number becomes a verdict or a flag (see docs/metrics.md).

    `pass_match` is the identity verdict: 5.0 is exactly the backend's same-person distance
    (dlib 0.6); a workspace may ask for more through its `identity.pass_match`.
    """

    pass_match: float = 5.0
    min_sharpness: float = 40.0
    max_grain: float = 3.0
    max_plastic: float = 0.6
    max_clipping: float = 5.0
    max_brisque: float = 60.0


@dataclass(frozen=True)
class ImageScore:
    """One scored image. `passed` is the identity verdict: the subject face's match is at least
    `Thresholds.pass_match` (and so its distance within the backend's same-person threshold).
    Flags are advisory: filters decide which of them reject an image."""

    path: str
    sha256: str
    faces: int
    match: float | None
    distance: float | None
    centroid_distance: float | None
    yaw: float | None
    pitch: float | None
    roll: float | None
    angle: str | None
    expression: str | None
    expression_probability: float | None
    body_pose: str
    sharpness: float | None
    grain: float | None
    plastic: float | None
    plastic_relative: float | None
    skin_texture: float | None
    clipping: float | None
    face_px: float | None
    brisque: float | None
    flags: tuple[str, ...]
    passed: bool
    is_reference: bool = False
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        """The stable `--json` shape (docs/metrics.md): `pass` rather than `passed`."""
        data = dict(self.__dict__)
        data["flags"] = list(self.flags)
        data["pass"] = data.pop("passed")
        return {k: _clean(v) for k, v in data.items()}


@dataclass(frozen=True)
class ReferenceSet:
    """The references as analysed, with the identity calibration derived from them."""

    scores: tuple[ImageScore, ...]
    calibration: IdentityCalibration | None
    skin_texture: float | None
    """Median `skin_texture` of the references' judged faces (None when none is judged)."""
    skipped: tuple[str, ...] = ()
    """Reference paths without a usable face (they take no part in the calibration)."""


@dataclass(frozen=True)
class ScoreRun:
    references: ReferenceSet
    scores: tuple[ImageScore, ...]
    analyzed: int
    """How many images were computed (not found in the cache)."""
    cached: int
    analyses: dict[str, ImageAnalysis] = field(default_factory=dict)
    """sha256 -> full analysis (every face, landmarks, embeddings) of each readable input."""


@dataclass
class _Input:
    path: Path
    sha256: str = ""
    error: str | None = None
    analysis: ImageAnalysis | None = None


def score_images(
    paths: Sequence[Path | str],
    references: Sequence[Path | str],
    *,
    instruments: Instruments | None = None,
    conn: sqlite3.Connection | None = None,
    workers: int | None = None,
    thresholds: Thresholds | None = None,
    progress: Progress | None = None,
    analyze: AnalyzeRun | None = None,
) -> ScoreRun:
    """Score `paths` against the faces in `references`.

    Args:
        paths: image files to score.
        references: the character's reference photos (e.g. its source images).
        instruments (`Instruments`, *optional*): the models; default dlib + fer + MediaPipe.
        conn (`sqlite3.Connection`, *optional*): a workspace database; analyses are then
            read from and stored in its cache, so unchanged images are never recomputed.
        workers (`int`, *optional*): processes; default one per core.
        progress (*optional*): called as progress(done, total).
        analyze (*optional*): where the images not cached are analysed instead of local
            processes (`likeness.scale.scoring.RayAnalyzer`).

    Worker processes import the caller's main module, as with any multiprocessing start
    method but fork: a script that calls this must do so under `if __name__ == "__main__":`.

    Example:
        >>> run = score_images(["gen/001.png"], ["refs/a.jpg"])  # doctest: +SKIP
        >>> run.scores[0].match, run.scores[0].passed  # doctest: +SKIP
    """
    instruments = instruments or Instruments()
    thresholds = thresholds or Thresholds()
    # 1-3. Analyses of every distinct file, references included.
    targets = [_Input(Path(p)) for p in paths]
    refs = [_Input(Path(p)) for p in references]
    analyzed, cached = analyze_inputs(
        [*refs, *targets],
        instruments,
        conn=conn,
        workers=workers,
        progress=progress,
        analyze=analyze,
    )
    # 4. References.
    reference_set = build_references(refs, instruments, thresholds)
    # 5. Scores.
    ref_keys = {r.sha256 for r in refs if r.analysis is not None}
    scores = tuple(
        score_one(t, reference_set, thresholds, is_reference=t.sha256 in ref_keys) for t in targets
    )
    analyses = {i.sha256: i.analysis for i in [*refs, *targets] if i.analysis is not None}
    return ScoreRun(reference_set, scores, analyzed, cached, analyses)


def analyze_paths(
    paths: Sequence[Path | str],
    *,
    instruments: Instruments | None = None,
    conn: sqlite3.Connection | None = None,
    workers: int | None = None,
    progress: Progress | None = None,
) -> dict[str, ImageAnalysis]:
    """Analyse images without references (faces, embeddings, quality): sha256 -> analysis.

    Cached like `score_images`; unreadable files are left out.

    Example:
        >>> analyses = analyze_paths(["a.png", "b.png"], conn=ws.db)  # doctest: +SKIP
    """
    items = [_Input(Path(p)) for p in paths]
    analyze_inputs(
        items, instruments or Instruments(), conn=conn, workers=workers, progress=progress
    )
    return {i.sha256: i.analysis for i in items if i.analysis is not None}


def analyze_inputs(
    inputs: Sequence[_Input],
    instruments: Instruments,
    *,
    conn: sqlite3.Connection | None = None,
    workers: int | None = None,
    progress: Progress | None = None,
    analyze: AnalyzeRun | None = None,
) -> tuple[int, int]:
    """Fill `analysis` (or `error`) on each input; returns (computed, from cache)."""
    version = instruments.version
    for item in inputs:
        try:
            item.sha256 = _file_sha256(item.path)
        except OSError as exc:
            item.error = f"cannot read {item.path}: {exc.strerror or exc}"
    by_sha: dict[str, list[_Input]] = {}
    for item in inputs:
        if item.error is None:
            by_sha.setdefault(item.sha256, []).append(item)
    found = _cached(conn, list(by_sha), version) if conn is not None and by_sha else {}
    for sha, analysis in found.items():
        for item in by_sha[sha]:
            item.analysis = analysis
    todo = {sha: items[0].path for sha, items in by_sha.items() if sha not in found}
    total, done = len(by_sha), len(found)
    if progress:
        progress(done, total)

    def deliver(sha: str, result: dict[str, Any] | str) -> None:
        nonlocal done
        done += 1
        if isinstance(result, str):
            for item in by_sha[sha]:
                item.error = result
        else:
            if conn is not None:
                from likeness.store.analyses import put_analysis

                put_analysis(conn, sha, ANALYZER_NAME, version, result)
            analysis = ImageAnalysis.from_dict(result)
            for item in by_sha[sha]:
                item.analysis = analysis
        if progress:
            progress(done, total)

    if analyze is not None:
        analyze(todo, instruments, deliver)
    else:
        run_parallel(todo, instruments, workers, deliver)
    return len(todo), len(found)


def _cached(conn: sqlite3.Connection, shas: list[str], version: str) -> dict[str, ImageAnalysis]:
    """Cached analyses of `shas`. A row that no longer parses (damaged, or written by an
    incompatible build under the same version) is left out, so the image is analysed again
    and its row replaced."""
    from likeness.store.analyses import get_analyses, get_analysis

    try:
        rows: dict[str, dict[str, Any] | None] = dict(
            get_analyses(conn, shas, ANALYZER_NAME, version)
        )
    except ValueError:  # one row is not JSON: read them one by one
        rows = {}
        for sha in shas:
            try:
                rows[sha] = get_analysis(conn, sha, ANALYZER_NAME, version)
            except ValueError:
                continue
    found: dict[str, ImageAnalysis] = {}
    for sha, result in rows.items():
        if result is None:
            continue
        try:
            found[sha] = ImageAnalysis.from_dict(result)
        except (KeyError, TypeError, ValueError, IndexError):
            continue
    return found


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def build_references(
    refs: Sequence[_Input], instruments: Instruments, thresholds: Thresholds
) -> ReferenceSet:
    """Calibrate identity and skin texture on the references' subject faces."""
    usable: dict[str, ImageAnalysis] = {}
    skipped = []
    for r in refs:
        if r.analysis is not None and r.analysis.face is not None:
            usable.setdefault(r.sha256, r.analysis)
        else:
            skipped.append(str(r.path))
    calibration = None
    if usable:
        calibration = calibrate(
            [a.face.embedding for a in usable.values()],  # type: ignore[union-attr]
            list(usable),
            threshold=instruments.faces.match_threshold,
        )
    textures = [
        a.quality.skin_texture for a in usable.values() if a.quality.skin_texture is not None
    ]
    skin = float(np.median(textures)) if textures else None
    partial = ReferenceSet((), calibration, skin, tuple(skipped))
    scores = tuple(score_one(r, partial, thresholds, is_reference=True) for r in refs)
    return ReferenceSet(scores, calibration, skin, tuple(skipped))


def score_one(
    item: _Input, refs: ReferenceSet, thresholds: Thresholds, is_reference: bool = False
) -> ImageScore:
    """Reference-dependent numbers and the verdict for one analysed input."""
    a = item.analysis
    if a is None:
        return _failed(item, is_reference)
    face = a.face
    flags = list(a.flags)
    match = distance = centroid = plastic = relative = None
    passed = False
    if face is not None and refs.calibration is not None:
        ident = identify(face.embedding, refs.calibration, exclude_key=item.sha256)
        match, distance, centroid = ident.match, ident.distance, ident.centroid_distance
        passed = ident.passed and match >= thresholds.pass_match
    q = a.quality
    if q.skin_texture is not None:
        plastic = plastic_index(q.skin_texture)
        if refs.skin_texture is not None:
            relative = plastic_relative(q.skin_texture, refs.skin_texture)
    if face is not None and q.sharpness < thresholds.min_sharpness:
        flags.append("blurry")
    if q.grain > thresholds.max_grain:
        flags.append("grainy")
    if plastic is not None and plastic > thresholds.max_plastic:
        flags.append("plastic_skin")
    if q.clipping > thresholds.max_clipping:
        flags.append("clipped")
    if q.brisque is not None and q.brisque > thresholds.max_brisque:
        flags.append("low_brisque_quality")
    expr = a.expression
    return ImageScore(
        path=str(item.path),
        sha256=item.sha256,
        faces=len(a.faces),
        match=_round(match, 2),
        distance=_round(distance, 4),
        centroid_distance=_round(centroid, 4),
        yaw=_round(face.pose.yaw, 1) if face else None,
        pitch=_round(face.pose.pitch, 1) if face else None,
        roll=_round(face.pose.roll, 1) if face else None,
        angle=yaw_bucket(face.pose.yaw) if face else None,
        expression=expr.label if expr else None,
        expression_probability=_round(expr.probability, 3) if expr else None,
        body_pose=a.body.label,
        sharpness=_round(q.sharpness, 1),
        grain=_round(q.grain, 2),
        plastic=_round(plastic, 3),
        plastic_relative=_round(relative, 3),
        skin_texture=_round(q.skin_texture, 4),
        clipping=_round(q.clipping, 2),
        face_px=q.face_px,
        brisque=_round(q.brisque, 2),
        flags=tuple(flags),
        passed=passed,
        is_reference=is_reference,
    )


def _failed(item: _Input, is_reference: bool) -> ImageScore:
    return ImageScore(
        path=str(item.path), sha256=item.sha256, faces=0, match=None, distance=None,
        centroid_distance=None, yaw=None, pitch=None, roll=None, angle=None, expression=None,
        expression_probability=None, body_pose="not_available", sharpness=None, grain=None,
        plastic=None, plastic_relative=None, skin_texture=None, clipping=None, face_px=None,
        brisque=None, flags=("unreadable",), passed=False, is_reference=is_reference,
        error=item.error or "not analysed",
    )  # fmt: skip


def _round(value: float | None, digits: int) -> float | None:
    if value is None or not math.isfinite(value):
        return None
    return round(float(value), digits)


def _clean(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
