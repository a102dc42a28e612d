"""The model a run trains: the base pipeline loaded as the engines load it, LoRA injected.

The base model is a single-file ``.safetensors`` checkpoint or a diffusers folder, resolved and
loaded by :mod:`likeness.engines.diffusers.loading` (offline, pickles refused unless allowed).
Every base weight is frozen and kept in the training dtype (bf16 for ``mixed_precision =
"bf16"``); peft LoRA layers (adapter "default") go into the UNet / transformer and, when asked,
the CLIP text encoders; the LoRA weights themselves stay fp32, as diffusers' training scripts
keep them. The VAE stays fp32: SDXL's VAE overflows in half precision.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from likeness.engines.diffusers.loading import (
    ModelSource,
    load_pipeline,
    quiet_loading,
    resolve_model,
)
from likeness.recipes import RecipeError
from likeness.train.recipe import TrainRecipe

WEIGHT_DTYPES = {"bf16": "bfloat16", "fp16": "float16", "no": "float32"}
# Components a kohya file can carry, by the names save_kohya_lora takes.
DENOISERS = {
    "sdxl": "unet",
    "sd15": "unet",
    "flux": "transformer",
    "qwen_image_edit": "transformer",
}


@dataclass
class TrainModel:
    """The loaded pipeline and the parts a run touches."""

    pipe: Any
    source: ModelSource
    family: str
    device: Any
    weight_dtype: Any
    trained: dict[str, Any] = field(default_factory=dict)
    """Component name ("unet", "transformer", "text_encoder", "text_encoder_2") -> module
    with LoRA layers: what a checkpoint saves."""
    text_device: Any = None
    """Where the text encoders are (moved off the GPU once captions are cached)."""

    @property
    def denoiser(self) -> Any:
        return getattr(self.pipe, DENOISERS[self.family])

    @property
    def vae(self) -> Any:
        return self.pipe.vae

    @property
    def text_encoders(self) -> list[Any]:
        names = ("text_encoder", "text_encoder_2")
        return [getattr(self.pipe, n) for n in names if getattr(self.pipe, n, None) is not None]

    @property
    def guidance_embeds(self) -> bool:
        return bool(getattr(self.denoiser.config, "guidance_embeds", False))

    def trainable_parameters(self) -> list[tuple[str, Any]]:
        """(component.name, parameter) of every trainable weight, in a fixed order: the order
        the optimizer and the resume state use."""
        return [
            (f"{component}.{name}", param)
            for component, module in self.trained.items()
            for name, param in module.named_parameters()
            if param.requires_grad
        ]

    def sampling_pipeline(self) -> Any:
        """The pipeline without its text encoders (samples come from cached embeddings), so
        the pipeline runs on the denoiser's device even when the encoders are elsewhere."""
        import inspect

        parts = dict(self.pipe.components)
        for name in ("text_encoder", "text_encoder_2"):
            if name in parts:
                parts[name] = None
        cls = type(self.pipe)
        if "requires_safety_checker" in inspect.signature(cls.__init__).parameters:
            parts["requires_safety_checker"] = False
        pipe = cls(**parts)
        pipe.set_progress_bar_config(disable=True)
        return pipe

    def offload_text_encoders(self) -> None:
        """Move frozen text encoders to the CPU once every caption is cached."""
        if "text_encoder" in self.trained or "text_encoder_2" in self.trained:
            return
        for encoder in self.text_encoders:
            encoder.to("cpu")
        self.text_device = "cpu"


def resolve_base_model(recipe: TrainRecipe, *, allow_pickle: bool = False) -> ModelSource:
    """Check the base model exists and matches the family, before any loading."""
    return resolve_model(recipe.model, recipe.family, allow_pickle=allow_pickle)


def load_train_model(
    recipe: TrainRecipe,
    source: ModelSource,
    device: Any,
    *,
    lora_seed: int,
    config: str | Path | None = None,
) -> TrainModel:
    """Load the base model on ``device`` in the training dtype, frozen, with LoRA layers.

    ``lora_seed`` seeds the LoRA initialisation (kaiming-uniform A, zero B), so a run starts
    from the same weights wherever it runs. ``config`` replaces the shipped config folder of
    a single-file checkpoint whose architecture is not the real one (tiny test models).
    """
    import torch

    weight_dtype = getattr(torch, WEIGHT_DTYPES[recipe.mixed_precision])
    pipe = load_pipeline(source, device="cpu", dtype=weight_dtype, config=config)
    return prepare_train_model(pipe, source, recipe, device, lora_seed=lora_seed)


def prepare_train_model(
    pipe: Any, source: ModelSource, recipe: TrainRecipe, device: Any, *, lora_seed: int
) -> TrainModel:
    """Freeze a loaded pipeline, inject the LoRA layers, move it to ``device``.

    The pipeline's weights are in the training dtype already; the VAE goes to fp32 and the
    LoRA weights stay fp32.
    """
    import torch

    weight_dtype = getattr(torch, WEIGHT_DTYPES[recipe.mixed_precision])
    for component in pipe.components.values():
        if isinstance(component, torch.nn.Module):
            component.requires_grad_(False)
    if pipe.vae.dtype != torch.float32:
        with quiet_loading():
            pipe.vae.to(dtype=torch.float32)
    model = TrainModel(pipe, source, recipe.family, device, weight_dtype, text_device=device)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(lora_seed)
        if recipe.train_unet:
            denoiser = DENOISERS[recipe.family]
            _add_lora(model.denoiser, recipe, recipe.unet_targets(), "lora_targets")
            model.trained[denoiser] = model.denoiser
        if recipe.train_text_encoder:
            # CLIP only: FLUX's T5 is never trained (kohya and diffusers do the same).
            encoders = ["text_encoder", "text_encoder_2"] if recipe.family == "sdxl" else []
            encoders = encoders or ["text_encoder"]
            for name in encoders:
                module = getattr(pipe, name)
                _add_lora(module, recipe, recipe.te_targets(), "text_encoder_targets")
                model.trained[name] = module
    for _, param in model.trainable_parameters():
        param.data = param.data.float()
    if recipe.gradient_checkpointing:
        model.denoiser.enable_gradient_checkpointing()
        for name in ("text_encoder", "text_encoder_2"):
            if name in model.trained:
                model.trained[name].gradient_checkpointing_enable()
    for component in pipe.components.values():
        if isinstance(component, torch.nn.Module):
            component.to(device)
    return model


def _add_lora(module: Any, recipe: TrainRecipe, targets: tuple[str, ...], field_name: str) -> None:
    from peft import LoraConfig

    config = LoraConfig(
        r=recipe.rank,
        lora_alpha=recipe.alpha,
        lora_dropout=recipe.lora_dropout,
        init_lora_weights=True,
        target_modules=list(targets),
    )
    try:
        module.add_adapter(config)
    except ValueError as exc:  # peft: "Target modules {...} not found in the base model"
        raise RecipeError(
            field_name,
            list(targets),
            f"matches no layer of the {type(module).__name__} ({exc}); name module suffixes "
            "such as to_q, ff.net.2",
        ) from None
