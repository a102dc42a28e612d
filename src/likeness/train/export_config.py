"""Configs for other trainers: a dataset version plus a kohya or ai-toolkit job, same defaults.

For people who train on a rented box with their usual tool. ``OUT`` gets the exported images
and captions (``likeness dataset export``'s kohya layout, under ``dataset/``) and:

- kohya sd-scripts: ``dataset.toml`` (``[[datasets]]`` / ``[[datasets.subsets]]``),
  ``train.toml`` (read by ``--config_file``; kohya flattens its sections) and ``train.sh``
  (``accelerate launch <sd-scripts>/sdxl_train_network.py --config_file train.toml``).
- ai-toolkit: ``job.yaml`` (an ``sd_trainer`` process) and ``train.sh``
  (``python <ai-toolkit>/run.py job.yaml``).

Paths inside are relative to ``OUT`` and ``train.sh`` runs from there, so the folder can be
copied anywhere. The LoRA carries the dataset version and its hash back (ai-toolkit writes
``meta`` into the file's metadata, kohya its ``training_comment``), so ``likeness lora add``
finds its lineage. Example::

    job = TrainJob.from_settings(ws.settings.training, family="sdxl", base_model="bigLove.safetensors")
    export_training_config(ws, resolve(ws.db, "mara@v2"), Path("rent/mara-v2"), "kohya", job)
"""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from likeness.config import TrainingSettings
from likeness.curate.export import ExportResult, export_version
from likeness.store.datasets import DatasetVersion, version_sha256
from likeness.workspace import Workspace

ConfigFormat = Literal["kohya", "ai-toolkit"]
FORMATS = ("kohya", "ai-toolkit")
FAMILIES = ("sdxl", "sd15", "flux")
OPTIMIZERS = {"adamw": ("AdamW", "adamw"), "adamw8bit": ("AdamW8bit", "adamw8bit")}
PRECISIONS = ("bf16", "fp16", "no")
SAVE_PRECISIONS = {"fp16": "float16", "bf16": "bfloat16", "float": "float32"}
KOHYA_SCRIPTS = {
    "sdxl": "sdxl_train_network.py",
    "sd15": "train_network.py",
    "flux": "flux_train_network.py",
}
_COMMENT = re.compile(r"likeness_dataset=(\S+)\s+likeness_dataset_sha256=([0-9a-f]{64})")
PLACEHOLDER = "<path to {what}>"


class ExportConfigError(ValueError):
    """A job field that no trainer can run; names the field and what to change."""

    def __init__(self, field: str, value: Any, message: str) -> None:
        super().__init__(f"{field}: {value!r} {message}")
        self.field = field


