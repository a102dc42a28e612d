"""Instruction edits ("turn her head to the left") with an image-edit model in a diffusers folder.

Supported pipelines: Qwen-Image-Edit (2509 "Plus" too), FLUX.1 Kontext and InstructPix2Pix
(SD1.5 and SDXL). All are called the same way: the instruction as the prompt, the image, a step
count and a seeded generator; everything else keeps the pipeline's own defaults. LoRAs made for
the edit model (community angle LoRAs for Qwen-Image-Edit-2509, say) load through the
pipeline's own ``load_lora_weights`` at their strengths. Example::

    engine = DiffusersEngine(edit_model="~/models/qwen-image-edit-2509")
    edited = engine.edit(Image.open("front.png"), "turn the head to the left, same person")

Qwen-Image-Edit folders load with their processor replaced by :func:`qwen_processor`: the
``Qwen2VLProcessor`` transformers builds from the folder needs torchvision (its image and
video processors), which a CPU torch install does not have working. The replacement is the
same processor class with transformers' PIL image processor and no video processor, so the
real pipeline code runs unchanged (:func:`pipeline_overrides`).
"""

from __future__ import annotations

import functools
import json
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
    """How edits run: sampling ``steps``, the ``seed`` of the noise, the edit model's
    ``loras`` (files and strengths), and the output ``width``/``height`` (None: the
    pipeline's own choice, for Qwen-Image-Edit about a megapixel at the input's aspect)."""

    steps: int = 30
    seed: int = 0
    loras: tuple[LoraSpec, ...] = ()
    width: int | None = None
    height: int | None = None

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


QWEN_EDIT_PIPELINES = ("QwenImageEditPipeline", "QwenImageEditPlusPipeline")


@functools.cache
def _qwen_processor_class() -> Any:
    """Qwen2VLProcessor without a video processor (whose construction needs torchvision)."""
    from transformers import Qwen2VLProcessor
    from transformers.processing_utils import ProcessorMixin

    class QwenEditProcessor(Qwen2VLProcessor):
        """Qwen2VLProcessor for still images only: the edit pipelines never pass videos."""

        def __init__(self, image_processor: Any = None, tokenizer: Any = None,
                     chat_template: Any = None, **kwargs: Any) -> None:  # fmt: skip
            self.image_token = "<|image_pad|>"
            self.video_token = "<|video_pad|>"
            self.image_token_id = tokenizer.convert_tokens_to_ids(self.image_token)
            self.video_token_id = tokenizer.convert_tokens_to_ids(self.video_token)
            ProcessorMixin.__init__(self, image_processor, tokenizer, chat_template=chat_template)

    return QwenEditProcessor


def qwen_processor_from_parts(tokenizer: Any, min_pixels: int, max_pixels: int) -> Any:
    """A Qwen-VL processor for ``tokenizer`` whose PIL image processor keeps each image
    between ``min_pixels`` and ``max_pixels``."""
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import (
        Qwen2VLImageProcessorPil,
    )

    images = Qwen2VLImageProcessorPil(min_pixels=min_pixels, max_pixels=max_pixels)
    return _qwen_processor_class()(image_processor=images, tokenizer=tokenizer)


def qwen_processor(folder: str | Path) -> Any:
    """The processor of a Qwen-Image-Edit diffusers folder, built without torchvision: the
    folder's tokenizer, and its image-processor settings (patch size, pixel bounds,
    normalisation; from ``preprocessor_config.json`` or ``processor_config.json``) read
    into transformers' PIL image processor."""
    from transformers import Qwen2Tokenizer
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import (
        Qwen2VLImageProcessorPil,
    )

    folder = Path(folder).expanduser()
    part = folder / "processor"
    config = _image_processor_config(part)
    if config is None:
        raise EngineCannotHonour(
            "edit_model", str(folder), "has no processor/preprocessor_config.json; re-download it"
        )
    tokenizer = Qwen2Tokenizer.from_pretrained(str(part), local_files_only=True)
    keep = ("min_pixels", "max_pixels", "patch_size", "temporal_patch_size", "merge_size",
            "image_mean", "image_std", "do_resize", "do_rescale", "do_normalize",
            "rescale_factor", "do_convert_rgb", "size", "resample")  # fmt: skip
    images = Qwen2VLImageProcessorPil(**{k: v for k, v in config.items() if k in keep})
    return _qwen_processor_class()(image_processor=images, tokenizer=tokenizer)


def _image_processor_config(part: Path) -> dict[str, Any] | None:
    """The image-processor settings of a processor folder, in either file layout."""
    single = part / "preprocessor_config.json"
    if single.is_file():
        return json.loads(single.read_text(encoding="utf-8"))
    joint = part / "processor_config.json"
    if joint.is_file():
        found = json.loads(joint.read_text(encoding="utf-8")).get("image_processor")
        return found if isinstance(found, dict) else None
    return None


def pipeline_overrides(folder: str | Path, class_name: str) -> dict[str, Any]:
    """Components to pass to ``from_pretrained`` for the edit folder: the processor of a
    Qwen-Image-Edit folder (see the module docstring), nothing for the others."""
    if class_name in QWEN_EDIT_PIPELINES:
        return {"processor": qwen_processor(folder)}
    return {}


def write_qwen_folder_index(folder: Path) -> None:
    """Name the processor as a real Qwen-Image-Edit folder names it (transformers'
    Qwen2VLProcessor), after ``save_pretrained`` recorded the torchvision-free subclass."""
    index = folder / "model_index.json"
    data = json.loads(index.read_text(encoding="utf-8"))
    data["processor"] = ["transformers", "Qwen2VLProcessor"]
    index.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    for name in ("processor_config.json", "preprocessor_config.json", "tokenizer_config.json"):
        path = folder / "processor" / name
        if path.is_file():
            config = json.loads(path.read_text(encoding="utf-8"))
            if "processor_class" in config:
                config["processor_class"] = "Qwen2VLProcessor"
            if "image_processor_type" in config:
                config["image_processor_type"] = "Qwen2VLImageProcessor"
            path.write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")


def run_edit(
    pipe: Any, image: Image.Image, instruction: str, settings: EditSettings
) -> tuple[Image.Image, dict[str, Any]]:
    """Edit ``image``; returns the result and the provenance of the edit (no recipe)."""
    import torch

    start = time.perf_counter()
    size = {}
    if settings.width is not None and settings.height is not None:
        size = {"width": settings.width, "height": settings.height}
    result = pipe(
        prompt=instruction,
        image=image.convert("RGB"),
        num_inference_steps=settings.steps,
        generator=torch.Generator("cpu").manual_seed(settings.seed),
        output_type="pil",
        **size,
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
