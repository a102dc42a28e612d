"""Running the model card: generate each shot, score it, decide, retry up to K times.

A shot passes only when all of these hold (see :func:`judge`):
- identity passes: a face is found, it is within the backend's same-person distance of the
  source photos, and its match is at least ``pass_match`` (workspace setting
  identity.pass_match, 7/10 by default);
- the measured head-angle bucket, expression and body pose are the ones the shot expects
  (a key the shot leaves out is not checked; portraits are not judged on body pose);
- no flag fires (face or quality: blurry, grainy, plastic_skin, clipped, multiple_faces,
  face_cut_off, ...) other than those the spec or the shot allows.

The card reports the **first-try success rate** (shots that passed on attempt 1; the goal is
the workspace setting card.first_try_goal, 0.8), the success within K tries, and per shot
every attempt with its failing reasons. Attempt ``a`` of shot ``i`` uses seed
``base + 1000 * i + a`` (base: the recipe's seed, or 0 when it is -1), so a card is
reproducible and two cards of the same recipe share their images.

Example::

    result = run_card(ws, load_card_spec(), recipe, engine, WorkspaceScorer(ws), label="v2")
    result.first_try_rate, result.meets_goal
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from likeness.engines.base import Engine, EnginePool, ProgressCallback
from likeness.evaluate import store
from likeness.evaluate.card_spec import CardSpec, Shot
from likeness.evaluate.cells import CellRunner, model_hashes
from likeness.jobs import Job, job_key, start_job
from likeness.recipes import Recipe

if TYPE_CHECKING:
    from likeness.evaluate.scorer import WorkspaceScorer
    from likeness.workspace import Workspace

SHOT_SEED_STRIDE = 1000
CardProgress = Callable[[int, int, Shot, "AttemptResult"], None]
"""Called as progress(shot number, shots, shot, attempt) after each attempt."""


class CardError(RuntimeError):
    """A card that cannot be run as asked (e.g. its label is taken); names the fix."""


@dataclass(frozen=True)
class AttemptResult:
    attempt: int
    cell_key: str
    image_sha: str | None
    passed: bool
    reasons: tuple[str, ...]
    score: dict[str, Any] | None

    def to_json(self) -> dict[str, Any]:
        s = self.score or {}
        return {
            "attempt": self.attempt + 1,
            "image_sha": self.image_sha,
            "passed": self.passed,
            "reasons": list(self.reasons),
            "match": s.get("match"),
            "angle": s.get("angle"),
            "expression": s.get("expression"),
            "body_pose": s.get("body_pose"),
            "flags": list(s.get("flags") or []),
        }


@dataclass(frozen=True)
class ShotResult:
    shot: Shot
    attempts: tuple[AttemptResult, ...]

    @property
    def first_try(self) -> bool:
        return bool(self.attempts) and self.attempts[0].passed

    @property
    def passed(self) -> bool:
        return any(a.passed for a in self.attempts)

    @property
    def passed_on(self) -> int | None:
        """1-based attempt that passed, or None."""
        return next((a.attempt + 1 for a in self.attempts if a.passed), None)

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.shot.id,
            "kind": self.shot.kind,
            "expects": self.shot.expects(),
            "first_try": self.first_try,
            "passed": self.passed,
            "passed_on": self.passed_on,
            "attempts": [a.to_json() for a in self.attempts],
        }


@dataclass(frozen=True)
class CardResult:
    label: str
    card_id: int
    recipe_hash: str
    model_sha256: str | None
    lora_sha256s: tuple[str | None, ...]
    spec_name: str
    spec_hash: str
    tries: int
    goal: float
    pass_match: float
    shots: tuple[ShotResult, ...]
    created_at: str = ""

    @property
    def first_try_rate(self) -> float:
        return sum(s.first_try for s in self.shots) / len(self.shots) if self.shots else 0.0

    @property
    def within_rate(self) -> float:
        return sum(s.passed for s in self.shots) / len(self.shots) if self.shots else 0.0

    @property
    def mean_match(self) -> float | None:
        """Mean identity match of the first-try images (no face counts as 0)."""
        values = [
            float((s.attempts[0].score or {}).get("match") or 0.0)
            for s in self.shots
            if s.attempts and s.attempts[0].score is not None
        ]
        return statistics.fmean(values) if values else None

    @property
    def meets_goal(self) -> bool:
        return self.first_try_rate >= self.goal

    @property
    def complete(self) -> bool:
        return all(s.passed or len(s.attempts) >= self.tries for s in self.shots)

    def summary(self) -> dict[str, Any]:
        mean = self.mean_match
        return {
            "label": self.label,
            "shots": len(self.shots),
            "tries": self.tries,
            "first_try_passed": sum(s.first_try for s in self.shots),
            "first_try_rate": round(self.first_try_rate, 4),
            "within_tries_passed": sum(s.passed for s in self.shots),
            "within_tries_rate": round(self.within_rate, 4),
            "goal": self.goal,
            "meets_goal": self.meets_goal,
            "mean_match": None if mean is None else round(mean, 3),
            "pass_match": self.pass_match,
        }

    def to_json(self) -> dict[str, Any]:
        """The `likeness card --json` shape (see :mod:`likeness.cli.card`)."""
        return {
            **self.summary(),
            "card_id": self.card_id,
            "recipe_hash": self.recipe_hash,
            "model_sha256": self.model_sha256,
            "lora_sha256s": list(self.lora_sha256s),
            "spec": self.spec_name,
            "spec_hash": self.spec_hash,
            "created_at": self.created_at,
            "complete": self.complete,
            "per_shot": [s.to_json() for s in self.shots],
        }


# -- verdicts -------------------------------------------------------------------------------
def judge(
    shot: Shot,
    score: Mapping[str, Any] | None,
    *,
    pass_match: float,
    allow_flags: tuple[str, ...] = (),
    error: str | None = None,
) -> tuple[bool, tuple[str, ...]]:
    """(passed, failing reasons) of one scored image for one shot (see the module doc)."""
    if score is None:
        return False, (f"no image: {error or 'generation failed'}",)
    reasons: list[str] = []
    match = score.get("match")
    if not score.get("faces") or match is None:
        reasons.append("identity: no face found")
    elif not score.get("pass") or float(match) < pass_match:
        reasons.append(f"identity: match {float(match):.1f} < {pass_match:g}")
    if shot.angle is not None and score.get("angle") != shot.angle:
        reasons.append(f"angle: {score.get('angle') or 'none'}, expected {shot.angle}")
    if shot.expression is not None and score.get("expression") != shot.expression:
        reasons.append(
            f"expression: {score.get('expression') or 'none'}, expected {shot.expression}"
        )
    if shot.kind == "body" and shot.body_pose is not None:
        pose = score.get("body_pose")
        if pose != shot.body_pose:
            reasons.append(f"body pose: {pose or 'none'}, expected {shot.body_pose}")
    allowed = set(allow_flags) | set(shot.allow_flags)
    reasons += [f"flag: {flag}" for flag in score.get("flags") or () if flag not in allowed]
    return not reasons, tuple(reasons)


def card_seed(recipe: Recipe, shot_index: int, attempt: int) -> int:
    """The seed of attempt ``attempt`` (0-based) of shot number ``shot_index``."""
    base = recipe.seed if recipe.seed >= 0 else 0
    return base + SHOT_SEED_STRIDE * shot_index + attempt


def shot_recipe(
    recipe: Recipe, spec: CardSpec, shot_index: int, attempt: int, *, class_word: str, name: str
) -> Recipe:
    """The recipe of one attempt: the shot's prompt, the card's negative, the attempt's seed."""
    shot = spec.shots[shot_index]
    overrides: dict[str, Any] = {
        "prompt": shot.render(class_word=class_word, name=name, style=spec.style),
        "seed": card_seed(recipe, shot_index, attempt),
    }
    if spec.negative.strip():
        overrides["negative"] = spec.negative
    return recipe.with_overrides(overrides)


