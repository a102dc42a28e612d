"""Instruction edits ("turn her head to the left") with an image-edit model in a diffusers folder.

Supported pipelines: Qwen-Image-Edit (2509 "Plus" too), FLUX.1 Kontext and InstructPix2Pix
(SD1.5 and SDXL). All are called the same way: the instruction as the prompt, the image, a step
count and a seeded generator; everything else keeps the pipeline's own defaults. LoRAs made for
the edit model (community angle LoRAs for Qwen-Image-Edit-2509, say) load through the
pipeline's own ``load_lora_weights`` at their strengths. Example::

    engine = DiffusersEngine(edit_model="~/models/qwen-image-edit-2509")
    edited = engine.edit(Image.open("front.png"), "turn the head to the left, same person")
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import Any

from PIL import Image

from likeness.engines.base import EngineCannotHonour
from likeness.engines.diffusers.loading import pipeline_class_name, refuse_pickle_weights
from likeness.recipes import LoraSpec

EDIT_PIPELINES = (
    "QwenImageEditPipeline",
    "QwenImageEditPlusPipeline",
    "FluxKontextPipeline",
    "StableDiffusionInstructPix2PixPipeline",
    "StableDiffusionXLInstructPix2PixPipeline",
)


@dataclass(frozen=True)
class EditSettings:
    """How edits run: sampling ``steps``, the ``seed`` of the noise and the edit model's
    ``loras`` (files and strengths)."""

    steps: int = 30
    seed: int = 0
    loras: tuple[LoraSpec, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "loras", tuple(self.loras))


def check_edit_model(model: str, *, allow_pickle: bool = False) -> str:
    """The pipeline class of the edit model folder ``model``; refuses anything else."""
    path = Path(model).expanduser()
    index = path / "model_index.json"
    if not index.is_file():
        raise EngineCannotHonour(
            "edit_model", model, "is not a diffusers folder (no model_index.json)"
        )
    class_name = pipeline_class_name(index, "edit_model", model)
    if class_name not in EDIT_PIPELINES:
        raise EngineCannotHonour(
            "edit_model",
            model,
            f"holds a {class_name or 'unknown pipeline'}, not an instruction-edit model "
            f"({', '.join(EDIT_PIPELINES)})",
        )
    if not allow_pickle:
        try:
            refuse_pickle_weights(path)
        except EngineCannotHonour as exc:
            raise EngineCannotHonour("edit_model", model, exc.reason) from None
    return class_name


def run_edit(
    pipe: Any, image: Image.Image, instruction: str, settings: EditSettings
) -> tuple[Image.Image, dict[str, Any]]:
    """Edit ``image``; returns the result and the provenance of the edit (no recipe)."""
    import torch

    start = time.perf_counter()
    result = pipe(
        prompt=instruction,
        image=image.convert("RGB"),
        num_inference_steps=settings.steps,
        generator=torch.Generator("cpu").manual_seed(settings.seed),
        output_type="pil",
    ).images[0]
    provenance = {
        "schema": 1,
        "kind": "edit",
        "instruction": instruction,
        "prompt": instruction,
        "seed": settings.seed,
        "steps": settings.steps,
        "input_size": [image.width, image.height],
        "width": result.width,
        "height": result.height,
        "timings": {"edit_s": round(time.perf_counter() - start, 4)},
        "pipeline": type(pipe).__name__,
    }
    return result, provenance


def edit_model_info(model: str, class_name: str) -> dict[str, Any]:
    return {"name": PurePath(model).name, "path": model, "sha256": None, "pipeline": class_name}


def edit_lora_info(loras: tuple[LoraSpec, ...], shas: list[str]) -> list[dict[str, Any]]:
    """The provenance entries of the LoRAs an edit ran with, in order."""
    return [
        {"name": PurePath(lo.path).name, "path": lo.path, "strength": lo.strength, "sha256": sha}
        for lo, sha in zip(loras, shas, strict=True)
    ]
