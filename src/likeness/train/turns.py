"""The loop turns: a new dataset version is trained, its best checkpoint goes into the
recipe, the model card runs with it, and each turn's numbers stand beside the turn before.

`likeness loop --train-recipe FILE` (or ``[loop] train_recipe``) calls
:func:`loop_training` before it generates candidates:

1. the dataset is the train recipe's, at its **latest** version (a person makes a version from
   the accepted images with `likeness review to-dataset NAME`);
2. a version with no LoRA is trained (:func:`~likeness.train.run.train_lora`, judged as the
   recipe says, resumable); a version with one uses it: the best checkpoint of its latest run,
   else that run's final LoRA, else the latest LoRA recorded for it (`likeness lora add`);
3. the generation recipe (``recipe.toml``) gets that LoRA in place of the LoRA of an earlier
   version of the same dataset (keeping its strength), or first at strength 0.7, and is
   written back: the next loop turn generates with it;
4. the model card runs with it, labelled ``loop-NAME-vN-<recipe hash>`` (resumed if
   interrupted, loaded if done; a recipe changed by hand gets a card of its own);
5. every version of the dataset with such a card is one *turn* (its latest card): its
   first-try rate, mean match and identity pass rate, and the change from the turn before.

The turns live in the database as the cards and LoRAs they are: nothing is stored twice.
Example::

    training = loop_training(ws, TrainRecipe.from_toml_file("lora.toml"), current_recipe(ws),
                             engine=lambda: engine, scorer=lambda: WorkspaceScorer(ws))
    [t.to_json() for t in training.turns]
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from likeness.engines.base import Engine, sha256_file
from likeness.evaluate.card import CardError, CardProgress, CardResult, load_card, run_card
from likeness.evaluate.card_spec import CardSpec, load_card_spec
from likeness.recipes import LoraSpec, Recipe
from likeness.store.datasets import DatasetError, DatasetVersion, get_version, list_versions
from likeness.store.loras import list_loras
from likeness.train import store
from likeness.train.recipe import TrainRecipe
from likeness.train.run import TrainResult, train_lora

if TYPE_CHECKING:
    from likeness.engines.base import ProgressCallback
    from likeness.evaluate.loop import LoopStatus
    from likeness.evaluate.scorer import WorkspaceScorer
    from likeness.workspace import Workspace

CARD_LABEL = "loop-{name}-v{version}-{recipe}"
LORA_STRENGTH = 0.7
"""Strength of a LoRA the recipe did not have yet: the working recipe's (FIELD_NOTES)."""
Notify = Callable[[str], None]


class LoopTrainingError(ValueError):
    """The loop cannot train or card as set up; one line naming the file or field and the fix."""


@dataclass(frozen=True)
class TurnNumbers:
    """One turn: a dataset version, the LoRA the card ran with and the card's numbers."""

    dataset: str
    lora: str | None
    lora_sha256: str | None
    card: str
    shots: int
    first_try_rate: float
    mean_match: float | None
    pass_rate: float
    """Share of first-try card images whose identity passes."""
    complete: bool
    change: dict[str, float | None] | None = None
    """Each number minus the turn before's (None for the first turn)."""

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class LoopTraining:
    """What the training half of the loop did in this call, and every turn so far."""

    dataset: str
    trained: TrainResult | None
    """The run trained (or resumed) by this call; None when the version had a LoRA."""
    lora: str
    recipe: Recipe
    """The generation recipe with the version's LoRA."""
    recipe_written: Path | None
    """Where the changed recipe was written (None: it already had that LoRA)."""
    card: CardResult
    turns: tuple[TurnNumbers, ...]

    def to_json(self) -> dict[str, Any]:
        trained = None
        if self.trained is not None:
            best = self.trained.best
            trained = {
                "run_id": self.trained.run_id,
                "steps": self.trained.steps,
                "state": self.trained.state,
                "already_trained": self.trained.already_trained,
                "best_step": best["step"] if best else None,
                "best_metrics": best["metrics"] if best else None,
            }
        return {
            "dataset": self.dataset,
            "trained": trained,
            "lora": self.lora,
            "recipe_written": str(self.recipe_written) if self.recipe_written else None,
            "card": self.card.summary(),
            "turns": [t.to_json() for t in self.turns],
        }