# -- running --------------------------------------------------------------------------------
def run_card(
    ws: Workspace,
    spec: CardSpec,
    recipe: Recipe,
    engine: Engine | EnginePool,
    scorer: WorkspaceScorer,
    *,
    label: str,
    tries: int = 3,
    goal: float | None = None,
    pass_match: float | None = None,
    progress: CardProgress | None = None,
    engine_progress: ProgressCallback | None = None,
) -> CardResult:
    """Run (or resume, or just load) the card called ``label``."""
    if tries < 1:
        raise CardError(f"--tries: {tries} must be at least 1")
    goal = ws.settings.card.first_try_goal if goal is None else goal
    pass_match = ws.settings.identity.pass_match if pass_match is None else pass_match
    character = ws.settings.character
    # 1. Every attempt's recipe is the same but for prompt, negative and seed: one check.
    engine.check(shot_recipe(recipe, spec, 0, 0, class_word=character.class_word, name=""))
    # 2. The card row: a label belongs to one recipe + spec + tries.
    run_key = job_key("card", recipe.recipe_hash(), spec.spec_hash(), tries, pass_match)
    card = store.get_card(ws.db, label)
    if card is not None and card.run_key != run_key:
        raise CardError(
            f"card {label!r} was already run with another recipe, spec, --tries or "
            "identity.pass_match "
            f"(recipe {card.recipe_hash[:12]}); pass a new --label"
        )
    if card is None:
        card = store.create_card(
            ws.db,
            label=label,
            run_key=run_key,
            recipe=recipe.to_dict(),
            recipe_hash=recipe.recipe_hash(),
            spec=spec.to_dict(),
            spec_hash=spec.spec_hash(),
            tries=tries,
        )
    job = start_job(
        ws.db, "card", run_key, total=len(spec.shots), params={"label": label, "tries": tries}
    )
    # 3. Shots: attempts already recorded are kept; the rest are generated now.
    runner = CellRunner(
        ws,
        engine,
        scorer,
        name_prefix=f"card-{label}",
        job_id=job.id,
        engine_progress=engine_progress,
    )
    recorded: dict[str, list[store.AttemptRow]] = {}
    for row in store.card_attempts(ws.db, card.id):
        recorded.setdefault(row.shot, []).append(row)
    models_known = card.model_sha256 is not None
    pooled = isinstance(engine, EnginePool)
    try:
        if pooled:  # every shot at once, each judged as its image arrives
            _run_pooled(
                engine,
                runner,
                spec,
                lambda index, attempt: shot_recipe(
                    recipe,
                    spec,
                    index,
                    attempt,
                    class_word=character.class_word,
                    name=character.name,
                ),
                card.id,
                recorded,
                job,
                tries=tries,
                pass_match=pass_match,
                models_known=models_known,
                progress=progress,
            )
        for index, shot in enumerate([] if pooled else spec.shots):
            rows = {r.attempt: r for r in recorded.get(shot.id, [])}
            for attempt in range(tries):
                done = rows.get(attempt)
                if done is not None and done.passed:
                    break
                if done is not None and not _generation_failed(ws, done):
                    continue  # judged on its image: kept
                # Not run yet, or the engine failed (it may work now): run this attempt.
                cell = runner.run(
                    shot_recipe(
                        recipe,
                        spec,
                        index,
                        attempt,
                        class_word=character.class_word,
                        name=character.name,
                    )
                )
                passed, reasons = judge(
                    shot,
                    cell.score,
                    pass_match=pass_match,
                    allow_flags=spec.allow_flags,
                    error=cell.error,
                )
                row = store.AttemptRow(shot.id, attempt, cell.key, passed, reasons)
                store.add_attempt(ws.db, card.id, row)
                rows[attempt] = row
                if not models_known and cell.generation:
                    model_sha, lora_shas = model_hashes(cell.generation)
                    store.set_card_models(ws.db, card.id, model_sha, lora_shas)
                    models_known = True
                if progress:
                    progress(
                        index + 1,
                        len(spec.shots),
                        shot,
                        _attempt(row, cell.image_sha, cell.score),
                    )
                if passed:
                    break
            job.set_progress(index + 1, message=shot.id)
    except BaseException as exc:
        job.fail(f"{type(exc).__name__}: {exc}")
        raise
    # 4. Summary, stored with the card.
    result = load_card(ws, label, goal=goal, pass_match=pass_match)
    store.finish_card(ws.db, card.id, result.summary())
    job.finish(message=f"first try {result.first_try_rate:.0%}")
    return result


