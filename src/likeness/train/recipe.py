"""The train recipe: what to train a character LoRA on, and how; plain validated TOML data.

Defaults are what practitioners learned (FIELD_NOTES.md) and what kohya sd-scripts and
ai-toolkit ship: rank 64 (rank 32 learned the body, not the face), bf16 with lr 5e-5 and a
200-step warmup (fp16 at lr 1e-4 gave NaN from step 1), AdamW, checkpoints every 250 steps,
2,000 steps, caption dropout 0.05 (ai-toolkit), gradient checkpointing on (24 GB cards), and
for FLUX kohya's recommended timestep sampling ``shift`` 3.1582 with training guidance 1.0.
A ``qwen_image_edit`` recipe (an edit-model LoRA on edit pairs) takes ai-toolkit's
Qwen-Image-Edit values instead where a field is not set (:func:`family_defaults`).
:data:`FIELD_NOTES` says where each default comes from; ``likeness train new`` writes them
as a commented file. Example::

    recipe = TrainRecipe.from_toml_file("mara-lora.toml")
    for line in recipe.warnings():
        print(line)
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import textwrap
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# The generation recipe's validators and TOML coercion serve this recipe unchanged.
from likeness.recipes import (
    FAMILIES,
    RecipeError,
    _build,
    _choice,
    _float_range,
    _int_range,
    _plain,
    write_text_atomic,
)
from likeness.store.datasets import DatasetError, parse_ref

MIXED_PRECISIONS = ("bf16", "fp16", "no")
SAVE_PRECISIONS = ("fp16", "bf16", "fp32")
OPTIMIZERS = ("adamw", "adamw8bit")
LR_SCHEDULES = ("constant", "cosine", "linear")
TIMESTEP_SAMPLINGS = ("uniform", "sigmoid", "shift", "flux_shift")
QWEN_EDIT = "qwen_image_edit"
TRAIN_FAMILIES = (*FAMILIES, QWEN_EDIT)
"""What ``likeness train`` trains: the generation families plus the Qwen-Image-Edit model,
trained on a dataset version's edit pairs (:mod:`likeness.evaluate.edit_pairs`)."""
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")

# Default LoRA target modules (module-name suffixes, as peft matches them).
UNET_TARGETS = (
    # kohya's LoRA: every Linear (1x1 Conv in SD1.5) of the UNet's transformer blocks.
    "to_q",
    "to_k",
    "to_v",
    "to_out.0",
    "proj_in",
    "proj_out",
    "ff.net.0.proj",
    "ff.net.2",
)
FLUX_TARGETS = (
    # diffusers' train_dreambooth_lora_flux.py default: attention and feed-forward layers.
    "attn.to_k",
    "attn.to_q",
    "attn.to_v",
    "attn.to_out.0",
    "attn.add_k_proj",
    "attn.add_q_proj",
    "attn.add_v_proj",
    "attn.to_add_out",
    "ff.net.0.proj",
    "ff.net.2",
    "ff_context.net.0.proj",
    "ff_context.net.2",
)
QWEN_EDIT_TARGETS = (
    # Every Linear of the double-stream blocks' attention and feed-forward, image and text
    # streams (the modulation layers are left frozen).
    "attn.to_q",
    "attn.to_k",
    "attn.to_v",
    "attn.to_out.0",
    "attn.add_q_proj",
    "attn.add_k_proj",
    "attn.add_v_proj",
    "attn.to_add_out",
    "img_mlp.net.0.proj",
    "img_mlp.net.2",
    "txt_mlp.net.0.proj",
    "txt_mlp.net.2",
)
TEXT_ENCODER_TARGETS = ("q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2")
DEFAULT_SAMPLE_PROMPTS = (
    "{trigger} portrait photo of a {class_word}, looking at the camera, studio light",
    "{trigger} photo of a {class_word} smiling, head turned halfway to the left, outdoors",
)

