"""The training loop: steps, the NaN guard, checkpoints, samples and the hooks around them.

Each optimizer step is a pure function of the weights, the optimizer state, the recipe seed
and the step number: the micro-batches come from :class:`~likeness.train.data.DataOrder`, every
random draw from a generator seeded by (seed, micro-batch), and torch's global RNG (LoRA
dropout) is reseeded at each step. A run resumed from a checkpoint therefore repeats exactly
what the killed run would have done.

A loss or gradient norm that is NaN or infinite stops the run *before* the optimizer applies
it (:class:`Diverged`); weights that became non-finite are never written over the last good
checkpoint. Every ``checkpoint_every`` steps and at the last step: a kohya LoRA file
(``save_lora``), the resume state, the database rows, then ``TrainHooks.on_checkpoint`` (where
a judge can generate probes with the in-memory pipeline and return metrics to record).
"""

from __future__ import annotations

import hashlib
import math
import os
import shutil
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from likeness.train import state as resume
from likeness.train import store
from likeness.train.objectives import Batch

if TYPE_CHECKING:
    import sqlite3

    import torch

    from likeness.train.data import DataOrder, TrainData
    from likeness.train.objectives import FluxObjective, UNetObjective
    from likeness.train.recipe import TrainRecipe
    from likeness.train.setup import TrainModel

SaveLora = Callable[..., Path]
"""``save_kohya_lora(path, components, *, family, alpha, metadata, dtype) -> Path``."""
_SAVE_DTYPES = {"fp16": "float16", "bf16": "bfloat16", "fp32": "float32"}


@dataclass(frozen=True)
class StepReport:
    """Progress after an optimizer step (what the progress bar shows)."""

    step: int
    total: int
    loss: float
    lr: float
    steps_per_s: float | None
    eta_s: float | None


@dataclass(frozen=True)
class CheckpointEvent:
    """A checkpoint just written and recorded; ``model`` holds the LoRA at this step."""

    run_id: int
    checkpoint_id: int
    step: int
    path: Path
    sha256: str
    loss: float | None
    model: TrainModel
    recipe: TrainRecipe


@dataclass
class TrainHooks:
    """Optional callbacks; every one of them runs in the training process."""

    on_step: Callable[[StepReport], None] | None = None
    on_checkpoint: Callable[[CheckpointEvent], Mapping[str, Any] | None] | None = None
    """Called after each checkpoint is recorded; metrics it returns are stored with it."""
    on_batch: Callable[[int, Batch], Batch] | None = None
    """Sees (step, micro-batch) before the loss: a seam to inspect or perturb a batch."""


class Diverged(RuntimeError):
    """The loss, the gradients or the weights stopped being finite; nothing bad was saved."""

    def __init__(self, step: int, what: str, last_good: int | None, recipe: TrainRecipe):
        self.step = step
        self.what = what
        self.last_good = last_good
        kept = (
            f"the last good checkpoint (step {last_good}) is kept"
            if last_good
            else "no checkpoint was written yet"
        )
        fixes = []
        if recipe.mixed_precision == "fp16":
            fixes.append("use mixed_precision = 'bf16' (fp16 gave NaN in practice)")
        fixes.append(f"lower learning_rate (now {recipe.learning_rate:g}; 5e-5 trained stably)")
        if recipe.warmup_steps < 200:
            fixes.append(f"raise warmup_steps (now {recipe.warmup_steps}; 200 in practice)")
        super().__init__(
            f"{what} became NaN or infinite at step {step}: training stopped before applying "
            f"it; {kept}; to fix, {', or '.join(fixes)}"
        )


def _stack_padded(rows: list[Any]) -> Any:
    """Stack per-item tensors; sequences of different lengths (Qwen-Image-Edit's instruction
    embeddings and their masks) are padded with zeros to the longest, as the pipeline pads."""
    import torch

    longest = max(int(r.shape[0]) for r in rows)
    if all(int(r.shape[0]) == longest for r in rows) or rows[0].dim() == 0:
        return torch.stack(rows)
    padded = []
    for row in rows:
        pad = row.new_zeros((longest - row.shape[0], *row.shape[1:]))
        padded.append(torch.cat([row, pad]))
    return torch.stack(padded)


def step_seed(seed: int, *parts: Any) -> int:
    """A 63-bit seed for one random stream of the run (``step_seed(42, "noise", 17)``)."""
    blob = ":".join(str(p) for p in (seed, *parts)).encode()
    return int.from_bytes(hashlib.sha256(blob).digest()[:8], "big") >> 1