def loop_training(
    ws: Workspace,
    train_recipe: TrainRecipe,
    recipe: Recipe,
    engine: Callable[[], Engine],
    scorer: Callable[[], WorkspaceScorer],
    *,
    recipe_path: Path | None = None,
    spec: CardSpec | None = None,
    tries: int | None = None,
    train_options: Mapping[str, Any] | None = None,
    notify: Notify | None = None,
    card_progress: CardProgress | None = None,
    engine_progress: ProgressCallback | None = None,
) -> LoopTraining:
    """Steps 1-5 of the module docstring. ``engine`` and ``scorer`` are factories: a card
    already complete loads no model. ``train_options`` go to ``train_lora`` (device, hooks,
    notify...). ``recipe_path`` is where the recipe with the new LoRA is written."""
    say = notify or (lambda _line: None)
    if recipe.family != train_recipe.family:
        raise LoopTrainingError(
            f"family: the recipe generates {recipe.family} and the train recipe trains "
            f"{train_recipe.family}; a LoRA only fits its own family"
        )
    # 1. The latest version of the dataset.
    try:
        version = get_version(ws.db, train_recipe.dataset_name)
    except DatasetError as exc:
        raise LoopTrainingError(str(exc)) from None
    # 2. Its LoRA, trained now when it has none.
    trained = None
    lora = version_lora(ws, version)
    if lora is None:
        say(f"{version.ref} has no LoRA: training it")
        trained = train_lora(
            ws, train_recipe.with_overrides({"dataset": version.ref}), **(train_options or {})
        )
        lora = version_lora(ws, version)
        if lora is None:
            raise LoopTrainingError(f"training {version.ref} left no LoRA file")
    # 3. The recipe with it, written back when it changed.
    updated = with_lora(ws, recipe, lora, train_recipe.dataset_name)
    written = None
    if updated.recipe_hash() != recipe.recipe_hash() and recipe_path is not None:
        updated.write_toml(recipe_path)
        written = recipe_path
        say(f"{recipe_path} now generates with {Path(lora).name}")
    # 4. The card with it.
    label = CARD_LABEL.format(
        name=version.name, version=version.version, recipe=updated.recipe_hash()[:8]
    )
    card = _card(ws, updated, engine, scorer, label, spec, tries, card_progress, engine_progress)
    # 5. Every turn so far.
    return LoopTraining(
        version.ref, trained, lora, updated, written, card, tuple(turns(ws, version.name))
    )


def version_lora(ws: Workspace, version: DatasetVersion) -> str | None:
    """The LoRA file a dataset version is carded with, or None when it has none yet: the best
    checkpoint of its latest finished run, else that run's final LoRA, else the latest LoRA
    recorded for it from elsewhere. A run that has not finished (killed, diverged) does not
    count: training it again resumes it."""
    for run in store.list_runs(ws.db, dataset_version_id=version.id):  # newest first
        if run.state != "done":
            continue
        if run.best_checkpoint is not None:
            best = store.get_checkpoint(ws.db, run.best_checkpoint)
            if best is not None and Path(best.path).is_file():
                return best.path
        if run.final_lora and Path(run.final_lora).is_file():
            return run.final_lora
    recorded = list_loras(ws.db, dataset=version.name, dataset_version=version.version)
    for row in reversed(recorded):
        if row.source == "added" and Path(row.path).is_file():
            return row.path
    return None


def with_lora(ws: Workspace, recipe: Recipe, lora: str, dataset: str) -> Recipe:
    """``recipe`` with ``lora`` replacing the LoRA of any version of ``dataset`` (its strength
    kept), or added first at :data:`LORA_STRENGTH`."""
    ours = {row.sha256 for row in list_loras(ws.db, dataset=dataset)}
    loras: list[LoraSpec] = []
    placed = False
    for spec in recipe.loras:
        path = Path(spec.path).expanduser()
        if path.is_file() and sha256_file(path) in ours:
            if not placed:
                loras.append(LoraSpec(lora, spec.strength))
                placed = True
            continue
        loras.append(spec)
    if not placed:
        loras.insert(0, LoraSpec(lora, LORA_STRENGTH))
    return recipe.with_overrides(
        {"loras": [{"path": s.path, "strength": s.strength} for s in loras]}
    )