def _run_pooled(
    pool: EnginePool,
    runner: CellRunner,
    spec: CardSpec,
    attempt_recipe: Callable[[int, int], Recipe],
    card_id: int,
    recorded: dict[str, list[store.AttemptRow]],
    job: Job,
    *,
    tries: int,
    pass_match: float,
    models_known: bool,
    progress: CardProgress | None,
) -> None:
    """Step 3 on an engine pool: every shot's next attempt is submitted at once; each image
    is stored, scored and judged here as it arrives, and a failed attempt submits the next
    one of its shot (attempts of one shot stay in order, shots run side by side)."""
    rows = [{r.attempt: r for r in recorded.get(shot.id, [])} for shot in spec.shots]
    finished = 0

    def submit_next(index: int, start: int) -> bool:
        for attempt in range(start, tries):
            done = rows[index].get(attempt)
            if done is not None and done.passed:
                return False
            if done is not None and not _generation_failed(runner.ws, done):
                continue
            label = f"{spec.shots[index].id} try {attempt + 1}"
            pool.submit((index, attempt), attempt_recipe(index, attempt), label=label)
            return True
        return False

    for index in range(len(spec.shots)):
        finished += not submit_next(index, 0)
    job.set_progress(finished)
    for arrived in pool.completed():
        index, attempt = arrived.tag  # type: ignore[misc]
        shot = spec.shots[index]
        if arrived.error is None:
            cell = runner.complete(arrived.recipe, arrived.images[0])
        else:
            cell = runner.fail(arrived.recipe, f"generation failed: {arrived.error}")
        passed, reasons = judge(
            shot, cell.score, pass_match=pass_match, allow_flags=spec.allow_flags, error=cell.error
        )
        row = store.AttemptRow(shot.id, attempt, cell.key, passed, reasons)
        store.add_attempt(runner.ws.db, card_id, row)
        rows[index][attempt] = row
        if not models_known and cell.generation:
            store.set_card_models(runner.ws.db, card_id, *model_hashes(cell.generation))
            models_known = True
        if progress:
            progress(index + 1, len(spec.shots), shot, _attempt(row, cell.image_sha, cell.score))
        if passed or not submit_next(index, attempt + 1):
            finished += 1
            job.set_progress(finished, message=shot.id)