@dataclass(frozen=True)
class TrainJob:
    """The training settings both configs say, with Likeness' defaults.

    rank, alpha, learning rate, warmup and mixed precision come from ``[training]`` in
    likeness.toml (:class:`likeness.config.TrainingSettings`); the rest are what Likeness
    trains with: 2000 steps at batch 1, 1024 px (512 for SD1.5) with aspect buckets, caption
    dropout 0.05, a checkpoint every 250 steps saved in fp16, seed 42. ``optimizer`` is
    8-bit AdamW, as Likeness uses when bitsandbytes is installed (kohya and ai-toolkit
    install it).
    """

    family: str = "sdxl"
    base_model: str = ""
    rank: int = 64
    alpha: float = 32.0
    learning_rate: float = 5e-5
    warmup_steps: int = 200
    mixed_precision: str = "bf16"
    optimizer: str = "adamw8bit"
    steps: int = 2000
    batch: int = 1
    resolution: int | None = None
    """Square training size in pixels; None means 1024, or 512 for SD1.5."""
    caption_dropout: float = 0.05
    noise_offset: float = 0.0
    gradient_checkpointing: bool = True
    train_text_encoder: bool = False
    checkpoint_every: int = 250
    save_precision: str = "fp16"
    seed: int = 42
    repeats: int = 10
    flux_parts: dict[str, str] = field(default_factory=dict)
    """kohya FLUX only: paths of ``clip_l``, ``t5xxl`` and ``ae`` single files."""

    @classmethod
    def from_settings(cls, settings: TrainingSettings, **overrides: Any) -> TrainJob:
        base = cls(
            rank=settings.network_rank,
            alpha=float(settings.network_alpha),
            learning_rate=settings.learning_rate,
            warmup_steps=settings.warmup_steps,
            mixed_precision=settings.mixed_precision,
        )
        return replace(base, **{k: v for k, v in overrides.items() if v is not None})

    @property
    def size(self) -> int:
        if self.resolution is not None:
            return self.resolution
        return 512 if self.family == "sd15" else 1024

    def check(self) -> list[str]:
        """Raise :class:`ExportConfigError` for the first impossible field; return warnings."""
        if self.family not in FAMILIES:
            raise ExportConfigError("family", self.family, f"is not one of {', '.join(FAMILIES)}")
        for name in ("rank", "steps", "batch", "checkpoint_every", "repeats"):
            if getattr(self, name) < 1:
                raise ExportConfigError(name, getattr(self, name), "must be at least 1")
        if self.alpha <= 0:
            raise ExportConfigError("alpha", self.alpha, "must be above 0")
        if not 0 < self.learning_rate < 1:
            raise ExportConfigError("learning_rate", self.learning_rate, "must be in (0, 1)")
        if self.warmup_steps < 0:
            raise ExportConfigError("warmup_steps", self.warmup_steps, "must be 0 or more")
        if not 0 <= self.caption_dropout < 1:
            raise ExportConfigError("caption_dropout", self.caption_dropout, "must be in [0, 1)")
        if self.size < 256 or self.size % 64:
            raise ExportConfigError("resolution", self.size, "must be a multiple of 64, >= 256")
        if self.optimizer not in OPTIMIZERS:
            raise ExportConfigError(
                "optimizer", self.optimizer, f"is not one of {', '.join(OPTIMIZERS)}"
            )
        if self.save_precision not in SAVE_PRECISIONS:
            raise ExportConfigError(
                "save_precision", self.save_precision, f"is not one of {', '.join(SAVE_PRECISIONS)}"
            )
        if self.mixed_precision not in PRECISIONS:
            raise ExportConfigError(
                "mixed_precision", self.mixed_precision, f"is not one of {', '.join(PRECISIONS)}"
            )
        warnings = []
        if self.mixed_precision == "fp16":
            if self.family == "flux":
                raise ExportConfigError(
                    "mixed_precision", "fp16", "overflows in FLUX; use bf16 (or no)"
                )
            warnings.append(
                "mixed_precision fp16: practitioners saw NaN loss from step 1 at lr 1e-4 in fp16; "
                "bf16 trains stably where the GPU has it"
            )
        if self.train_text_encoder and self.family == "flux":
            raise ExportConfigError(
                "train_text_encoder", True, "is not supported for FLUX by these exports"
            )
        if not self.base_model:
            warnings.append("no --base-model given: fill in the base model path before training")
        return warnings


@dataclass(frozen=True)
class ExportedConfig:
    folder: Path
    format: str
    files: dict[str, Path]
    dataset: ExportResult
    dataset_sha256: str
    command: str
    warnings: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "folder": str(self.folder),
            "format": self.format,
            "files": {k: str(v) for k, v in self.files.items()},
            "dataset": self.dataset.to_dict(),
            "dataset_sha256": self.dataset_sha256,
            "command": self.command,
            "warnings": list(self.warnings),
        }


def export_training_config(
    ws: Workspace,
    version: DatasetVersion,
    out: Path,
    fmt: str,
    job: TrainJob,
    *,
    overwrite: bool = False,
) -> ExportedConfig:
    """Write ``version``'s images and captions and a ``fmt`` job config under ``out``."""
    # 1. Check the request before writing anything.
    if fmt not in FORMATS:
        raise ExportConfigError("format", fmt, f"is not one of {', '.join(FORMATS)}")
    warnings = job.check()
    if not version.items:
        raise ExportConfigError("dataset", version.ref, "has no images; nothing to train on")
    out = Path(out)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise ExportConfigError(
            "out", str(out), "is not empty; choose an empty folder or pass --overwrite"
        )
    if out.exists() and overwrite:
        shutil.rmtree(out)
    # 2. The images and captions, in kohya's folder layout (ai-toolkit reads it too).
    dataset = export_version(ws, version, out / "dataset", "kohya", repeats=job.repeats)
    image_dir = dataset.image_folder.relative_to(out).as_posix()
    digest = version_sha256(version)
    name = version.ref.replace("@", "-")
    # 3. The job config and the command that runs it.
    if fmt == "kohya":
        files, command = _kohya(out, version, job, image_dir, name, digest)
        if job.family == "flux":
            warnings += [
                f"flux: fill in {part} in train.toml"
                for part in ("clip_l", "t5xxl", "ae")
                if part not in job.flux_parts
            ]
    else:
        files, command = _ai_toolkit(out, version, job, image_dir, name, digest)
    script = out / "train.sh"
    script.write_text(_script(command, fmt), encoding="utf-8")
    script.chmod(0o755)
    files["script"] = script
    return ExportedConfig(out, fmt, files, dataset, digest, command, tuple(warnings))