# Probe shots of the shipped card judged at every checkpoint: front neutral, a half angle,
# smiling and a body shot (the card's ids, `likeness/data/card/card.toml`).
DEFAULT_PROBES = ("front_neutral", "half_left_neutral", "front_smiling", "standing")
# Probes of an edit model: instructions applied to the dataset's source photos
# (:data:`likeness.train.judge.EDIT_PROBES` holds their texts).
DEFAULT_EDIT_PROBES = ("half_left", "smiling")


def family_defaults(family: str) -> dict[str, Any]:
    """Fields whose default depends on the family: a Qwen-Image-Edit LoRA takes ai-toolkit's
    ``train_lora_qwen_image_edit_32gb.yaml`` values (rank 16, alpha 16, lr 1e-4, no warmup,
    3000 steps, its "weighted" timesteps: a logit-normal draw centred on the middle noise
    levels, here ``sigmoid``) and edit probes; other families take the dataclass defaults."""
    if family != QWEN_EDIT:
        return {}
    return {
        "rank": 16,
        "alpha": 16.0,
        "learning_rate": 1e-4,
        "warmup_steps": 0,
        "steps": 3000,
        "timestep_sampling": "sigmoid",
        "judge": {"probes": list(DEFAULT_EDIT_PROBES), "cfg": 1.0, "width": 1024, "height": 1024},
    }


FP16_WARNING = (
    "mixed_precision = 'fp16' on {family}: in practice fp16 gave a NaN loss from step 1 at "
    "lr 1e-4, while bf16 with lr 5e-5 and a 200-step warmup trained stably; use 'bf16' where "
    "the GPU supports it (the trainer stops at the first NaN either way)"
)


