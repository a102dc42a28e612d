"""A train recipe run on a hosted trainer: `likeness train RECIPE --engine replicate|fal`.

The recipe is mapped onto :class:`~likeness.engines.hosted.training.HostedTrainingRequest`
(:func:`hosted_request`) and run as the hosted path runs it: a job that follows the training
it started (resumed by training id after a kill, never paid twice). Then, like a local run:

1. the trained LoRA (and any checkpoint files the trainer hands back) is recorded in the LoRA
   list with its lineage (source ``trained``, the dataset version, the training run);
2. a training run row holds its checkpoints, so the report and `likeness lora show` read it
   as they read a local run;
3. the checkpoints are judged by likeness (:mod:`likeness.train.judge`). With a local FLUX
   base model in the recipe's ``model``, each checkpoint file is loaded into the diffusers
   engine on it. Without one, the probes run on the provider's own FLUX LoRA model (Replicate
   ``black-forest-labs/flux-dev-lora`` with the trained version, fal ``fal-ai/flux-lora``
   with the file uploaded), counted against the budget like any hosted image; Replicate can
   only run the final LoRA that way (it reaches a LoRA by URL or model version), so
   intermediate files from its archive are left unjudged with a note.

Only fields a hosted trainer takes may differ from the recipe defaults: Replicate's
``ostris/flux-dev-lora-trainer`` takes rank, learning_rate, steps, resolution and batch; fal's
``fal-ai/flux-lora-fast-training`` takes steps only (its rank, learning rate, resolution and
batch are its own). Anything else set away from its default is refused before any request,
naming the field.

Example::

    result = train_hosted_recipe(ws, TrainRecipe.from_toml_file("mara.toml"), "replicate",
                                 destination="me/mara-flux")
    result.best["metrics"]["match"]
"""

from __future__ import annotations

import dataclasses
import hashlib
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from likeness.engines.base import Engine, EngineCannotHonour, EngineError
from likeness.engines.hosted.training import (
    JOB_KIND,
    TRAINERS,
    HostedTrainingRequest,
    HostedTrainingResult,
    TrainingProgress,
)
from likeness.store.datasets import DatasetError, resolve, version_sha256
from likeness.train import store
from likeness.train.judge import CheckpointJudge, JudgeError
from likeness.train.recipe import TrainRecipe
from likeness.train.run import TrainError, TrainResult, run_result

if TYPE_CHECKING:
    from likeness.store.datasets import DatasetVersion
    from likeness.workspace import Workspace

Notify = Callable[[str], None]
MAPPED = {
    "replicate": ("rank", "learning_rate", "steps", "resolution", "batch"),
    "fal": ("steps",),
}
"""Recipe fields each provider's trainer takes."""
FREE = ("model", "family", "dataset", "name", "judge", "sample_prompts")
"""Fields that are not training settings (``model`` names a local base for judging)."""
GENERATORS = {"replicate": "black-forest-labs/flux-dev-lora", "fal": "fal-ai/flux-lora"}


def hosted_request(
    recipe: TrainRecipe,
    provider: str,
    *,
    destination: str = "",
    create_destination: bool = False,
) -> HostedTrainingRequest:
    """The hosted request for ``recipe``; :class:`TrainError` names the first field the
    provider's trainer cannot honour."""
    if provider not in TRAINERS:
        raise TrainError(f"engine: {provider!r} is not one of {', '.join(TRAINERS)}")
    trainer = TRAINERS[provider]
    if recipe.family != "flux":
        raise TrainError(
            f"family: {recipe.family!r}: {trainer} trains FLUX LoRAs; set family = 'flux' or "
            "train on this machine (omit --engine)"
        )
    if not recipe.dataset.strip():
        raise TrainError("dataset: is empty; set a dataset version, e.g. 'mara@v1'")
    if not recipe.steps:
        raise TrainError(
            f"epochs: {recipe.epochs}: {trainer} counts steps; set steps instead of epochs"
        )
    defaults = TrainRecipe()
    mapped = MAPPED[provider]
    for field in dataclasses.fields(TrainRecipe):
        name = field.name
        if name in FREE or name in mapped:
            continue
        value = getattr(recipe, name)
        if value != getattr(defaults, name):
            raise TrainError(
                f"{name}: {_plain(value)!r} cannot be honoured by {trainer} (it takes "
                f"{', '.join(mapped)}); leave it at its default ({_plain(getattr(defaults, name))!r})"
                " or train on this machine"
            )
    values: dict[str, Any] = {}
    if provider == "replicate":
        values = {
            "rank": recipe.rank,
            "learning_rate": recipe.learning_rate,
            "resolution": (recipe.resolution,),
            "batch": recipe.batch,
        }
    else:
        for name in ("rank", "learning_rate", "resolution", "batch"):
            if getattr(recipe, name) != getattr(defaults, name):
                raise TrainError(
                    f"{name}: {getattr(recipe, name)!r} is not an input of {trainer} (it takes "
                    "steps only); leave it at its default or use --engine replicate"
                )
    return HostedTrainingRequest(
        dataset=recipe.dataset,
        provider=provider,
        destination=destination,
        create_destination=create_destination,
        steps=recipe.steps,
        **values,
    )