def _card(
    ws: Workspace,
    recipe: Recipe,
    engine: Callable[[], Engine],
    scorer: Callable[[], WorkspaceScorer],
    label: str,
    spec: CardSpec | None,
    tries: int | None,
    progress: CardProgress | None,
    engine_progress: ProgressCallback | None,
) -> CardResult:
    from likeness.evaluate import store as evaluate_store

    existing = evaluate_store.get_card(ws.db, label)
    if existing is not None and existing.recipe_hash == recipe.recipe_hash():
        done = load_card(ws, label)
        if done.complete:
            return done
    try:
        return run_card(
            ws,
            spec or load_card_spec(),
            recipe,
            engine(),
            scorer(),
            label=label,
            tries=tries or ws.settings.card.tries,
            progress=progress,
            engine_progress=engine_progress,
        )
    except CardError as exc:  # the same recipe with another spec or --tries
        raise LoopTrainingError(str(exc)) from None


def turns(ws: Workspace, dataset: str) -> list[TurnNumbers]:
    """Every version of ``dataset`` carded by the loop, oldest first, each against the one
    before."""
    from likeness.evaluate import store as evaluate_store

    cards = evaluate_store.list_cards(ws.db)  # oldest first
    found: list[TurnNumbers] = []
    for version in (v for v in list_versions(ws.db) if v.name == dataset):
        prefix = CARD_LABEL.format(name=dataset, version=version.version, recipe="")
        labels = [c.label for c in cards if c.label.startswith(prefix)]
        if not labels:
            continue
        label = labels[-1]
        card = load_card(ws, label)
        firsts = [s.attempts[0].score for s in card.shots if s.attempts]
        lora = _card_lora(ws, label, dataset)
        numbers = TurnNumbers(
            dataset=version.ref,
            lora=lora.name if lora else None,
            lora_sha256=lora.sha256 if lora else None,
            card=label,
            shots=len(card.shots),
            first_try_rate=round(card.first_try_rate, 4),
            mean_match=None if card.mean_match is None else round(card.mean_match, 3),
            pass_rate=round(sum(bool((s or {}).get("pass")) for s in firsts) / len(card.shots), 4)
            if card.shots
            else 0.0,
            complete=card.complete,
        )
        if found:
            before = found[-1]
            numbers = TurnNumbers(
                **{
                    **numbers.__dict__,
                    "change": {
                        key: _diff(getattr(numbers, key), getattr(before, key))
                        for key in ("first_try_rate", "mean_match", "pass_rate")
                    },
                }
            )
        found.append(numbers)
    return found


def adjust_status(status: LoopStatus, train_recipe: Path | None, dataset: str | None) -> LoopStatus:
    """The loop's status once it can train: a turn whose review is done waits for the next
    dataset version (the next `likeness loop` trains it), not for training by hand."""
    import dataclasses

    if train_recipe is None or status.waiting_for != "training" or dataset is None:
        return status
    return dataclasses.replace(
        status,
        waiting_for="dataset",
        next_step=(
            f"turn {status.turn}: review done. Make the next version of {dataset} from the "
            f"accepted images (`likeness review to-dataset {dataset}`); the next `likeness "
            f"loop` trains it with {train_recipe}, runs the model card with its best "
            "checkpoint and starts the next turn"
        ),
    )


def _card_lora(ws: Workspace, label: str, dataset: str) -> Any:
    """The LoRA of ``dataset`` the card ran with, read from the card's recipe (engines that
    cannot hash a LoRA leave the card's own LoRA hashes empty)."""
    from likeness.evaluate import store as evaluate_store

    card = evaluate_store.get_card(ws.db, label)
    ours = {row.sha256: row for row in list_loras(ws.db, dataset=dataset)}
    for spec in Recipe.from_dict(card.recipe).loras if card else ():
        path = Path(spec.path).expanduser()
        if path.is_file() and sha256_file(path) in ours:
            return ours[sha256_file(path)]
    return None


def _diff(now: float | None, before: float | None) -> float | None:
    return None if now is None or before is None else round(now - before, 4)


__all__ = [
    "LoopTraining",
    "LoopTrainingError",
    "TurnNumbers",
    "adjust_status",
    "loop_training",
    "turns",
    "version_lora",
    "with_lora",
]