@dataclass(frozen=True)
class JudgeSettings:
    """How checkpoints are judged: a few card shots rendered with each checkpoint at fixed
    seeds, scored against the dataset's source photos (see :mod:`likeness.train.judge`).

    Judging is not part of what a run trains: changing this table never restarts training
    (it is left out of :meth:`TrainRecipe.recipe_hash`); checkpoints judged with other
    settings are judged again.
    """

    enabled: bool = True
    probes: tuple[str, ...] = DEFAULT_PROBES
    seeds: tuple[int, ...] = (1, 2)
    steps: int = 30
    cfg: float = 4.0
    width: int = 832
    height: int = 1216
    strength: float = 1.0
    spec: str = ""

    def __post_init__(self) -> None:
        for name in ("probes", "seeds"):
            object.__setattr__(self, name, tuple(getattr(self, name)))

    def settings_hash(self) -> str:
        """Identity of what the probes are: probes judged under another hash are stale."""
        canonical = json.dumps(_plain(self), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class TrainRecipe:
    """Everything one LoRA training run needs; ``likeness train FILE`` runs it.

    The run is identified by :meth:`recipe_hash`: the same recipe resumes an interrupted run.
    """

    # -- what ---------------------------------------------------------------------------
    model: str = ""
    family: str = "sdxl"
    dataset: str = ""
    name: str = ""
    # -- the network --------------------------------------------------------------------
    rank: int = 64
    alpha: float = 32.0
    train_unet: bool = True
    train_text_encoder: bool = False
    lora_targets: tuple[str, ...] = ()
    text_encoder_targets: tuple[str, ...] = ()
    lora_dropout: float = 0.0
    # -- optimisation -------------------------------------------------------------------
    learning_rate: float = 5e-5
    text_encoder_lr: float = 0.0
    lr_schedule: str = "constant"
    warmup_steps: int = 200
    optimizer: str = "adamw"
    weight_decay: float = 0.01
    max_grad_norm: float = 1.0
    steps: int = 2000
    epochs: int = 0
    batch: int = 1
    gradient_accumulation: int = 1
    mixed_precision: str = "bf16"
    gradient_checkpointing: bool = True
    seed: int = 42
    # -- data ---------------------------------------------------------------------------
    resolution: int = 1024
    aspect_buckets: bool = True
    bucket_step: int = 64
    caption_dropout: float = 0.05
    # -- noise and timesteps ------------------------------------------------------------
    noise_offset: float = 0.0
    guidance: float = 1.0
    timestep_sampling: str = "shift"
    sigmoid_scale: float = 1.0
    flow_shift: float = 3.1582
    max_sequence_length: int = 512
    # -- outputs ------------------------------------------------------------------------
    checkpoint_every: int = 250
    save_precision: str = "fp16"
    sample_every: int = 0
    sample_prompts: tuple[str, ...] = DEFAULT_SAMPLE_PROMPTS
    sample_steps: int = 30
    sample_cfg: float = 4.0
    # -- judging ------------------------------------------------------------------------
    judge: JudgeSettings = dataclasses.field(default_factory=JudgeSettings)

    def __post_init__(self) -> None:
        for name in ("lora_targets", "text_encoder_targets", "sample_prompts"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        validate(self)

    # -- conversion ---------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return _plain(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrainRecipe:
        """Build and validate from plain data; missing fields take their defaults (the
        family's, :func:`family_defaults`, before the dataclass's)."""
        defaults = family_defaults(str(data.get("family", "")))
        if defaults:
            judge = {**defaults.pop("judge"), **dict(data.get("judge") or {})}
            data = {**defaults, **data, "judge": judge}
        return _build(cls, data, "")

    def to_toml(self) -> str:
        import tomli_w

        return tomli_w.dumps(self.to_dict())

    @classmethod
    def from_toml(cls, text: str, source: str = "train recipe") -> TrainRecipe:
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise RecipeError(source, "", f"is not valid TOML ({exc}); fix the syntax") from exc
        return cls.from_dict(data)

    # Copied from likeness.recipes.Recipe.from_toml_file (the missing-file hint differs).
    @classmethod
    def from_toml_file(cls, path: str | Path) -> TrainRecipe:
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise RecipeError(
                "recipe",
                str(path),
                f"does not exist; write an example with `likeness train new {path}`",
            ) from None
        except UnicodeDecodeError:
            raise RecipeError(
                "recipe", str(path), "is not UTF-8 text; pass a TOML train recipe"
            ) from None
        except OSError as exc:
            raise RecipeError(
                "recipe", str(path), f"cannot be read ({exc.strerror or exc}); pass a TOML file"
            ) from None
        return cls.from_toml(text, source=str(path))

    def recipe_hash(self) -> str:
        """Stable sha256 (hex) of the canonical JSON form: the identity of a training run.
        The ``[judge]`` table is left out: how checkpoints are judged is not what is trained."""
        trained = {k: v for k, v in self.to_dict().items() if k != "judge"}
        canonical = json.dumps(trained, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode("utf-8")).hexdigest()

    def with_overrides(self, overrides: Mapping[str, Any]) -> TrainRecipe:
        """A new recipe with top-level fields replaced (values parsed as by ``from_dict``)."""
        return TrainRecipe.from_dict({**self.to_dict(), **overrides})

    # -- derived values -----------------------------------------------------------------
    @property
    def dataset_name(self) -> str:
        return parse_ref(self.dataset)[0]

    @property
    def dataset_version(self) -> int:
        version = parse_ref(self.dataset)[1]
        assert version is not None  # validate() requires it
        return version

    @property
    def output_name(self) -> str:
        """``name``, or ``<dataset>-v<N>`` when it is empty."""
        return self.name or f"{self.dataset_name}-v{self.dataset_version}"

    def unet_targets(self) -> tuple[str, ...]:
        if self.lora_targets:
            return self.lora_targets
        if self.family == QWEN_EDIT:
            return QWEN_EDIT_TARGETS
        return FLUX_TARGETS if self.family == "flux" else UNET_TARGETS

    def te_targets(self) -> tuple[str, ...]:
        return self.text_encoder_targets or TEXT_ENCODER_TARGETS

    @property
    def te_learning_rate(self) -> float:
        return self.text_encoder_lr or self.learning_rate

    def require_inputs(self) -> None:
        """Raise when the model or the dataset is missing (a recipe can be written without
        them, not trained)."""
        if not self.model.strip():
            raise RecipeError(
                "model", self.model, "is empty; set a .safetensors checkpoint or diffusers folder"
            )
        if not self.dataset.strip():
            raise RecipeError(
                "dataset", self.dataset, "is empty; set a dataset version, e.g. 'mara@v1'"
            )

    def warnings(self) -> list[str]:
        """Choices that are allowed but known to go wrong, one line each."""
        found = []
        if self.mixed_precision == "fp16":
            found.append(FP16_WARNING.format(family=self.family))
        if self.rank < 64 and self.family != QWEN_EDIT:
            found.append(
                f"rank = {self.rank}: rank 32 learned the body but not the face in practice; "
                "64 is recommended for faces"
            )
        return found


def validate(recipe: TrainRecipe) -> None:
    """Raise :class:`RecipeError` for the first field that cannot be used."""
    _choice("family", recipe.family, TRAIN_FAMILIES)
    if recipe.dataset.strip():
        try:
            _, version = parse_ref(recipe.dataset)
        except DatasetError:
            version = None
            raise RecipeError(
                "dataset", recipe.dataset, "is not a dataset version; write NAME@vN, e.g. mara@v1"
            ) from None
        if version is None:
            raise RecipeError(
                "dataset",
                recipe.dataset,
                f"names no version; write {recipe.dataset}@vN so a resumed run trains the "
                "same images",
            )
    if recipe.name and not _NAME.match(recipe.name):
        raise RecipeError(
            "name", recipe.name, "must be 1-64 letters, digits, '_', '.' or '-' (a file name)"
        )
    _int_range("rank", recipe.rank, 1, 1024)
    _float_range("alpha", recipe.alpha, 0.0, 4096.0, low_open=True)
    if not (recipe.train_unet or recipe.train_text_encoder):
        raise RecipeError(
            "train_unet", recipe.train_unet, "and train_text_encoder are both false; train one"
        )
    for field_name in ("lora_targets", "text_encoder_targets"):
        for index, target in enumerate(getattr(recipe, field_name)):
            if not target.strip():
                raise RecipeError(f"{field_name}.{index}", target, "is empty; name a module")
    _float_range("lora_dropout", recipe.lora_dropout, 0.0, 1.0)
    _float_range("learning_rate", recipe.learning_rate, 0.0, 1.0, low_open=True)
    _float_range("text_encoder_lr", recipe.text_encoder_lr, 0.0, 1.0)
    _choice("lr_schedule", recipe.lr_schedule, LR_SCHEDULES)
    _choice("optimizer", recipe.optimizer, OPTIMIZERS)
    _float_range("weight_decay", recipe.weight_decay, 0.0, 10.0)
    _float_range("max_grad_norm", recipe.max_grad_norm, 0.0, 1e6)
    _int_range("steps", recipe.steps, 0, 10_000_000)
    _int_range("epochs", recipe.epochs, 0, 1_000_000)
    if recipe.steps and recipe.epochs:
        raise RecipeError(
            "epochs", recipe.epochs, "is set together with steps; set steps = 0 to train by epochs"
        )
    if not recipe.steps and not recipe.epochs:
        raise RecipeError("steps", recipe.steps, "and epochs are both 0; set one of them")
    _int_range("warmup_steps", recipe.warmup_steps, 0, 10_000_000)
    if recipe.steps and recipe.warmup_steps >= recipe.steps:
        raise RecipeError(
            "warmup_steps",
            recipe.warmup_steps,
            f"must be less than steps ({recipe.steps}); lower it",
        )
    _int_range("batch", recipe.batch, 1, 64)
    _int_range("gradient_accumulation", recipe.gradient_accumulation, 1, 1024)
    _choice("mixed_precision", recipe.mixed_precision, MIXED_PRECISIONS)
    if recipe.family == "flux" and recipe.mixed_precision == "fp16":
        raise RecipeError(
            "mixed_precision",
            "fp16",
            "is refused for flux (its activations overflow fp16, the loss turns NaN); use bf16",
        )
    if not 0 <= recipe.seed <= 2**63 - 1:
        raise RecipeError("seed", recipe.seed, "must be between 0 and 2**63-1")
    _int_range("bucket_step", recipe.bucket_step, 16, 512)
    if recipe.bucket_step % 16:
        raise RecipeError(
            "bucket_step", recipe.bucket_step, "must be a multiple of 16 (latents pack 2x2)"
        )
    _int_range("resolution", recipe.resolution, 64, 4096)
    if recipe.resolution % recipe.bucket_step:
        raise RecipeError(
            "resolution",
            recipe.resolution,
            f"must be a multiple of bucket_step ({recipe.bucket_step})",
        )
    _float_range("caption_dropout", recipe.caption_dropout, 0.0, 1.0)
    _float_range("noise_offset", recipe.noise_offset, 0.0, 1.0)
    if recipe.family == "flux" and recipe.noise_offset:
        raise RecipeError(
            "noise_offset", recipe.noise_offset, "applies to sdxl and sd15; set 0 for flux"
        )
    _float_range("guidance", recipe.guidance, 0.0, 100.0)
    _choice("timestep_sampling", recipe.timestep_sampling, TIMESTEP_SAMPLINGS)
    _float_range("sigmoid_scale", recipe.sigmoid_scale, 0.0, 100.0, low_open=True)
    _float_range("flow_shift", recipe.flow_shift, 0.0, 100.0, low_open=True)
    _int_range("max_sequence_length", recipe.max_sequence_length, 1, 512)
    _int_range("checkpoint_every", recipe.checkpoint_every, 1, 10_000_000)
    _choice("save_precision", recipe.save_precision, SAVE_PRECISIONS)
    _int_range("sample_every", recipe.sample_every, 0, 10_000_000)
    if recipe.sample_every and not recipe.sample_prompts:
        raise RecipeError(
            "sample_prompts", [], "is empty while sample_every is set; list a prompt or set 0"
        )
    _int_range("sample_steps", recipe.sample_steps, 1, 1000)
    _float_range("sample_cfg", recipe.sample_cfg, 0.0, 100.0)
    validate_judge(recipe.judge)
    if recipe.family == QWEN_EDIT:
        validate_edit_family(recipe)


def validate_edit_family(recipe: TrainRecipe) -> None:
    """What a Qwen-Image-Edit LoRA run cannot do, refused naming the field."""
    if recipe.train_text_encoder:
        raise RecipeError(
            "train_text_encoder", True, "is refused for qwen_image_edit (its Qwen2.5-VL encoder "
            "stays frozen, as ai-toolkit keeps it); set false",
        )  # fmt: skip
    if recipe.mixed_precision == "fp16":
        raise RecipeError(
            "mixed_precision", "fp16", "is refused for qwen_image_edit (it is trained and run in "
            "bf16; fp16 overflows); use bf16",
        )  # fmt: skip
    if recipe.noise_offset:
        raise RecipeError(
            "noise_offset", recipe.noise_offset, "applies to sdxl and sd15; set 0 for "
            "qwen_image_edit",
        )  # fmt: skip
    if recipe.sample_every:
        raise RecipeError(
            "sample_every", recipe.sample_every, "renders text-to-image samples; a "
            "qwen_image_edit run shows its checkpoints through the judge's edit probes; set 0",
        )  # fmt: skip
    if recipe.bucket_step % 16:
        raise RecipeError(
            "bucket_step", recipe.bucket_step, "must be a multiple of 16 for qwen_image_edit "
            "(8x VAE, latents packed 2x2)",
        )  # fmt: skip


def validate_judge(judge: JudgeSettings) -> None:
    """Raise :class:`RecipeError` for the first ``judge.*`` field that cannot be used (the
    probe ids are checked against the card spec when a run starts)."""
    if judge.enabled and not judge.probes:
        raise RecipeError("judge.probes", [], "is empty; list card shot ids or set enabled = false")
    for index, probe in enumerate(judge.probes):
        if not probe.strip():
            raise RecipeError(f"judge.probes.{index}", probe, "is empty; name a card shot id")
    if len(set(judge.probes)) != len(judge.probes):
        raise RecipeError("judge.probes", list(judge.probes), "lists a shot twice; list it once")
    if judge.enabled and not judge.seeds:
        raise RecipeError("judge.seeds", [], "is empty; list fixed seeds, e.g. [1, 2]")
    for index, seed in enumerate(judge.seeds):
        if not 0 <= seed <= 2**63 - 1:
            raise RecipeError(f"judge.seeds.{index}", seed, "must be between 0 and 2**63-1")
    if len(set(judge.seeds)) != len(judge.seeds):
        raise RecipeError("judge.seeds", list(judge.seeds), "lists a seed twice; list it once")
    _int_range("judge.steps", judge.steps, 1, 1000)
    _float_range("judge.cfg", judge.cfg, 0.0, 100.0)
    for name in ("width", "height"):
        value = getattr(judge, name)
        if value < 64 or value > 8192 or value % 8:
            raise RecipeError(f"judge.{name}", value, "must be a multiple of 8 between 64 and 8192")
    _float_range("judge.strength", judge.strength, -20.0, 20.0)


# -- the commented example --------------------------------------------------------------
FIELD_NOTES: dict[str, str] = {
    "model": "base model: a single-file .safetensors checkpoint or a diffusers folder "
    "(FLUX: a diffusers folder)",
    "family": "sdxl | flux | sd15 | qwen_image_edit (an edit-model LoRA trained on the "
    "dataset version's edit pairs; its defaults follow ai-toolkit's Qwen-Image-Edit example)",
    "dataset": "the dataset version to train on (NAME@vN); its stored captions are used as "
    "they are, excluded duplicates are left out",
    "name": "output name of the LoRA files; empty: <dataset>-v<N>",
    "rank": "LoRA rank: rank 32 learned the body but not the face in practice; 64 for faces",
    "alpha": "LoRA alpha (scale = alpha / rank), written into the file as trained; the "
    "workspace default [training] network_alpha",
    "train_unet": "train the UNet (SDXL/SD1.5) or the transformer (FLUX)",
    "train_text_encoder": "also train the CLIP text encoder(s) (never T5); text embeddings "
    "are then computed each step instead of cached",
    "lora_targets": "module-name suffixes that get a LoRA; empty: kohya's transformer-block "
    "Linear layers (SDXL/SD1.5), diffusers' FLUX attention + feed-forward list, or the "
    "Qwen-Image blocks' attention and MLPs (qwen_image_edit)",
    "text_encoder_targets": "text-encoder modules; empty: attention and MLP (kohya)",
    "lora_dropout": "dropout on the LoRA path (kohya: off)",
    "learning_rate": "5e-5: bf16 at 5e-5 with warmup trained stably where 1e-4 diverged",
    "text_encoder_lr": "learning rate of the text encoders; 0: learning_rate",
    "lr_schedule": "after warmup: constant | cosine | linear (to 0 at the last step)",
    "warmup_steps": "linear warmup from 0 (200 in practice)",
    "optimizer": "adamw | adamw8bit (bitsandbytes, CUDA only)",
    "weight_decay": "AdamW weight decay (torch's default)",
    "max_grad_norm": "gradient clipping (kohya's default 1.0); 0: no clipping",
    "steps": "optimizer steps (ai-toolkit: 2000; 500-4000 is its good range); 0 to use epochs",
    "epochs": "passes over the dataset instead of steps (then set steps = 0)",
    "batch": "images per step (same bucket)",
    "gradient_accumulation": "micro-batches per optimizer step",
    "mixed_precision": "bf16 | fp16 | no: fp16 gave NaN at lr 1e-4 on SDXL (warned), is "
    "refused for FLUX; 'no' is fp32 (CPU tests)",
    "gradient_checkpointing": "recompute activations in backward: fits SDXL rank 64 in 24 GB",
    "seed": "every random draw (data order, noise, timesteps, dropout) follows from it and "
    "the step, so a resumed run equals an uninterrupted one",
    "resolution": "training resolution: buckets keep about resolution^2 pixels",
    "aspect_buckets": "group images by aspect ratio instead of square-cropping them",
    "bucket_step": "bucket sides are multiples of this (kohya: 64)",
    "caption_dropout": "share of captions replaced by the empty caption (ai-toolkit: 0.05)",
    "noise_offset": "SDXL/SD1.5 offset noise; kohya recommends 0.0357 for SDXL (its base was "
    "trained with it); 0: off",
    "guidance": "FLUX training guidance (dev is guidance-distilled; kohya: 1.0)",
    "timestep_sampling": "FLUX: uniform | sigmoid | shift | flux_shift (kohya recommends shift)",
    "sigmoid_scale": "FLUX: scale of the normal draw before the sigmoid (kohya: 1.0)",
    "flow_shift": "FLUX: shift of timestep_sampling 'shift' (kohya recommends 3.1582)",
    "max_sequence_length": "FLUX: T5 tokens (dev: 512)",
    "checkpoint_every": "write a LoRA file and the resume state every N steps (ai-toolkit: 250)",
    "save_precision": "dtype of the LoRA files: fp16 (ai-toolkit) | bf16 | fp32",
    "sample_every": "render the sample prompts every N steps into samples/; 0: never",
    "sample_prompts": "{trigger} and {class_word} come from the dataset version",
    "sample_steps": "sampling steps of the samples",
    "sample_cfg": "CFG of the samples (FLUX: its distilled guidance); 4.0 is the working "
    "SDXL recipe",
    "judge": "each checkpoint renders a few model-card shots at fixed seeds with the diffusers "
    "engine, scored against the dataset's source photos; the best by the sweep objective is "
    "marked (not part of the run's identity: changing it never restarts training)",
}
JUDGE_NOTES: dict[str, str] = {
    "enabled": "judge every checkpoint (off: checkpoints are only files)",
    "probes": "card shot ids (likeness/data/card/card.toml, or `spec`): front, half angle, "
    "smiling, body; qwen_image_edit: edit probes (half_left, smiling, ...) run on the source "
    "photos",
    "seeds": "fixed seeds: every checkpoint renders the same probes",
    "steps": "sampling steps of a probe",
    "cfg": "CFG of a probe (FLUX: its distilled guidance, 3.5 in practice)",
    "width": "probe width (832x1216 is the working SDXL size; SD1.5: 512x768)",
    "height": "probe height",
    "strength": "LoRA strength of the probes (1.0: the LoRA as trained)",
    "spec": "card spec TOML the probe shots come from; empty: the shipped 23-shot card",
}
_SECTIONS = {
    "model": "What to train",
    "rank": "The LoRA",
    "learning_rate": "Optimisation",
    "resolution": "Data",
    "noise_offset": "Noise and timesteps",
    "checkpoint_every": "Outputs",
}


def example_toml(recipe: TrainRecipe) -> str:
    """The recipe as TOML with a comment above every field: the file `likeness train new`
    writes. It parses back to ``recipe``."""
    import tomli_w

    lines = [
        "# A Likeness LoRA training recipe: `likeness train THIS_FILE` trains it as a job;",
        "# run the same command again after a crash to resume. Every field but model and",
        "# dataset has a default (docs/training.md says where each comes from).",
    ]
    for f in dataclasses.fields(recipe):
        if f.name == "judge":
            continue  # a table: written last, below every top-level key
        if f.name in _SECTIONS:
            title = _SECTIONS[f.name]
            lines += ["", f"# -- {title} " + "-" * (90 - len(title))]
        lines += textwrap.wrap(
            FIELD_NOTES[f.name], width=98, initial_indent="# ", subsequent_indent="# "
        )
        lines.append(tomli_w.dumps({f.name: _plain(getattr(recipe, f.name))}).rstrip("\n"))
    lines += ["", "# -- Judging " + "-" * 86]
    lines += textwrap.wrap(FIELD_NOTES["judge"], width=98, initial_indent="# ",
                           subsequent_indent="# ")  # fmt: skip
    lines.append("[judge]")
    for f in dataclasses.fields(recipe.judge):
        lines += textwrap.wrap(
            JUDGE_NOTES[f.name], width=98, initial_indent="# ", subsequent_indent="# "
        )
        lines.append(tomli_w.dumps({f.name: _plain(getattr(recipe.judge, f.name))}).rstrip("\n"))
    return "\n".join(lines) + "\n"


def write_example(path: str | Path, recipe: TrainRecipe) -> None:
    """Write :func:`example_toml` atomically (a kill mid-write leaves no half file)."""
    write_text_atomic(path, example_toml(recipe))