def _generation_failed(ws: Workspace, row: store.AttemptRow) -> bool:
    """True when the attempt has no image (the engine failed), so running it again is fair."""
    cell = store.get_cell(ws.db, row.cell_key)
    return cell is None or cell.image_sha is None


def load_card(
    ws: Workspace, label: str, *, goal: float | None = None, pass_match: float | None = None
) -> CardResult:
    """A stored card, rebuilt from its attempts and their cells."""
    card = store.get_card(ws.db, label)
    if card is None:
        known = ", ".join(c.label for c in store.list_cards(ws.db)) or "none yet"
        raise CardError(f"no card labelled {label!r} (cards: {known}); run `likeness card`")
    from likeness.evaluate.card_spec import card_spec_from_dict

    spec = card_spec_from_dict(card.spec, source=f"card {label}")
    rows = store.card_attempts(ws.db, card.id)
    cells = store.get_cells(ws.db, [r.cell_key for r in rows])
    by_shot: dict[str, list[AttemptResult]] = {}
    for row in rows:
        cell = cells.get(row.cell_key)
        by_shot.setdefault(row.shot, []).append(
            _attempt(row, cell.image_sha if cell else None, cell.score if cell else None)
        )
    shots = tuple(
        ShotResult(shot, tuple(sorted(by_shot.get(shot.id, []), key=lambda a: a.attempt)))
        for shot in spec.shots
    )
    summary = card.summary or {}
    return CardResult(
        label=card.label,
        card_id=card.id,
        recipe_hash=card.recipe_hash,
        model_sha256=card.model_sha256,
        lora_sha256s=tuple(card.lora_sha256s),
        spec_name=spec.name,
        spec_hash=card.spec_hash,
        tries=card.tries,
        goal=goal
        if goal is not None
        else float(summary.get("goal", ws.settings.card.first_try_goal)),
        pass_match=pass_match
        if pass_match is not None
        else float(summary.get("pass_match", ws.settings.identity.pass_match)),
        shots=shots,
        created_at=card.created_at,
    )


def _attempt(
    row: store.AttemptRow, image_sha: str | None, score: dict[str, Any] | None
) -> AttemptResult:
    return AttemptResult(row.attempt, row.cell_key, image_sha, row.passed, row.reasons, score)