def lineage_from_metadata(metadata: dict[str, str]) -> tuple[str, str] | None:
    """(dataset ref, dataset sha256) a LoRA trained from an exported config carries: the
    ``likeness_dataset*`` keys (ai-toolkit ``meta``, Likeness) or kohya's training comment."""
    ref, digest = metadata.get("likeness_dataset"), metadata.get("likeness_dataset_sha256")
    if ref and digest:
        return ref.strip('"'), digest.strip('"')
    match = _COMMENT.search(metadata.get("ss_training_comment", ""))
    return (match.group(1), match.group(2)) if match else None


# -- kohya sd-scripts ---------------------------------------------------------------------
def _kohya(
    out: Path, version: DatasetVersion, job: TrainJob, image_dir: str, name: str, digest: str
) -> tuple[dict[str, Path], str]:
    import tomli_w

    subset: dict[str, Any] = {
        "image_dir": image_dir,
        "caption_extension": ".txt",
        "num_repeats": job.repeats,
        "class_tokens": f"{version.trigger} {version.class_word}".strip(),
        "caption_dropout_rate": job.caption_dropout,
        "shuffle_caption": False,
    }
    dataset_config = {
        "general": {"enable_bucket": True, "bucket_no_upscale": True},
        "datasets": [
            {
                "resolution": job.size,
                "batch_size": job.batch,
                "min_bucket_reso": max(256, job.size // 2),
                "max_bucket_reso": job.size * 2,
                "bucket_reso_steps": 64,
                "subsets": [subset],
            }
        ],
    }
    kohya_optimizer = OPTIMIZERS[job.optimizer][0]
    training: dict[str, Any] = {
        "max_train_steps": job.steps,
        "mixed_precision": job.mixed_precision,
        "save_precision": {"fp16": "fp16", "bf16": "bf16", "float": "float"}[job.save_precision],
        "gradient_checkpointing": job.gradient_checkpointing,
        "cache_latents": True,
        "cache_latents_to_disk": True,
        "sdpa": True,
        "seed": job.seed,
        "max_grad_norm": 1.0,
    }
    if job.noise_offset:
        training["noise_offset"] = job.noise_offset
    network: dict[str, Any] = {
        "network_module": "networks.lora_flux" if job.family == "flux" else "networks.lora",
        "network_dim": job.rank,
        "network_alpha": job.alpha,
        "network_train_unet_only": not job.train_text_encoder,
    }
    if not job.train_text_encoder and job.family != "sd15":
        training["cache_text_encoder_outputs"] = True
    model: dict[str, Any] = {
        "pretrained_model_name_or_path": job.base_model or PLACEHOLDER.format(what="base model")
    }
    if job.family == "flux":
        for part, what in (("clip_l", "CLIP-L"), ("t5xxl", "T5-XXL"), ("ae", "FLUX autoencoder")):
            model[part] = job.flux_parts.get(part) or PLACEHOLDER.format(what=f"{what} file")
        training.update(
            guidance_scale=1.0,
            timestep_sampling="shift",
            discrete_flow_shift=3.1582,
            model_prediction_type="raw",
        )
    config = {
        "model": model,
        "network": network,
        "optimizer": {
            "optimizer_type": kohya_optimizer,
            "learning_rate": job.learning_rate,
            "lr_scheduler": "constant_with_warmup",
            "lr_warmup_steps": job.warmup_steps,
        },
        "training": training,
        "dataset": {"dataset_config": "dataset.toml"},
        "output": {
            "output_dir": "output",
            "output_name": name,
            "save_model_as": "safetensors",
            "save_every_n_steps": job.checkpoint_every,
            "training_comment": f"likeness_dataset={version.ref} likeness_dataset_sha256={digest}",
        },
    }
    dataset_path, train_path = out / "dataset.toml", out / "train.toml"
    header = f"# {version.ref} (sha256 {digest}), written by `likeness train export-config`\n"
    dataset_path.write_text(header + tomli_w.dumps(dataset_config), encoding="utf-8")
    train_path.write_text(header + tomli_w.dumps(config), encoding="utf-8")
    command = (
        "accelerate launch --num_cpu_threads_per_process 1 "
        f'"$SD_SCRIPTS/{KOHYA_SCRIPTS[job.family]}" --config_file train.toml'
    )
    return {"dataset_config": dataset_path, "job_config": train_path}, command


# -- ai-toolkit ---------------------------------------------------------------------------
def _ai_toolkit(
    out: Path, version: DatasetVersion, job: TrainJob, image_dir: str, name: str, digest: str
) -> tuple[dict[str, Path], str]:
    import yaml

    flux = job.family == "flux"
    arch = {"sdxl": "sdxl", "sd15": "sd1", "flux": "flux"}[job.family]
    trigger = version.trigger
    subject = f"[trigger] {version.class_word}".strip()
    process = {
        "type": "sd_trainer",
        "training_folder": "output",
        "device": "cuda:0",
        "trigger_word": trigger,
        "network": {"type": "lora", "linear": job.rank, "linear_alpha": job.alpha},
        "save": {
            "dtype": SAVE_PRECISIONS[job.save_precision],
            "save_every": job.checkpoint_every,
            "max_step_saves_to_keep": max(1, job.steps // job.checkpoint_every),
        },
        "datasets": [
            {
                "folder_path": image_dir,
                "caption_ext": "txt",
                "caption_dropout_rate": job.caption_dropout,
                "shuffle_tokens": False,
                "cache_latents_to_disk": True,
                "resolution": [job.size],
                "num_repeats": job.repeats,
            }
        ],
        "train": {
            "batch_size": job.batch,
            "steps": job.steps,
            "gradient_accumulation_steps": 1,
            "train_unet": True,
            "train_text_encoder": job.train_text_encoder,
            "gradient_checkpointing": job.gradient_checkpointing,
            "noise_scheduler": "flowmatch" if flux else "ddpm",
            "optimizer": OPTIMIZERS[job.optimizer][1],
            "lr": job.learning_rate,
            "lr_scheduler": "constant_with_warmup",
            "lr_scheduler_params": {"num_warmup_steps": job.warmup_steps},
            "noise_offset": job.noise_offset,
            "dtype": {"no": "fp32"}.get(job.mixed_precision, job.mixed_precision),
        },
        "model": {
            "name_or_path": job.base_model or PLACEHOLDER.format(what="base model"),
            "arch": arch,
            "quantize": flux,
        },
        "sample": {
            "sampler": "flowmatch" if flux else "ddpm",
            "sample_every": job.checkpoint_every,
            "width": job.size,
            "height": job.size,
            "prompts": [
                f"{subject}, portrait photo, front view, neutral expression, studio light",
                f"{subject}, portrait photo, three-quarter view, smiling",
                f"{subject}, full body photo, standing, arms at the sides",
            ],
            "neg": "",
            "seed": job.seed,
            "walk_seed": False,
            "guidance_scale": 3.5 if flux else 4.0,
            "sample_steps": 30,
        },
    }
    config = {
        "job": "extension",
        "config": {"name": name, "process": [process]},
        "meta": {
            "name": "[name]",
            "version": "1.0",
            "likeness_dataset": version.ref,
            "likeness_dataset_sha256": digest,
            "likeness_family": job.family,
        },
    }
    path = out / "job.yaml"
    header = f"# {version.ref} (sha256 {digest}), written by `likeness train export-config`\n"
    path.write_text(header + yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return {"job_config": path}, 'python "$AI_TOOLKIT/run.py" job.yaml'


def _script(command: str, fmt: str) -> str:
    tool, var = (
        ("kohya sd-scripts", "SD_SCRIPTS") if fmt == "kohya" else ("ai-toolkit", "AI_TOOLKIT")
    )
    return (
        "#!/bin/sh\n"
        f"# Train this dataset with {tool}: {var}=/path/to/{tool.split()[0]} sh train.sh\n"
        "set -e\n"
        f': "${{{var}:?set {var} to the {tool} folder}}"\n'
        'cd "$(dirname "$0")"\n'
        f"{command}\n"
    )