@dataclass
class Trainer:
    """Runs optimizer steps from ``start`` to the recipe's total; see the module docstring."""

    recipe: TrainRecipe
    model: TrainModel
    objective: UNetObjective | FluxObjective
    data: TrainData
    order: DataOrder
    latents: list[dict[str, Any]]
    """Per item: its cached posterior {"mean", "std"}, "original" (h, w) and "crop" (top, left)."""
    texts: dict[str, dict[str, Any]] | None
    """Caption -> cached embeddings; None when the text encoders train."""
    accelerator: Any
    optimizer: Any
    scheduler: Any
    conn: sqlite3.Connection
    run_id: int
    run_dir: Path
    total_steps: int
    save_lora: SaveLora
    metadata: Callable[[int], dict[str, str]]
    """Step -> the ``ss_*``/likeness metadata of that step's LoRA file."""
    hooks: TrainHooks = field(default_factory=TrainHooks)
    register_lora: Callable[..., int] | None = None
    """``record_lora(conn, **lineage) -> id``: the workspace's LoRA list; None to skip."""
    sample_prompts: list[str] = field(default_factory=list)
    sample_texts: list[dict[str, Any]] = field(default_factory=list)
    """Cached embeddings of ``sample_prompts``, then of the empty prompt (the negative)."""
    last_good: int | None = None
    pending: list[list[float]] = field(default_factory=list)

    # -- the loop ---------------------------------------------------------------------------
    def run(self, start: int) -> None:
        """Train from optimizer step ``start`` (0, or the step of the resume state)."""
        import torch

        params = [p for _, p in self.model.trainable_parameters()]
        for module in self.model.trained.values():
            module.train()
        accum = self.recipe.gradient_accumulation
        began, timed_from = time.perf_counter(), start
        for step in range(start, self.total_steps):
            done = step + 1
            self.seed_global(step_seed(self.recipe.seed, "global", step))
            total_loss = 0.0
            for micro in range(accum):
                index = step * accum + micro
                generator = torch.Generator().manual_seed(
                    step_seed(self.recipe.seed, "batch", index)
                )
                batch = self.batch(index, generator)
                if self.hooks.on_batch is not None:
                    batch = self.hooks.on_batch(done, batch)
                loss = self.objective.loss(batch, generator)
                value = float(loss.detach())
                if not math.isfinite(value):
                    raise Diverged(done, "the loss", self.last_good, self.recipe)
                total_loss += value / accum
                self.accelerator.backward(loss / accum)
            if self.accelerator.scaler is not None:
                self.accelerator.unscale_gradients()  # fp16: clip the true gradients
            norm = torch.nn.utils.clip_grad_norm_(params, self.recipe.max_grad_norm or math.inf)
            if not math.isfinite(float(norm)) and self.accelerator.scaler is None:
                # (fp16: the grad scaler skips such a step and lowers its scale, as it should)
                raise Diverged(done, "the gradient norm", self.last_good, self.recipe)
            lr = self.scheduler.get_last_lr()[0]
            self.optimizer.step()
            self.scheduler.step()
            self.optimizer.zero_grad(set_to_none=True)
            self.pending.append([done, total_loss, lr])
            if self.recipe.sample_every and done % self.recipe.sample_every == 0:
                self.write_samples(done)
            if done % self.recipe.checkpoint_every == 0 or done == self.total_steps:
                self.checkpoint(done)
            if self.hooks.on_step is not None:
                elapsed = time.perf_counter() - began
                rate = (done - timed_from) / elapsed if elapsed > 0 else None
                eta = (self.total_steps - done) / rate if rate else None
                self.hooks.on_step(StepReport(done, self.total_steps, total_loss, lr, rate, eta))

    def seed_global(self, seed: int) -> None:
        """Reseed torch's global RNG of the training device (LoRA dropout draws from it).
        ``torch.manual_seed`` also visits every other backend: 0.7 ms, 1% of a tiny step."""
        import torch

        torch.default_generator.manual_seed(seed)
        kind = torch.device(self.model.device).type
        if kind == "cuda":
            torch.cuda.manual_seed(seed)
        elif kind == "mps":
            torch.mps.manual_seed(seed)

    def batch(self, index: int, generator: torch.Generator) -> Batch:
        """Micro-batch ``index``: cached latents and embeddings, captions after dropout."""
        import torch

        members = self.order.micro_batch(index)
        keep = torch.rand((len(members),), generator=generator) >= self.recipe.caption_dropout
        return self.item_batch(members, keep=keep.tolist())

    def item_batch(
        self, members: list[int], *, keep: list[bool] | None = None, dropout: bool = True
    ) -> Batch:
        """The batch of these item indices; ``keep[i]`` False drops caption i."""
        import torch

        items = [self.data.items[i] for i in members]
        keep = keep if keep is not None and dropout else [True] * len(items)
        captions = [it.caption if k else "" for it, k in zip(items, keep, strict=True)]
        text = None
        if self.texts is not None:
            rows = [self.texts[it.text_key(c)] for it, c in zip(items, captions, strict=True)]
            text = {name: _stack_padded([r[name] for r in rows]) for name in rows[0]}
        cached = [self.latents[i] for i in members]
        width, height = items[0].bucket
        control = None
        if "control_mean" in cached[0]:
            control = torch.stack([c["control_mean"] for c in cached])
        return Batch(
            control_mean=control,
            latent_mean=torch.stack([c["mean"] for c in cached]),
            latent_std=torch.stack([c["std"] for c in cached]),
            text=text,
            captions=captions,
            original_sizes=[c["original"] for c in cached],
            crops=[c["crop"] for c in cached],
            size=(height, width),
            images=[it.sha256 for it in items],
        )

    def fixed_loss(self, slots: int = 4) -> float:
        """The loss on a fixed batch: ``slots`` images (the first items, repeated if fewer)
        at noise levels spread over (0, 1), posterior means, captions as stored, the same
        noise every time. Without the sampling noise of the training loss, it falls as the
        LoRA fits the data."""
        import torch

        total = 0.0
        for module in self.model.trained.values():
            module.eval()
        try:
            with torch.no_grad():
                for slot in range(slots):
                    index = slot % len(self.data.items)
                    generator = torch.Generator().manual_seed(
                        step_seed(self.recipe.seed, "fixed", slot)
                    )
                    batch = self.item_batch([index], dropout=False)
                    level = torch.tensor([(slot + 0.5) / slots])
                    total += float(self.objective.loss(batch, generator, levels=level))
        finally:
            for module in self.model.trained.values():
                module.train()
        return total / slots

    # -- checkpoints ------------------------------------------------------------------------
    def lora_path(self, step: int) -> Path:
        return self.run_dir / f"{self.recipe.output_name}-step{step:06d}.safetensors"

    def final_path(self) -> Path:
        return self.run_dir / f"{self.recipe.output_name}.safetensors"

    def state_path(self) -> Path:
        return self.run_dir / "state" / "resume.safetensors"

    def checkpoint(self, step: int) -> None:
        """LoRA file, resume state, database rows, then the checkpoint hook."""
        import torch

        # 1. Never let non-finite weights replace the last good checkpoint.
        for name, param in self.model.trainable_parameters():
            if not bool(torch.isfinite(param).all()):
                raise Diverged(step, f"the weights ({name})", self.last_good, self.recipe)
        # 2. The LoRA file, in the recipe's save precision.
        path = self.lora_path(step)
        self.save_lora(
            path,
            self.model.trained,
            family=self.recipe.family,
            alpha=self.recipe.alpha,
            metadata=self.metadata(step),
            dtype=getattr(torch, _SAVE_DTYPES[self.recipe.save_precision]),
        )
        sha = _sha256(path)
        losses = [row[1] for row in self.pending]
        mean_loss = sum(losses) / len(losses) if losses else None
        info = {
            "step": step,
            "path": str(path),
            "sha256": sha,
            "loss": mean_loss,
            "fixed_loss": self.fixed_loss(),
        }
        # 3. The resume state, then the database (a kill between them is repaired on resume).
        resume.save_state(self.state_path(), self.resume_state(step, info))
        checkpoint_id = self.record(info, self.pending)
        self.pending = []
        self.last_good = step
        if step == self.total_steps:
            _link_or_copy(path, self.final_path())
        # 4. Whoever judges checkpoints.
        if self.hooks.on_checkpoint is not None:
            event = CheckpointEvent(
                self.run_id, checkpoint_id, step, path, sha, mean_loss, self.model, self.recipe
            )
            metrics = self.hooks.on_checkpoint(event)
            if metrics is not None:
                store.set_checkpoint_metrics(self.conn, checkpoint_id, metrics)
            for module in self.model.trained.values():
                module.train()

    def record(self, info: Mapping[str, Any], pending: list[list[float]]) -> int:
        """Database rows of a checkpoint (idempotent: also used to repair after a kill)."""
        lora_id = self.register(info)
        return store.record_checkpoint(
            self.conn,
            run_id=self.run_id,
            step=info["step"],
            path=info["path"],
            sha256=info["sha256"],
            loss=info["loss"],
            fixed_loss=info.get("fixed_loss"),
            losses=[(int(s), float(v), float(lr)) for s, v, lr in pending],
            lora_id=lora_id,
        )

    def register(self, info: Mapping[str, Any]) -> int | None:
        """Record a checkpoint's LoRA file, with its lineage, in the workspace's LoRA list."""
        if self.register_lora is None:
            return None
        recipe = self.recipe
        run = store.get_run(self.conn, self.run_id)
        assert run is not None
        return self.register_lora(
            self.conn,
            path=info["path"],
            sha256=info["sha256"],
            name=Path(info["path"]).stem,
            family=recipe.family,
            base_model=recipe.model,
            base_model_sha256=run.base_model_sha256,
            rank=recipe.rank,
            alpha=recipe.alpha,
            steps=int(info["step"]),
            dataset=recipe.dataset_name,
            dataset_version=recipe.dataset_version,
            source="trained",
            train_run=self.run_id,
            metadata=self.metadata(int(info["step"])),
        )

    def resume_state(self, step: int, info: Mapping[str, Any]) -> resume.ResumeState:
        epoch, within = self.order.position(step * self.recipe.gradient_accumulation)
        scaler = self.accelerator.scaler
        return resume.ResumeState(
            step=step,
            recipe_hash=self.recipe.recipe_hash(),
            epoch=epoch,
            epoch_index=within,
            epoch_seed=self.order.epoch_seed(epoch),
            weights={n: p.detach().cpu().clone() for n, p in self.model.trainable_parameters()},
            optimizer=self.optimizer.state_dict(),
            scheduler=self.scheduler.state_dict(),
            scaler=scaler.state_dict() if scaler is not None else None,
            rng=resume.capture_rng(),
            pending_losses=list(self.pending),
            checkpoint=dict(info),
        )

    def restore(self, saved: resume.ResumeState) -> None:
        """Put the weights, optimizer, scheduler, scaler and RNG back as they were saved."""
        import torch

        params = dict(self.model.trainable_parameters())
        missing = set(params) ^ set(saved.weights)
        if missing:
            raise ValueError(
                f"the resume state does not fit this model ({sorted(missing)[:3]}...); "
                f"delete {self.state_path()} to start over"
            )
        with torch.no_grad():
            for name, param in params.items():
                param.copy_(saved.weights[name].to(param.device, param.dtype))
        self.optimizer.load_state_dict(saved.optimizer)
        self.scheduler.load_state_dict(saved.scheduler)
        if saved.scaler is not None and self.accelerator.scaler is not None:
            self.accelerator.scaler.load_state_dict(saved.scaler)
        resume.restore_rng(saved.rng)
        self.last_good = saved.step
        if saved.checkpoint is not None:  # the kill may have come before the database write
            self.record(saved.checkpoint, saved.pending_losses)
            if saved.step == self.total_steps:
                _link_or_copy(Path(saved.checkpoint["path"]), self.final_path())

    # -- samples ----------------------------------------------------------------------------
    def write_samples(self, step: int) -> list[Path]:
        """Render the sample prompts with the LoRA as it is now into ``samples/``."""
        import torch

        folder = self.run_dir / "samples"
        folder.mkdir(parents=True, exist_ok=True)
        written = []
        size = (self.recipe.resolution, self.recipe.resolution)
        for module in self.model.trained.values():
            module.eval()
        try:
            with torch.no_grad(), self.accelerator.autocast():
                texts = self.sample_texts
                if self.texts is None:  # the text encoders train: encode with them as they are
                    texts = [self.objective.encode_text([p]) for p in self.sample_prompts]
                    texts = [{k: v[0] for k, v in t.items()} for t in texts]
                    texts.append(self.sample_texts[-1])
                empty = texts[-1]
                for i, text in enumerate(texts[:-1]):
                    generator = torch.Generator().manual_seed(self.recipe.seed + i)
                    image = self.objective.sample(text, empty, size, generator)
                    path = folder / f"step{step:06d}-{i:02d}.png"
                    image.save(path)
                    written.append(path)
        finally:
            for module in self.model.trained.values():
                module.train()
        return written


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 22), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _link_or_copy(source: Path, target: Path) -> None:
    """``target`` becomes the same file as ``source`` (a hard link; a copy across devices),
    replaced in one step."""
    tmp = target.with_name(f".{target.name}.tmp")
    tmp.unlink(missing_ok=True)
    try:
        os.link(source, tmp)
    except OSError:
        shutil.copyfile(source, tmp)
    os.replace(tmp, target)