def train_hosted_recipe(
    ws: Workspace,
    recipe: TrainRecipe,
    provider: str,
    *,
    destination: str = "",
    create_destination: bool = False,
    max_cost: float | None = None,
    progress: TrainingProgress | None = None,
    notify: Notify | None = None,
    probe_engine: Engine | None = None,
    instruments: Any = None,
    **options: Any,
) -> TrainResult:
    """Train ``recipe`` on ``provider`` (see the module docstring); ``options`` go to the
    :class:`~likeness.engines.hosted.training.HostedTrainer` and the probes' hosted engine
    (``token``, ``http``, ``sleep``; ``poll_policy`` to the trainer)."""
    from likeness.engines.hosted.training import HostedTrainer

    say = notify or (lambda _line: None)
    began = time.perf_counter()
    # 1. Refuse what cannot be honoured, before any request.
    request = hosted_request(
        recipe, provider, destination=destination, create_destination=create_destination
    )
    try:
        version = resolve(ws.db, recipe.dataset)
    except DatasetError as exc:
        raise TrainError(str(exc)) from None
    judge = _judge(ws, recipe, version, instruments, say)
    warnings: list[str] = []
    local = _local_base(recipe)
    if judge is not None:
        if not judge.references:
            warnings.append(f"no source photos in {version.ref}: checkpoints are not judged")
            judge = None
        elif probe_engine is None and local is None:
            _check_hosted_probes(judge, provider)
    # 2. The hosted job (it follows a training it already started).
    trainer_options = {k: v for k, v in options.items() if k in ("token", "http", "sleep",
                                                                   "poll_policy")}  # fmt: skip
    with HostedTrainer(ws, provider, max_cost=max_cost, **trainer_options) as trainer:
        result = trainer.train(request, progress)
    # 3. The run row, the checkpoints and the LoRA list.
    run = _record_run(ws, recipe, provider, version, result)
    # 4. Judge what is not judged yet.
    if judge is not None:
        engine = probe_engine
        owned = None
        if engine is None:
            engine = owned = _probe_engine(ws, provider, local, max_cost, options)
        try:
            for checkpoint in judge.pending(run.id):
                _judge_one(judge, checkpoint, engine, provider, local, probe_engine, result,
                           recipe, warnings, say)  # fmt: skip
        finally:
            if owned is not None:
                owned.release()
                owned.close()
    finished = store.get_run(ws.db, run.id)
    assert finished is not None
    for line in warnings:
        say(f"warning: {line}")
    return run_result(
        ws, finished, warnings, seconds=time.perf_counter() - began, already_trained=result.reused
    )


def _judge(
    ws: Workspace, recipe: TrainRecipe, version: DatasetVersion, instruments: Any, say: Notify
) -> CheckpointJudge | None:
    if not recipe.judge.enabled:
        return None
    try:
        return CheckpointJudge(ws, recipe, version, instruments=instruments, notify=say)
    except JudgeError as exc:
        raise TrainError(str(exc)) from None


def _local_base(recipe: TrainRecipe) -> str | None:
    """The recipe's ``model`` when it is a local FLUX base the diffusers engine loads."""
    if not recipe.model.strip():
        return None
    from likeness.engines.diffusers.loading import resolve_model

    try:
        resolve_model(recipe.model, "flux")
    except EngineCannotHonour as exc:
        raise TrainError(
            f"{exc}; with --engine, model names a local FLUX base to judge checkpoints on "
            "(leave it empty to judge on the provider's FLUX LoRA model)"
        ) from None
    return recipe.model


def _check_hosted_probes(judge: CheckpointJudge, provider: str) -> None:
    """The probes must run on the provider's model: refuse sizes or steps it cannot take."""
    from likeness.engines.hosted.models import check_recipe

    plan = judge.plans(
        "owner/lora", {"engine": provider, "model": GENERATORS[provider], "loras": []}
    )[0]
    try:
        check_recipe(provider, plan.recipe)
    except EngineCannotHonour as exc:
        raise TrainError(
            f"judge.{exc.field}: {exc.value!r} {exc.reason}; or set [judge] enabled = false"
        ) from None


