"""A training run as a job: ``train_lora(ws, recipe)`` trains, or resumes, one LoRA.

The job (kind ``train``) is keyed by the recipe's hash: killed at any point and started again
with the same recipe, it resumes from the last checkpoint's resume state. The steps:

1. check the recipe, the dataset version and the base model (one line naming the field);
2. the job and its run row; the run folder ``<workspace>/training/run-<id>-<name>/``;
3. ask the workspace's ComfyUI server to free its memory (a silent server is a warning);
4. load the base model, inject the LoRA;
5. fill the cache: latents per (image, VAE, bucket), embeddings per (caption, encoders);
6. optimizer and schedule; the resume state when there is one;
7. train (:class:`~likeness.train.loop.Trainer`), checkpointing as the recipe says; each
   checkpoint is judged by likeness with the trainer's own pipeline when ``[judge]`` is on
   (:mod:`likeness.train.judge`); a resumed run first judges the checkpoint it resumes from
   when a kill came before its judging ended;
8. finish the run (done, diverged or failed) and the job; judge, from their files, any
   checkpoints still unjudged (new judge settings, or a judging failure), and mark the best.

Example::

    with Workspace.open(path) as ws:
        result = train_lora(ws, TrainRecipe.from_toml_file("mara-lora.toml"))
        print(result.final_lora)
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from likeness.engines.base import Engine, EngineCannotHonour
from likeness.engines.diffusers.device import choose_device
from likeness.jobs import job_key, start_job
from likeness.recipes import RecipeError
from likeness.store.datasets import DatasetError, resolve
from likeness.train import store
from likeness.train.cache import TrainCache
from likeness.train.data import DataError, DataOrder, load_edit_items, load_items, make_buckets
from likeness.train.judge import CheckpointJudge, JudgeError
from likeness.train.loop import Diverged, SaveLora, Trainer, TrainHooks
from likeness.train.recipe import QWEN_EDIT, TrainRecipe
from likeness.train.runs import best_dict, checkpoint_dicts
from likeness.train.setup import resolve_base_model
from likeness.workspace import Workspace, check_trigger

JOB_KIND = "train"
Notify = Callable[[str], None]
"""Receives one-line notices (warnings, what the run is doing)."""


class TrainError(RuntimeError):
    """A run cannot start: a missing dataset, model or field; one line says what to change."""


@dataclass(frozen=True)
class TrainResult:
    """What ``likeness train --json`` prints."""

    run_id: int
    job_id: int
    state: str
    resumed_from: int | None
    steps: int
    total_steps: int
    output_dir: str
    final_lora: str | None
    checkpoints: tuple[dict[str, Any], ...]
    cache: dict[str, int]
    skipped: tuple[str, ...]
    warnings: tuple[str, ...]
    seconds: float
    steps_per_s: float | None
    already_trained: bool = False
    """True when a finished run of the same recipe was found and nothing was trained."""
    best: dict[str, Any] | None = None
    """The checkpoint judging ranks first (one of ``checkpoints``), or None."""

    def to_json(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["checkpoints"] = list(self.checkpoints)
        data["skipped"] = list(self.skipped)
        data["warnings"] = list(self.warnings)
        return data


def train_lora(
    ws: Workspace,
    recipe: TrainRecipe,
    *,
    device: str | None = None,
    allow_pickle: bool = False,
    comfy_url: str | None = None,
    hooks: TrainHooks | None = None,
    notify: Notify | None = None,
    save_lora: SaveLora | None = None,
    register_lora: Callable[..., int] | None = None,
    again: bool = False,
    config: str | Path | None = None,
    probe_engine: Engine | None = None,
    instruments: Any = None,
) -> TrainResult:
    """Train (or resume) the LoRA ``recipe`` describes; see the module docstring.

    ``save_lora`` writes a kohya file (default :func:`likeness.train.kohya.save_kohya_lora`);
    ``register_lora`` records it in the LoRA list (default
    :func:`likeness.store.loras.record_lora`). Raises :class:`TrainError` before any work
    when an input is wrong, :class:`~likeness.train.loop.Diverged` on NaN/inf. A recipe
    already trained to the end is reported, not trained again, unless ``again``. ``config``
    is the config folder of a single-file checkpoint that is not a real SDXL/SD1.5.
    ``probe_engine`` renders the judge's probes instead of the trainer's pipeline (a test
    engine); ``instruments`` are the judge's measuring models (loaded once per process).
    """
    say = notify or (lambda _line: None)
    hooks = hooks or TrainHooks()
    began = time.perf_counter()
    # 1. Inputs, refused before any work.
    try:
        recipe.require_inputs()
        version = resolve(ws.db, recipe.dataset)
        source = resolve_base_model(recipe, allow_pickle=allow_pickle)
        buckets = make_buckets(recipe.resolution, recipe.bucket_step, enabled=recipe.aspect_buckets)
        if recipe.family == QWEN_EDIT:
            data = load_edit_items(ws, version, buckets)
        else:
            data = load_items(ws.db, version, buckets)
        if device is not None and device.startswith("cuda:") and device != "cuda:0":
            raise ValueError(
                f"device: {device!r}: train on another GPU with CUDA_VISIBLE_DEVICES and 'cuda'"
            )
        device = choose_device(device)
        if recipe.mixed_precision == "fp16" and device == "cpu":
            raise RecipeError(
                "mixed_precision", "fp16", "needs a GPU; on the CPU use 'bf16' or 'no'"
            )
    except (RecipeError, EngineCannotHonour, DatasetError, DataError, ValueError) as exc:
        raise TrainError(str(exc)) from None
    warnings = list(recipe.warnings())
    trigger_advice = check_trigger(version.trigger) if version.trigger else None
    if trigger_advice:
        warnings.append(trigger_advice)
    if data.skipped:
        warnings.append(
            f"{len(data.skipped)} image(s) of {version.ref} are excluded now (duplicates) and "
            "are left out"
        )
    judge = None
    if recipe.judge.enabled:
        try:
            judge = CheckpointJudge(ws, recipe, version, instruments=instruments, notify=say)
        except JudgeError as exc:
            raise TrainError(str(exc)) from None
        if not judge.references:
            warnings.append(
                f"no source photos in {version.ref} or the workspace: checkpoints are not "
                "judged (add them with `likeness add PHOTOS --origin source`)"
            )
            judge = None
    for line in warnings:
        say(f"warning: {line}")
    order = DataOrder(data.items, recipe.batch, recipe.seed)
    total = recipe.steps or recipe.epochs * math.ceil(
        order.batches_per_epoch / recipe.gradient_accumulation
    )
    if recipe.warmup_steps >= total:
        raise TrainError(
            f"warmup_steps: {recipe.warmup_steps} must be less than the {total} steps of "
            f"{recipe.epochs} epochs; lower it"
        )
    # 2. The job and its run (a finished run of this recipe is the answer, unless again).
    files = _FileJudging(judge, probe_engine, device, allow_pickle, config, say, warnings)
    finished = store.finished_run(ws.db, recipe.recipe_hash())
    if finished is not None and not again:
        files.judge_pending(finished.id)
        return run_result(ws, store.get_run(ws.db, finished.id) or finished, warnings,
                          already_trained=True)  # fmt: skip
    job = start_job(
        ws.db,
        JOB_KIND,
        job_key(JOB_KIND, recipe.recipe_hash()),
        total=total,
        params={"recipe": recipe.to_dict(), "dataset": version.ref},
    )
    run = store.find_run(ws.db, job.id)
    if run is None:
        run = store.create_run(
            ws.db,
            job_id=job.id,
            recipe_hash=recipe.recipe_hash(),
            recipe=recipe.to_dict(),
            name=recipe.output_name,
            family=recipe.family,
            base_model=str(source.path),
            base_model_sha256=(
                store.file_sha256(ws.db, source.path) if source.kind == "single_file" else None
            ),
            dataset=version.ref,
            dataset_version_id=version.id,
            dataset_sha256=data.dataset_sha256,
            skipped=data.skipped,
            output_dir="",
            total_steps=total,
        )
        store.set_output_dir(ws.db, run.id, str(run_folder(ws, run.id, recipe)))
    else:
        store.mark_running(ws.db, run.id)
    run_dir = run_folder(ws, run.id, recipe)
    run_dir.mkdir(parents=True, exist_ok=True)
    try:
        result = _train(
            ws,
            recipe,
            run,
            run_dir,
            total,
            data,
            order,
            version,
            source,
            job,
            device=device,
            comfy_url=comfy_url,
            hooks=hooks,
            say=say,
            save_lora=save_lora,
            register_lora=register_lora,
            warnings=warnings,
            began=began,
            config=config,
            judge=judge,
            probe_engine=probe_engine,
        )
    except Diverged as exc:
        store.finish_run(ws.db, run.id, "diverged", error=str(exc))
        job.fail(str(exc))
        raise
    except Exception as exc:
        store.finish_run(ws.db, run.id, "failed", error=f"{type(exc).__name__}: {exc}")
        job.fail(f"{type(exc).__name__}: {exc}")
        raise
    job.finish(message=f"{result.steps} steps, {result.final_lora}")
    if files.judge_pending(run.id):
        finished_run = store.get_run(ws.db, run.id)
        assert finished_run is not None
        result = dataclasses.replace(
            result,
            checkpoints=tuple(checkpoint_dicts(ws, finished_run)),
            best=best_dict(ws, finished_run),
        )
    return result


def _train(
    ws: Workspace,
    recipe: TrainRecipe,
    run: store.TrainRun,
    run_dir: Path,
    total: int,
    data: Any,
    order: DataOrder,
    version: Any,
    source: Any,
    job: Any,
    *,
    device: str | None,
    comfy_url: str | None,
    hooks: TrainHooks,
    say: Notify,
    save_lora: SaveLora | None,
    register_lora: Callable[..., int] | None,
    warnings: list[str],
    began: float,
    config: str | Path | None,
    judge: CheckpointJudge | None,
    probe_engine: Engine | None,
) -> TrainResult:
    from accelerate import Accelerator

    from likeness.train import state as resume
    from likeness.train.encode import cache_latents, cache_texts
    from likeness.train.loop import step_seed
    from likeness.train.objectives import make_objective
    from likeness.train.optim import build_optimizer, build_scheduler
    from likeness.train.setup import load_train_model

    run_id = run.id
    started_at = datetime.fromisoformat(run.created_at).timestamp()

    # 3. A ComfyUI server on the same GPU holds about 8 GB: ask it to let go.
    if comfy_url:
        line = free_comfyui(comfy_url)
        if line:
            warnings.append(line)
            say(f"warning: {line}")
        else:
            say(f"asked ComfyUI at {comfy_url} to free its memory")
    # 4. The model.
    accelerator = Accelerator(mixed_precision=recipe.mixed_precision, cpu=device == "cpu")
    say(f"loading {recipe.model}")
    model = load_train_model(
        recipe,
        source,
        accelerator.device,
        lora_seed=step_seed(recipe.seed, "lora-init"),
        config=config,
    )
    objective = make_objective(model, recipe)
    say(f"loaded {type(model.pipe).__name__} on {model.device}")
    # 5. The cache.
    cache = TrainCache(ws.root / "cache" / "train")
    vae_hash = store.component_hash(ws.db, recipe.model, ["vae"])
    latents = cache_latents(ws, data, objective, cache, vae_hash, _progress(say))
    text_parts = ["text_encoder", "text_encoder_2", "tokenizer", "tokenizer_2"]
    text_hash = store.component_hash(ws.db, recipe.model, text_parts)
    length = recipe.max_sequence_length if recipe.family == "flux" else 77
    sample_prompts = [
        p.replace("{trigger}", version.trigger).replace("{class_word}", version.class_word)
        for p in (recipe.sample_prompts if recipe.sample_every else ())
    ]
    captions = data.captions()
    if recipe.family == QWEN_EDIT:
        from likeness.train.encode import cache_edit_texts

        edit_parts = ["text_encoder", "tokenizer", "processor"]
        edit_hash = store.component_hash(ws.db, recipe.model, edit_parts)
        train_texts = cache_edit_texts(ws, data, objective, cache, edit_hash, recipe.family)
        texts = {}
        model.offload_text_encoders()
    elif model.text_encoders and "text_encoder" not in model.trained:
        texts = cache_texts(
            [*captions, *sample_prompts], objective, cache, text_hash, recipe.family, length
        )
        train_texts: dict[str, Any] | None = {c: texts[c] for c in captions}
        model.offload_text_encoders()
    else:
        texts = cache_texts(
            [*sample_prompts, ""], objective, cache, text_hash, recipe.family, length
        )
        train_texts = None
    store.set_cache_stats(ws.db, run_id, cache.stats.to_dict())
    say(
        f"cache: {cache.stats.latents_encoded} latents encoded, {cache.stats.latents_cached} "
        f"reused; {cache.stats.texts_encoded} captions encoded, {cache.stats.texts_cached} reused"
    )
    # 6. Optimizer, schedule, accelerate; the resume state.
    groups: dict[str, list[Any]] = {}
    for name, param in model.trainable_parameters():
        groups.setdefault(name.split(".", 1)[0], []).append(param)
    optimizer = build_optimizer(recipe, list(groups.items()))
    accelerator.prepare(*model.trained.values())
    if recipe.mixed_precision == "fp16":
        # accelerate's optimizer wrapper carries fp16's grad scaler; without one it adds only
        # cost (its zero_grad inspects a signature at every step: 1.5% of a tiny step).
        optimizer = accelerator.prepare(optimizer)
    scheduler = build_scheduler(optimizer, recipe, total)
    trainer = Trainer(
        recipe=recipe,
        model=model,
        objective=objective,
        data=data,
        order=order,
        latents=latents,
        texts=train_texts,
        accelerator=accelerator,
        optimizer=optimizer,
        scheduler=scheduler,
        conn=ws.db,
        run_id=run_id,
        run_dir=run_dir,
        total_steps=total,
        save_lora=save_lora or _default_save_lora(),
        metadata=lambda step: lora_metadata(
            recipe,
            version,
            data,
            step,
            base_model_sha256=run.base_model_sha256,
            started_at=started_at,
        ),
        hooks=_with_judge(_with_job(hooks, job), judge, probe_engine, say),
        sample_prompts=sample_prompts,
        sample_texts=[texts[p] for p in sample_prompts] + ([texts[""]] if texts else []),
        register_lora=register_lora or _default_register(),
    )
    saved = resume.load_state(trainer.state_path())
    start = 0
    if saved is not None:
        if saved.recipe_hash != recipe.recipe_hash():
            raise TrainError(
                f"{trainer.state_path()} belongs to another recipe; delete it to start over"
            )
        trainer.restore(saved)
        start = saved.step
        say(f"resuming run {run_id} from step {start} of {total}")
        if judge is not None:  # killed while judging: the weights are that checkpoint's
            live = [c for c in judge.pending(run_id) if c.step == start]
            for checkpoint in live:
                _judge_safely(say, lambda c=checkpoint: judge.judge_live(
                    c, model, probe_engine or _memory_engine()))  # fmt: skip
    # 7. Train.
    trained_from = time.perf_counter()
    if start < total:
        trainer.run(start)
    seconds = time.perf_counter() - trained_from
    # 8. Finish.
    final = trainer.final_path()
    store.finish_run(
        ws.db, run_id, "done", final_lora=str(final), cache_stats=cache.stats.to_dict()
    )
    finished = store.get_run(ws.db, run_id)
    assert finished is not None
    return run_result(
        ws,
        finished,
        warnings,
        resumed_from=start if saved is not None else None,
        seconds=time.perf_counter() - began,
        steps_per_s=(total - start) / seconds if seconds > 0 and total > start else None,
    )


def run_result(
    ws: Workspace,
    run: store.TrainRun,
    warnings: list[str],
    *,
    resumed_from: int | None = None,
    seconds: float = 0.0,
    steps_per_s: float | None = None,
    already_trained: bool = False,
) -> TrainResult:
    """The result of ``run`` as the database records it."""
    return TrainResult(
        run_id=run.id,
        job_id=run.job_id,
        state=run.state,
        resumed_from=resumed_from,
        steps=run.step,
        total_steps=run.total_steps,
        output_dir=run.output_dir,
        final_lora=run.final_lora,
        checkpoints=tuple(checkpoint_dicts(ws, run)),
        cache=run.cache_stats,
        skipped=run.skipped,
        warnings=tuple(warnings),
        seconds=seconds,
        steps_per_s=steps_per_s,
        already_trained=already_trained,
        best=best_dict(ws, run),
    )


def run_folder(ws: Workspace, run_id: int, recipe: TrainRecipe) -> Path:
    """Where a run writes its LoRA files, resume state and samples."""
    return ws.root / "training" / f"run-{run_id}-{recipe.output_name}"


def lora_metadata(
    recipe: TrainRecipe,
    version: Any,
    data: Any,
    step: int,
    *,
    base_model_sha256: str | None,
    started_at: float,
) -> dict[str, str]:
    """kohya-style ``ss_*``/``modelspec.*`` metadata of a checkpoint, with the dataset
    version, its hash and the trigger (:func:`likeness.train.kohya.kohya_metadata`)."""
    from likeness.train.kohya import kohya_metadata

    return kohya_metadata(
        base_model=recipe.model,
        base_model_sha256=base_model_sha256,
        family=recipe.family,
        rank=recipe.rank,
        alpha=recipe.alpha,
        steps=step,
        resolution=recipe.resolution,
        trigger=version.trigger,
        dataset=version.ref,
        dataset_sha256=data.dataset_sha256,
        output_name=recipe.output_name,
        training_started_at=started_at,
        max_train_steps=recipe.steps or None,
        num_epochs=recipe.epochs or None,
        learning_rate=recipe.learning_rate,
        text_encoder_lr=recipe.te_learning_rate if recipe.train_text_encoder else None,
        lr_scheduler=recipe.lr_schedule,
        lr_warmup_steps=recipe.warmup_steps,
        optimizer=recipe.optimizer,
        mixed_precision=recipe.mixed_precision,
        seed=recipe.seed,
        num_train_images=len(data.items),
        batch_size_per_device=recipe.batch,
        gradient_accumulation_steps=recipe.gradient_accumulation,
        gradient_checkpointing=recipe.gradient_checkpointing,
        caption_dropout_rate=recipe.caption_dropout,
        noise_offset=recipe.noise_offset or None,
        network_dropout=recipe.lora_dropout or None,
        enable_bucket=recipe.aspect_buckets,
        likeness_recipe_hash=recipe.recipe_hash(),
    )


def free_comfyui(url: str) -> str | None:
    """``POST /free`` on a ComfyUI server; a one-line warning when it does not answer."""
    import httpx

    from likeness.engines.comfyui import client
    from likeness.engines.comfyui.errors import ComfyError

    try:
        with client.connect(url, timeout=httpx.Timeout(10.0, connect=3.0)) as http:
            client.free(http)
    except (httpx.HTTPError, ComfyError) as exc:
        reason = "; ".join(str(exc).splitlines()) or type(exc).__name__
        return (
            f"ComfyUI at {url} did not free its memory ({reason}); if it runs on this GPU, "
            f"stop it or run `likeness comfy free {url}`"
        )
    return None


def _progress(say: Notify) -> Callable[[str, int, int], None]:
    def report(what: str, done: int, total: int) -> None:
        if done == total:
            say(f"{what}: {total} ready")

    return report


class _FileJudging:
    """Judges, from their files, the checkpoints of a run still unjudged; the diffusers
    engine loading the base model for it exists only while it is needed."""

    def __init__(
        self,
        judge: CheckpointJudge | None,
        probe_engine: Engine | None,
        device: str | None,
        allow_pickle: bool,
        config: str | Path | None,
        say: Notify,
        warnings: list[str],
    ) -> None:
        self.judge = judge
        self.probe_engine = probe_engine
        self.options = {"device": device, "allow_pickle": allow_pickle, "config": config}
        self.say = say
        self.warnings = warnings

    def judge_pending(self, run_id: int) -> bool:
        """Judge what is pending; True when anything was judged."""
        if self.judge is None:
            return False
        pending = self.judge.pending(run_id)
        if not pending:
            return False
        engine = self.probe_engine
        owned = None
        if engine is None:
            from likeness.engines.diffusers import DiffusersEngine
            from likeness.engines.diffusers.device import choose_device, release_device_memory

            # The training model is gone: give its memory back before loading the base again.
            release_device_memory(choose_device(self.options["device"]))  # type: ignore[arg-type]
            engine = owned = DiffusersEngine(**self.options)  # type: ignore[arg-type]
        self.say(f"judging {len(pending)} checkpoint(s) from their files")
        try:
            for checkpoint in pending:
                if not Path(checkpoint.path).is_file():
                    line = f"step {checkpoint.step}: {checkpoint.path} is gone; not judged"
                    self.warnings.append(line)
                    self.say(f"warning: {line}")
                    continue
                _judge_safely(
                    self.say,
                    lambda c=checkpoint: self.judge.judge(  # type: ignore[union-attr]
                        c, engine, via="file" if owned is not None else engine.name
                    ),
                )
        finally:
            if owned is not None:
                owned.release()
        return True


def _judge_safely(say: Notify, judge: Callable[[], Any]) -> None:
    """Judging never stops a training run: a failure is a warning, and the checkpoint stays
    unjudged (judged again from its file at the end, or by the next run of the recipe)."""
    try:
        judge()
    except Exception as exc:  # a probe engine or an instrument that broke
        say(f"warning: judging failed ({type(exc).__name__}: {exc}); the checkpoint stays unjudged")


def _memory_engine() -> Any:
    from likeness.engines.diffusers import DiffusersEngine

    return DiffusersEngine()


def _with_judge(
    hooks: TrainHooks, judge: CheckpointJudge | None, probe_engine: Engine | None, say: Notify
) -> TrainHooks:
    """The hooks with the judge run on each checkpoint before the caller's own hook; what
    the caller's hook returns is stored beside the judge's metrics, not over them."""
    if judge is None:
        return hooks
    inner = hooks.on_checkpoint
    engine = probe_engine or _memory_engine()

    def on_checkpoint(event: Any) -> Any:
        checkpoint = store.get_checkpoint(judge.ws.db, event.checkpoint_id)
        assert checkpoint is not None
        _judge_safely(say, lambda: judge.judge_live(checkpoint, event.model, engine))
        extra = inner(event) if inner is not None else None
        if extra is None:
            return None
        judged = store.get_checkpoint(judge.ws.db, event.checkpoint_id)
        return {**((judged.metrics if judged else None) or {}), **extra}

    return dataclasses.replace(hooks, on_checkpoint=on_checkpoint)


def _with_job(hooks: TrainHooks, job: Any) -> TrainHooks:
    """The hooks with the job's heartbeat added to ``on_step``."""
    inner = hooks.on_step

    def on_step(report: Any) -> None:
        job.set_progress(report.step, message=f"step {report.step}, loss {report.loss:.4f}")
        if inner is not None:
            inner(report)

    return dataclasses.replace(hooks, on_step=on_step)


def _default_save_lora() -> SaveLora:
    from likeness.train.kohya import save_kohya_lora

    return save_kohya_lora


def _default_register() -> Callable[..., int]:
    from likeness.store.loras import record_lora

    return record_lora


__all__ = ["TrainError", "TrainResult", "free_comfyui", "lora_metadata", "train_lora"]
