"""Enrichment: edit source photos toward the empty and thin cells of the card's grid, judge
every edit at once, and keep the good ones as images of origin `enriched`.

1. Open (or resume) the job: the same plan and edit recipe resume the unfinished job, and an
   automatic plan is read back from that job rather than made again.
2. For each edit of the plan not decided yet:
   a. shrink the source to the recipe's ``max_side``; ``engine.edit(image, instruction)``;
   b. put the result in the blob store and score it against the workspace's source photos;
   c. judge it (:func:`judge_edit`);
   d. kept: store it as an image of origin `enriched` with its row (provenance: source sha256,
      instruction, cell, model, seed, score) in one transaction; otherwise record the reasons.
3. Finish the job.

Verdict: an edit is kept only when all of these hold, and every one that fails is a reason:

- identity: a face is found and its match passes the workspace's bar (``identity.pass_match``);
- angle: the measured head-angle bucket is the asked one (when the edit asks for one);
- expression: the measured expression is the asked one (when the edit asks for one);
- new: the result is not an image already stored (an edit model that returned its input).

Quality flags (blurry, plastic_skin...) are recorded with the score but do not reject: review
decides on those. An edit the engine failed is recorded as `failed` and made again by the next
run; kept and rejected edits are final for that edit recipe (another model, seed or LoRA
strength makes new edits).

Example::

    plan = auto_plan(coverage, source_scores)
    run = run_enrich(ws, plan, engine, EditRecipe(model="~/qwen-edit"), WorkspaceScorer(ws),
                     key=job_key("enrich", plan.plan_hash()))
    run.kept
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from likeness.engines.base import EngineCannotHonour
from likeness.evaluate import enrich_store
from likeness.evaluate.coverage import (
    Coverage,
    Grid,
    ImageChoice,
    card_grid,
    count_coverage,
    score_chosen,
)
from likeness.evaluate.edit_recipe import EditRecipe
from likeness.evaluate.enrich_plan import Plan, PlanEdit, auto_plan, fix_instruction
from likeness.jobs import start_job
from likeness.store.db import transaction

if TYPE_CHECKING:
    from PIL import Image

    from likeness.curate.ingest import Ingester
    from likeness.engines.base import Engine, GeneratedImage
    from likeness.evaluate.scorer import WorkspaceScorer
    from likeness.metrics import Instruments
    from likeness.workspace import Workspace

JOB_KIND = "enrich"
_SCORE_KEYS = (
    "match",
    "distance",
    "pass",
    "angle",
    "yaw",
    "expression",
    "expression_probability",
    "flags",
)


@dataclass(frozen=True)
class EditOutcome:
    """What became of one edit of the plan."""

    index: int
    edit: PlanEdit
    key: str
    verdict: str
    """`kept`, `rejected` or `failed`."""
    reasons: tuple[str, ...]
    result_sha: str | None
    image_sha: str | None
    score: dict[str, Any] | None
    fresh: bool
    """Made by this run (False: found decided by an earlier one)."""

    def to_json(self) -> dict[str, Any]:
        s = self.score or {}
        return {
            **self.edit.to_json(),
            "key": self.key,
            "verdict": self.verdict,
            "reasons": list(self.reasons),
            "result_sha": self.result_sha,
            "image_sha": self.image_sha,
            "match": s.get("match"),
            "pass": s.get("pass"),
            "measured_angle": s.get("angle"),
            "yaw": s.get("yaw"),
            "measured_expression": s.get("expression"),
            "flags": list(s.get("flags") or []),
            "fresh": self.fresh,
        }


@dataclass(frozen=True)
class EnrichRun:
    job_id: int
    resumed: bool
    """An unfinished job with the same key was taken up again."""
    plan: Plan
    recipe: EditRecipe
    outcomes: tuple[EditOutcome, ...]

    def _count(self, verdict: str) -> int:
        return sum(o.verdict == verdict for o in self.outcomes)

    @property
    def kept(self) -> int:
        return self._count("kept")

    @property
    def rejected(self) -> int:
        return self._count("rejected")

    @property
    def failed(self) -> int:
        return self._count("failed")

    def to_json(self) -> dict[str, Any]:
        return {
            "job": self.job_id,
            "resumed": self.resumed,
            "plan": {k: v for k, v in self.plan.to_json().items() if k != "edits"},
            "recipe": self.recipe.to_dict(),
            "recipe_hash": self.recipe.recipe_hash(),
            "edits_planned": len(self.plan.edits),
            "kept": self.kept,
            "rejected": self.rejected,
            "failed": self.failed,
            "made": sum(o.fresh for o in self.outcomes),
            "edits": [o.to_json() for o in self.outcomes],
        }


EnrichProgress = Callable[[int, int, EditOutcome], None]
"""Called as progress(done, total, outcome) after each edit (found or made)."""


def edit_key(edit: PlanEdit, recipe: EditRecipe) -> str:
    """The identity of one edit: source, asked cell, instruction and edit recipe."""
    blob = json.dumps(
        {
            "source": edit.source,
            "angle": edit.angle,
            "expression": edit.expression,
            "instruction": edit.instruction,
            "recipe": recipe.recipe_hash(),
        },
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()


def judge_edit(score: Mapping[str, Any] | None, edit: PlanEdit, pass_match: float) -> list[str]:
    """The reasons an edit is not kept (empty: kept), as the module docstring says."""
    if score is None or score.get("error"):
        return [f"unreadable: {(score or {}).get('error') or 'not scored'}"]
    reasons = []
    match = score.get("match")
    if not score.get("faces") or match is None:
        reasons.append("identity: no face found")
    elif not score.get("pass") or float(match) < pass_match:
        reasons.append(f"identity: match {float(match):.1f} < {pass_match:g}")
    if edit.angle is not None and score.get("angle") != edit.angle:
        yaw = score.get("yaw")
        turn = f" (yaw {float(yaw):+.0f})" if yaw is not None else ""
        reasons.append(f"angle: {score.get('angle') or 'none'}{turn}, asked {edit.angle}")
    if edit.expression is not None and score.get("expression") != edit.expression:
        reasons.append(f"expression: {score.get('expression') or 'none'}, asked {edit.expression}")
    return reasons


def open_plan(ws: Workspace, key: str, make_plan: Callable[[], Plan]) -> tuple[Plan, bool]:
    """(plan, resumed): the plan stored with the unfinished enrich job ``key``, or a new one.

    An automatic plan depends on what earlier runs kept; reading it back from the job makes a
    killed run resume the very edits it had planned."""
    row = ws.db.execute(
        "SELECT params FROM jobs WHERE kind = ? AND key = ? AND state != 'done'", (JOB_KIND, key)
    ).fetchone()
    if row is not None:
        stored = json.loads(row[0]).get("plan")
        if stored is not None:
            return Plan.from_json(stored), True
    return make_plan(), False


def run_enrich(
    ws: Workspace,
    plan: Plan,
    engine: Engine,
    recipe: EditRecipe,
    scorer: WorkspaceScorer,
    *,
    key: str,
    progress: EnrichProgress | None = None,
) -> EnrichRun:
    """Make, judge and store every edit of ``plan`` not decided yet (see the module doc)."""
    # 1. The job (same key: the unfinished job resumes).
    resumed = (
        ws.db.execute(
            "SELECT 1 FROM jobs WHERE kind = ? AND key = ? AND state != 'done'", (JOB_KIND, key)
        ).fetchone()
        is not None
    )
    job = start_job(
        ws.db,
        JOB_KIND,
        key,
        total=len(plan.edits),
        params={"plan": plan.to_json(), "recipe": recipe.to_dict(), "engine": recipe.engine},
    )
    keys = [edit_key(e, recipe) for e in plan.edits]
    from likeness.curate.ingest import Ingester

    ingester = Ingester(ws, origin="enriched")
    pass_match = scorer.thresholds.pass_match
    outcomes: list[EditOutcome] = []
    # 2. Edits.
    try:
        for index, (edit, k) in enumerate(zip(plan.edits, keys, strict=True)):
            found = enrich_store.get_edits(ws.db, [k]).get(k)
            if found is not None and found.final:
                outcome = _outcome(index, edit, found, fresh=False)
            else:
                outcome = _make(
                    ws, index, edit, k, engine, recipe, scorer, ingester, job.id, pass_match
                )
            outcomes.append(outcome)
            job.set_progress(index + 1, message=f"{edit.cell}: {outcome.verdict}")
            if progress:
                progress(index + 1, len(plan.edits), outcome)
    except BaseException as exc:
        job.fail(f"{type(exc).__name__}: {exc}")
        raise
    # 3. Done.
    run = EnrichRun(job.id, resumed, plan, recipe, tuple(outcomes))
    job.finish(message=f"{run.kept} kept, {run.rejected} rejected, {run.failed} failed")
    return run


def _make(
    ws: Workspace,
    index: int,
    edit: PlanEdit,
    key: str,
    engine: Engine,
    recipe: EditRecipe,
    scorer: WorkspaceScorer,
    ingester: Ingester,
    job_id: int,
    pass_match: float,
) -> EditOutcome:
    row = enrich_store.EditRow(
        key=key,
        job_id=job_id,
        source_sha=edit.source,
        angle=edit.angle,
        expression=edit.expression,
        instruction=edit.instruction,
        engine=recipe.engine,
        model=recipe.model,
        seed=None,
        verdict="failed",
        reasons=(),
        result_sha=None,
        image_sha=None,
        score=None,
        provenance={},
    )
    # a. The edit.
    try:
        source = _source_image(ws, edit.source, recipe.max_side)
    except Exception as exc:  # a blob gone missing or unreadable fails this edit only
        return _record(ws, index, edit, _replace(row, reasons=(f"source: {_line(exc)}",)))
    try:
        made = engine.edit(source, edit.instruction)
    except (EngineCannotHonour, NotImplementedError):
        raise  # about the recipe or the engine, not this edit: stop the run
    except Exception as exc:  # an engine failure (out of memory, a server error) fails this edit
        return _record(ws, index, edit, _replace(row, reasons=(f"engine: {_line(exc)}",)))
    # b. Stored as a blob (kept or not: the report shows rejected edits too), then scored.
    result_sha = ws.blobs.put_bytes(made.png)
    score = scorer.score([result_sha])[0].to_json()
    # c. The verdict.
    reasons = judge_edit(score, edit, pass_match)
    stored = ws.db.execute("SELECT origin FROM images WHERE sha256 = ?", (result_sha,)).fetchone()
    if stored is not None:
        what = "the source itself" if result_sha == edit.source else f"a stored {stored[0]} image"
        reasons.append(f"unchanged: the edit returned {what} ({result_sha[:12]})")
    provenance = _provenance(edit, recipe, made, score, job_id)
    row = _replace(
        row,
        seed=made.seed,
        verdict="rejected" if reasons else "kept",
        reasons=tuple(reasons),
        result_sha=result_sha,
        score=score,
        provenance=provenance,
    )
    if reasons:
        return _record(ws, index, edit, row)
    # d. Kept: the image and its row in one transaction.
    result = ingester.ingest_bytes(
        made.png,
        name=f"enrich-{edit.source[:8]}-{edit.angle or 'any'}-{edit.expression or 'any'}.png",
        on_stored=lambda sha: enrich_store.put_edit(ws.db, _replace(row, image_sha=sha)),
    )
    if result.status in ("stored", "near_duplicate"):
        return _outcome(index, edit, _replace(row, image_sha=result.sha256), fresh=True)
    why = result.reason or result.status
    return _record(
        ws, index, edit, _replace(row, verdict="rejected", reasons=(f"not stored: {why}",))
    )


def _record(ws: Workspace, index: int, edit: PlanEdit, row: enrich_store.EditRow) -> EditOutcome:
    with transaction(ws.db):
        enrich_store.put_edit(ws.db, row)
    return _outcome(index, edit, row, fresh=True)


def _outcome(index: int, edit: PlanEdit, row: enrich_store.EditRow, *, fresh: bool) -> EditOutcome:
    return EditOutcome(
        index=index,
        edit=edit,
        key=row.key,
        verdict=row.verdict,
        reasons=row.reasons,
        result_sha=row.result_sha,
        image_sha=row.image_sha,
        score=row.score,
        fresh=fresh,
    )


def _replace(row: enrich_store.EditRow, **changes: Any) -> enrich_store.EditRow:
    from dataclasses import replace

    return replace(row, **changes)


def _source_image(ws: Workspace, sha: str, max_side: int) -> Image.Image:
    """The source upright, 8-bit RGB, shrunk so its long side is at most ``max_side``."""
    from PIL import Image

    from likeness.imaging import open_image

    image = open_image(ws.blobs.path(sha), max_pixels=ws.settings.ingest.max_pixels).image
    image = image.convert("RGB")
    if max(image.size) > max_side:
        image.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    return image


def _provenance(
    edit: PlanEdit,
    recipe: EditRecipe,
    made: GeneratedImage,
    score: Mapping[str, Any],
    job_id: int,
) -> dict[str, Any]:
    engine = made.provenance.get("engine") if isinstance(made.provenance, Mapping) else None
    return {
        "schema": 1,
        "kind": "enrich",
        "source_sha256": edit.source,
        "instruction": edit.instruction,
        "cell": {"angle": edit.angle, "expression": edit.expression},
        "recipe": recipe.to_dict(),
        "recipe_hash": recipe.recipe_hash(),
        "model": recipe.model,
        "seed": made.seed,
        "engine": engine,
        "score": {k: score.get(k) for k in _SCORE_KEYS},
        "edit": dict(made.provenance),
        "job_id": job_id,
    }


def _line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


# -- the images a plan starts from ----------------------------------------------------------
def source_candidates(ws: Workspace, shas: Sequence[str]) -> list[str]:
    """The chosen images an edit may start from: stored, not excluded, not enriched (an edit
    of an edit compounds the drift)."""
    keep = []
    for sha in dict.fromkeys(shas):
        row = ws.db.execute(
            "SELECT origin, excluded FROM images WHERE sha256 = ?", (sha,)
        ).fetchone()
        if row is not None and row["origin"] != "enriched" and not row["excluded"]:
            keep.append(sha)
    return keep


def coverage_with_enrichments(
    ws: Workspace,
    shas: Sequence[str],
    grid: Grid,
    thin_below: int,
    *,
    instruments: Instruments | None = None,
    workers: int | None = None,
) -> tuple[Coverage, list[dict[str, Any]]]:
    """Coverage of the chosen images together with what enrichment kept from them, and the
    score dicts of the chosen images (their own, for choosing sources)."""
    kept = enrich_store.kept_from_sources(ws.db, list(shas))
    everything = list(dict.fromkeys([*shas, *kept]))
    scores = score_chosen(ws, everything, instruments=instruments, workers=workers)
    chosen = set(shas)
    return count_coverage(scores, grid, thin_below), [s for s in scores if s["sha256"] in chosen]


def plan_for(
    ws: Workspace,
    chosen: ImageChoice,
    recipe: EditRecipe | None,
    *,
    thin_below: int,
    per_source: int,
    instruments: Instruments | None = None,
    workers: int | None = None,
) -> Plan:
    """The automatic plan for the chosen images: coverage counts them together with what
    enrichment already kept from them, sources are the chosen images that are not enriched,
    and an edit this recipe already made (kept or rejected) is not asked for again."""
    coverage, scores = coverage_with_enrichments(
        ws, chosen.shas, card_grid(), thin_below, instruments=instruments, workers=workers
    )
    candidates = set(source_candidates(ws, chosen.shas))
    sources = [s for s in scores if s["sha256"] in candidates]

    def tried(edit: PlanEdit) -> bool:
        assert recipe is not None
        key = edit_key(edit, recipe)
        row = enrich_store.get_edits(ws.db, [key]).get(key)
        return row is not None and row.final

    return auto_plan(
        coverage,
        sources,
        per_source=per_source,
        selection=chosen.label,
        tried=tried if recipe is not None else None,
    )


def corrections_plan(ws: Workspace) -> Plan:
    """One fix per image rejected in review whose note or tags say what to change: the
    rejected image is the source, the instruction comes from :func:`fix_instruction`, and
    neither angle nor expression is asked (only identity and novelty are judged; edit the
    plan to ask for a cell). Kept fixes become `correction` edit pairs."""
    from likeness.review.decisions import reviews_with

    edits = []
    unfilled = []
    for review in reviews_with(ws.db, "rejected"):
        instruction = fix_instruction(review.note, review.tags)
        if instruction is None:
            unfilled.append(f"{review.image_sha[:12]} (no note, no fixable tag)")
            continue
        what = ", ".join(review.tags) or "no tags"
        edits.append(
            PlanEdit(
                source=review.image_sha,
                angle=None,
                expression=None,
                instruction=instruction,
                note=f"rejected in review by {review.reviewer} ({what})",
            )
        )
    return Plan(
        edits=tuple(edits),
        selection="review corrections",
        origin="corrections",
        unfilled=tuple(unfilled),
    )