def _record_run(
    ws: Workspace,
    recipe: TrainRecipe,
    provider: str,
    version: DatasetVersion,
    result: HostedTrainingResult,
) -> store.TrainRun:
    """The run row of the hosted job (found again on a rerun), its checkpoints and LoRAs."""
    assert result.job_id is not None
    run = store.find_run(ws.db, result.job_id)
    if run is None:
        run = store.create_run(
            ws.db,
            job_id=result.job_id,
            recipe_hash=hashlib.sha256(
                f"{JOB_KIND}:{provider}:{recipe.recipe_hash()}".encode()
            ).hexdigest(),
            recipe=recipe.to_dict(),
            name=recipe.output_name,
            family="flux",
            base_model=f"{provider}:{result.lineage.get('trainer') or TRAINERS[provider]}",
            base_model_sha256=None,
            dataset=version.ref,
            dataset_version_id=version.id,
            dataset_sha256=version_sha256(version),
            skipped=(),
            output_dir=str(result.lora_path.parent),
            total_steps=recipe.steps,
        )
    files = [(c.step, c.path, c.sha256) for c in result.checkpoints if (c.step or 0) < recipe.steps]
    files.append((recipe.steps, result.lora_path, result.sha256))
    for step, path, sha in files:
        lora_id = _record_lora(ws, recipe, provider, version, run.id, step or 0, path, sha)
        store.record_checkpoint(ws.db, run_id=run.id, step=step or 0, path=str(path),
                                sha256=sha, loss=None, losses=(), lora_id=lora_id)  # fmt: skip
    store.finish_run(ws.db, run.id, "done", final_lora=str(result.lora_path))
    finished = store.get_run(ws.db, run.id)
    assert finished is not None
    return finished


def _record_lora(
    ws: Workspace,
    recipe: TrainRecipe,
    provider: str,
    version: DatasetVersion,
    run_id: int,
    step: int,
    path: Path,
    sha: str,
) -> int:
    from likeness.store.loras import record_lora
    from likeness.train.lora_files import LoraFileError, inspect_lora

    try:
        info = inspect_lora(path)
        rank, alpha, metadata = info.rank, info.alpha, info.metadata
    except LoraFileError:
        rank, alpha, metadata = recipe.rank, recipe.alpha, {}
    return record_lora(
        ws.db, path=str(path), sha256=sha, name=path.stem, family="flux",
        base_model=f"{provider}:{TRAINERS[provider]}", base_model_sha256=None, rank=rank,
        alpha=alpha, steps=step, dataset=version.name, dataset_version=version.version,
        source="trained", train_run=run_id, metadata=metadata,
    )  # fmt: skip


def _probe_engine(
    ws: Workspace, provider: str, local: str | None, max_cost: float | None, options: Any
) -> Any:
    if local is not None:
        from likeness.engines.diffusers import DiffusersEngine

        return DiffusersEngine()
    from likeness.engines.hosted import HostedEngine

    kwargs = {k: v for k, v in options.items() if k in ("token", "http", "sleep")}
    return HostedEngine(provider, ws.settings.hosted, max_cost=max_cost, **kwargs)


def _judge_one(
    judge: CheckpointJudge,
    checkpoint: store.Checkpoint,
    engine: Any,
    provider: str,
    local: str | None,
    probe_engine: Engine | None,
    result: HostedTrainingResult,
    recipe: TrainRecipe,
    warnings: list[str],
    say: Notify,
) -> None:
    """Judge one downloaded checkpoint where its file can be reached (see the module doc)."""
    lora, overrides, via = None, None, "file"
    if probe_engine is not None:
        via = probe_engine.name
    elif local is None:
        via = provider
        overrides = {"engine": provider, "model": GENERATORS[provider]}
        if provider == "replicate":
            if checkpoint.step != recipe.steps:
                warnings.append(
                    f"step {checkpoint.step}: not judged (Replicate runs a LoRA only by URL or "
                    "model version; name a local FLUX base in `model` to judge every file)"
                )
                return
            hosted_model = result.lineage.get("hosted_model")
            hosted_version = result.lineage.get("hosted_version")
            lora = f"{hosted_model}/{hosted_version}" if hosted_version else str(hosted_model)
    try:
        judge.judge(checkpoint, engine, via=via, lora=lora, overrides=overrides)
    except (EngineError, EngineCannotHonour) as exc:
        line = f"step {checkpoint.step}: not judged ({exc})"
        warnings.append(line)
        say(f"warning: {line}")


def _plain(value: Any) -> Any:
    from likeness.recipes import _plain as plain

    return plain(value)


__all__ = ["hosted_request", "train_hosted_recipe"]
