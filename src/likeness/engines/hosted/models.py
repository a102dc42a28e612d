"""The hosted models Likeness maps a recipe onto, and the mapping itself.

| recipe field            | Replicate black-forest-labs/flux-dev-lora | fal fal-ai/flux-lora          |
|-------------------------|-------------------------------------------|-------------------------------|
| prompt + trigger        | prompt (``build_prompt``)                 | prompt                        |
| seed (+ i per image)    | seed                                      | seed                          |
| steps                   | num_inference_steps (1-50)                | num_inference_steps (1-50)    |
| cfg                     | guidance (0-10)                           | guidance_scale (0-35)         |
| width, height           | aspect_ratio (a listed ratio, <= 1% off)  | image_size {width, height}    |
| loras[0].path, strength | lora_weights, lora_scale (one LoRA)       | loras [{path, scale}, ...]    |
| engine_inputs.<engine>  | sent as they are (go_fast, megapixels...) | sent as they are              |

Sent unless ``engine_inputs`` says otherwise: Replicate ``output_format = "png"``,
``output_quality = 100``, ``go_fast = false``, ``num_outputs = 1``; fal ``output_format = "png"``,
``num_images = 1``, ``enable_safety_checker = true``. One prediction is made per image, so
every image has its own seed and its own provenance.

``check_recipe`` refuses, before any work, what these models cannot do: another family than
FLUX, a negative prompt (FLUX dev has none), a sampler or scheduler other than the model's own
(euler, simple), refiner / detailer / upscale / identity passes, more LoRAs than the model
takes, a local LoRA file where the provider cannot fetch one, and an ``engine_inputs`` key that
a recipe field already sets.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from likeness.engines.base import EngineCannotHonour
from likeness.recipes import Recipe, build_prompt

VERSION_ID = re.compile(r"^[0-9a-f]{64}$")
MODEL_REF = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


@dataclass(frozen=True)
class HostedModel:
    """What one hosted model takes: its input names, ranges and defaults."""

    provider: str
    name: str
    steps: tuple[int, int]
    guidance: tuple[float, float]
    guidance_input: str
    max_loras: int
    aspect_ratios: tuple[str, ...] = ()
    """Empty: the model takes a width and height (``image_size``)."""
    defaults: Mapping[str, Any] = field(default_factory=dict)
    reserved: frozenset[str] = frozenset()
    """Inputs a recipe field sets; ``engine_inputs`` may not set them too."""
    local_loras: bool = False
    """True when a local LoRA file can be uploaded first (fal storage)."""


REPLICATE_FLUX_DEV_LORA = HostedModel(
    provider="replicate",
    name="black-forest-labs/flux-dev-lora",
    steps=(1, 50),
    guidance=(0.0, 10.0),
    guidance_input="guidance",
    max_loras=1,
    aspect_ratios=(
        "1:1",
        "16:9",
        "21:9",
        "3:2",
        "2:3",
        "4:5",
        "5:4",
        "3:4",
        "4:3",
        "9:16",
        "9:21",
    ),  # fmt: skip
    defaults={"output_format": "png", "output_quality": 100, "go_fast": False, "num_outputs": 1},
    reserved=frozenset(
        {
            "prompt",
            "seed",
            "num_inference_steps",
            "guidance",
            "aspect_ratio",
            "lora_weights",
            "lora_scale",
            "width",
            "height",
        }
    ),  # fmt: skip
)
FAL_FLUX_LORA = HostedModel(
    provider="fal",
    name="fal-ai/flux-lora",
    steps=(1, 50),
    guidance=(0.0, 35.0),
    guidance_input="guidance_scale",
    max_loras=5,
    defaults={"output_format": "png", "num_images": 1, "enable_safety_checker": True},
    reserved=frozenset(
        {"prompt", "seed", "num_inference_steps", "guidance_scale", "image_size", "loras"}
    ),  # fmt: skip
    local_loras=True,
)
MODELS = {(m.provider, m.name): m for m in (REPLICATE_FLUX_DEV_LORA, FAL_FLUX_LORA)}


@dataclass(frozen=True)
class ModelRef:
    """``owner/name`` with an optional pinned ``version`` (Replicate ``owner/name:id``)."""

    name: str
    version: str | None = None

    def __str__(self) -> str:
        return f"{self.name}:{self.version}" if self.version else self.name


def parse_model(provider: str, text: str) -> ModelRef:
    name, _, version = text.strip().partition(":")
    if not MODEL_REF.match(name):
        raise EngineCannotHonour(
            "model",
            text,
            f"is not a {provider} model name; write owner/name (e.g. {_supported(provider)[0]})",
        )
    if version and (provider != "replicate" or not VERSION_ID.match(version)):
        raise EngineCannotHonour(
            "model", text, "has a version that is not a 64-hex Replicate version id"
        )
    return ModelRef(name, version or None)


def _supported(provider: str) -> list[str]:
    return [m.name for m in MODELS.values() if m.provider == provider]


def model_for(provider: str, recipe: Recipe) -> tuple[HostedModel, ModelRef]:
    recipe.require_model()
    ref = parse_model(provider, recipe.model)
    spec = MODELS.get((provider, ref.name))
    if spec is None:
        raise EngineCannotHonour(
            "model",
            recipe.model,
            f"is not a model the {provider} engine maps; supported: "
            f"{', '.join(_supported(provider))} (see docs/hosted.md)",
        )
    return spec, ref


def is_remote(path: str) -> bool:
    """A LoRA the provider fetches itself: a URL, or a hub path like ``owner/model``."""
    text = path.strip()
    if text.startswith(("http://", "https://")):
        return True
    if text.startswith(("huggingface.co/", "civitai.com/")):
        return True
    local = Path(text).expanduser()
    if text.startswith(("/", "~", ".")) or local.suffix in (".safetensors", ".ckpt", ".pt"):
        return False
    return bool(re.match(r"^[\w.-]+/[\w.-]+(/[\w.-]+)?$", text)) and not local.exists()


def nearest_ratio(width: int, height: int, ratios: tuple[str, ...]) -> tuple[str, float]:
    """The listed ratio closest to ``width:height`` and how far off it is (relative)."""
    want = width / height
    best, off = ratios[0], float("inf")
    for ratio in ratios:
        a, b = ratio.split(":")
        diff = abs(int(a) / int(b) - want) / want
        if diff < off:
            best, off = ratio, diff
    return best, off


def check_recipe(provider: str, recipe: Recipe) -> HostedModel:
    """Raise EngineCannotHonour for the first field the hosted model cannot run."""
    spec, _ = model_for(provider, recipe)
    where = f"{spec.name} on {provider}"
    if recipe.family != "flux":
        raise EngineCannotHonour("family", recipe.family, f"is not what {where} runs; set 'flux'")
    if recipe.negative.strip():
        raise EngineCannotHonour(
            "negative",
            recipe.negative,
            f"cannot be honoured: {where} (FLUX dev) has no negative prompt; leave it empty",
        )
    if recipe.sampler != "euler":
        raise EngineCannotHonour(
            "sampler", recipe.sampler, f"is not {where}'s sampler; set 'euler' (its own)"
        )
    if recipe.scheduler != "simple":
        raise EngineCannotHonour(
            "scheduler", recipe.scheduler, f"is not {where}'s schedule; set 'simple' (its own)"
        )
    for name in ("refiner", "detailer", "upscale", "identity"):
        if getattr(recipe, name).enabled:
            raise EngineCannotHonour(
                f"{name}.enabled", True, f"is a pass {where} cannot run; set it to false"
            )
    low, high = spec.steps
    if not low <= recipe.steps <= high:
        raise EngineCannotHonour("steps", recipe.steps, f"must be {low}-{high} on {where}")
    glow, ghigh = spec.guidance
    if not glow <= recipe.cfg <= ghigh:
        raise EngineCannotHonour("cfg", recipe.cfg, f"must be {glow:g}-{ghigh:g} on {where}")
    if spec.aspect_ratios:
        ratio, off = nearest_ratio(recipe.width, recipe.height, spec.aspect_ratios)
        if off > 0.01:
            raise EngineCannotHonour(
                "width",
                f"{recipe.width}x{recipe.height}",
                f"is not an aspect ratio {where} offers; nearest is {ratio} "
                f"({', '.join(spec.aspect_ratios)})",
            )
    if len(recipe.loras) > spec.max_loras:
        raise EngineCannotHonour(
            "loras", len(recipe.loras), f"{where} takes at most {spec.max_loras} LoRA(s)"
        )
    for index, lora in enumerate(recipe.loras):
        if is_remote(lora.path):
            continue
        if not spec.local_loras:
            raise EngineCannotHonour(
                f"loras.{index}.path",
                lora.path,
                f"is a local file and {where} fetches LoRAs itself from a URL, a Replicate model "
                "(owner/name) or a Hugging Face path; its file uploads need the account token, "
                "so put the file on Hugging Face (or any HTTPS host) and name its URL",
            )
        if not Path(lora.path).expanduser().is_file():
            raise EngineCannotHonour(
                f"loras.{index}.path", lora.path, "is not a file, a URL or a hub path"
            )
        if Path(lora.path).suffix != ".safetensors":
            raise EngineCannotHonour(
                f"loras.{index}.path", lora.path, "must be a .safetensors file to be uploaded"
            )
    for engine in recipe.engine_inputs:
        if engine != provider:
            continue
        clash = sorted(set(recipe.engine_inputs[engine]) & spec.reserved)
        if clash:
            raise EngineCannotHonour(
                f"engine_inputs.{engine}.{clash[0]}",
                recipe.engine_inputs[engine][clash[0]],
                "is set by a recipe field (prompt, seed, steps, cfg, width/height, loras); "
                "change that field instead",
            )
    return spec


def build_inputs(
    spec: HostedModel, recipe: Recipe, seed: int, lora_urls: list[str]
) -> dict[str, Any]:
    """The model's input for one image of ``recipe`` with ``seed`` (LoRA paths resolved)."""
    inputs: dict[str, Any] = dict(spec.defaults)
    inputs.update(recipe.engine_inputs.get(spec.provider, {}))
    inputs["prompt"] = build_prompt(recipe)
    inputs["seed"] = seed
    inputs["num_inference_steps"] = recipe.steps
    inputs[spec.guidance_input] = recipe.cfg
    if spec.provider == "replicate":
        inputs["aspect_ratio"] = nearest_ratio(recipe.width, recipe.height, spec.aspect_ratios)[0]
        if recipe.loras:
            inputs["lora_weights"] = lora_urls[0]
            inputs["lora_scale"] = recipe.loras[0].strength
    else:
        inputs["image_size"] = {"width": recipe.width, "height": recipe.height}
        inputs["loras"] = [
            {"path": url, "scale": lora.strength}
            for url, lora in zip(lora_urls, recipe.loras, strict=True)
        ]
    return inputs
