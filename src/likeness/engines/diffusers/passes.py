"""The passes after the first sampling: latent refiner, face detailer, upscale.

Each pass is a function over a pipeline (or model) and images, so it can be run and tested
alone. Steps follow ComfyUI's KSampler meaning: ``steps`` sampling steps at ``denoise``
(the last ``steps`` steps of a ``steps / denoise`` schedule), not diffusers' "steps x strength".
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from likeness.recipes import DetailerPass

FaceFinder = Callable[[Image.Image], "tuple[float, float, float, float] | None"]


def denoise_schedule(steps: int, denoise: float) -> tuple[int, float]:
    """(num_inference_steps, strength) so that diffusers runs exactly ``steps`` steps at
    ``denoise``: ``denoise_schedule(15, 0.25) == (60, 0.25...)``."""
    total = max(steps, int(steps / denoise))
    strength = min(1.0, (steps + 1e-4) / total)
    return total, strength


def refine_latents(
    img2img: Any,
    latents: Any,
    *,
    prompt: list[str],
    negative: list[str] | None,
    steps: int,
    denoise: float,
    cfg: float,
    generators: list[Any],
    output_type: str = "pil",
    callback: Any = None,
    extra: dict[str, Any] | None = None,
) -> Any:
    """Run ``img2img`` on the first pass's latents (not on decoded pixels)."""
    total, strength = denoise_schedule(steps, denoise)
    kwargs: dict[str, Any] = dict(extra or {})
    if negative is not None:
        kwargs["negative_prompt"] = negative
    if callback is not None:
        kwargs["callback_on_step_end"] = callback
    return img2img(
        prompt=prompt,
        image=latents,
        strength=strength,
        num_inference_steps=total,
        guidance_scale=cfg,
        generator=generators,
        output_type=output_type,
        **kwargs,
    ).images


def find_subject_face(image: Image.Image) -> tuple[float, float, float, float] | None:
    """Box (x0, y0, x1, y1) of the subject's face with the dlib analyzer, or None."""
    from likeness.faces import DlibAnalyzer, select_subject

    faces = DlibAnalyzer().analyze(np.asarray(image.convert("RGB")))
    index = select_subject(faces, image.width, image.height)
    if index is None:
        return None
    box = faces[index].box
    return (box.x0, box.y0, box.x1, box.y1)


@dataclass(frozen=True)
class DetailResult:
    """The detailed image and where it worked: ``face`` box and the ``region`` re-sampled
    (both None when no face was found and the image came back unchanged)."""

    image: Image.Image
    face: tuple[float, float, float, float] | None
    region: tuple[int, int, int, int] | None


def detail_face(
    inpaint: Any,
    image: Image.Image,
    settings: DetailerPass,
    *,
    prompt: str,
    negative: str | None,
    cfg: float,
    generator: Any,
    find_face: FaceFinder = find_subject_face,
    multiple: int = 8,
    callback: Any = None,
) -> DetailResult:
    """Find the subject's face, re-sample it at ``guide_size`` and paste it back.

    1. crop the face box plus ``padding`` (fraction of the box) on each side;
    2. resize the crop so its long side is ``guide_size`` (a multiple of ``multiple``);
    3. inpaint the face box inside it at ``denoise``;
    4. resize back and paste the face box with a ``feather``-pixel soft edge.
    Pixels outside the padded face box are never changed.
    """
    image = image.convert("RGB")
    face = find_face(image)
    if face is None:
        return DetailResult(image, None, None)
    # 1. Crop region.
    x0, y0, x1, y1 = face
    region = padded_region(face, settings.padding, image.width, image.height)
    crop = image.crop(region)
    # 2. Upsample to the guide size.
    size = guide_resize(crop.size, settings.guide_size, multiple)
    crop_big = crop.resize(size, Image.Resampling.LANCZOS)
    # The face box inside the crop, feathered: the inpaint mask and the paste mask.
    local = (x0 - region[0], y0 - region[1], x1 - region[0], y1 - region[1])
    mask_small = feathered_box(crop.size, local, settings.feather)
    mask_big = mask_small.resize(size, Image.Resampling.BILINEAR)
    # 3. Inpaint.
    total, strength = denoise_schedule(settings.steps, settings.denoise)
    kwargs: dict[str, Any] = {}
    if negative is not None:
        kwargs["negative_prompt"] = negative
    if callback is not None:
        kwargs["callback_on_step_end"] = callback
    out = inpaint(
        prompt=prompt,
        image=crop_big,
        mask_image=mask_big,
        width=size[0],
        height=size[1],
        strength=strength,
        num_inference_steps=total,
        guidance_scale=cfg,
        generator=generator,
        output_type="pil",
        **kwargs,
    ).images[0]
    # 4. Paste back.
    back = out.convert("RGB").resize(crop.size, Image.Resampling.LANCZOS)
    result = image.copy()
    result.paste(Image.composite(back, crop, mask_small), region[:2])
    return DetailResult(result, face, region)


def padded_region(
    face: tuple[float, float, float, float], padding: float, width: int, height: int
) -> tuple[int, int, int, int]:
    """The face box grown by ``padding`` (a fraction of its size) on each side, clipped to the
    ``width`` x ``height`` image, in whole pixels."""
    x0, y0, x1, y1 = face
    pad_x, pad_y = (x1 - x0) * padding, (y1 - y0) * padding
    return (
        max(0, math.floor(x0 - pad_x)),
        max(0, math.floor(y0 - pad_y)),
        min(width, math.ceil(x1 + pad_x)),
        min(height, math.ceil(y1 + pad_y)),
    )


def guide_resize(size: tuple[int, int], guide_size: int, multiple: int) -> tuple[int, int]:
    """``size`` scaled so its long side is ``guide_size``, each side a multiple of ``multiple``."""
    scale = guide_size / max(size)
    width, height = (max(multiple, round(s * scale / multiple) * multiple) for s in size)
    return width, height


def feathered_box(
    size: tuple[int, int], box: tuple[float, float, float, float], feather: int
) -> Image.Image:
    """White box on black, shrunk by ``feather`` and blurred so it fades over ``feather`` px."""
    mask = Image.new("L", size, 0)
    inset = feather / 2
    ImageDraw.Draw(mask).rectangle(
        [box[0] + inset, box[1] + inset, box[2] - inset - 1, box[3] - inset - 1], fill=255
    )
    if feather > 0:
        mask = mask.filter(ImageFilter.GaussianBlur(feather / 2))
    return mask


# -- upscale ----------------------------------------------------------------------------
def load_upscaler(path: str, device: str) -> Any:
    """An upscaler model (ESRGAN, SwinIR, ...) from a file, through spandrel."""
    spandrel = import_spandrel()
    model = spandrel.ModelLoader(device=device).load_from_file(Path(path).expanduser())
    return model.eval()


def upscale_image(
    image: Image.Image,
    factor: float,
    model: Any = None,
    *,
    tile: int = 512,
    overlap: int = 32,
) -> Image.Image:
    """Upscale with ``model`` (then resize to ``factor`` if the model's scale differs), or a
    plain Lanczos resize by ``factor``.

    The model runs on ``tile``-pixel tiles that overlap by ``overlap`` pixels (only each tile's
    centre is kept), so a 832x1216 image at 4x fits in a few GB of (V)RAM, as in ComfyUI.
    """
    target = (round(image.width * factor), round(image.height * factor))
    if model is None:
        return image.resize(target, Image.Resampling.LANCZOS)
    arr = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
    height, width = arr.shape[:2]
    scale = model.scale
    out = np.zeros((height * scale, width * scale, 3), dtype=np.float32)
    step = max(1, tile - 2 * overlap) if max(height, width) > tile else max(height, width)
    for y0 in range(0, height, step):
        for x0 in range(0, width, step):
            y1, x1 = min(height, y0 + step), min(width, x0 + step)
            py0, px0 = max(0, y0 - overlap), max(0, x0 - overlap)
            py1, px1 = min(height, y1 + overlap), min(width, x1 + overlap)
            up = _run_upscaler(model, arr[py0:py1, px0:px1])
            oy, ox = (y0 - py0) * scale, (x0 - px0) * scale
            out[y0 * scale : y1 * scale, x0 * scale : x1 * scale] = up[
                oy : oy + (y1 - y0) * scale, ox : ox + (x1 - x0) * scale
            ]
    result = Image.fromarray((out * 255.0).round().astype(np.uint8))
    if result.size != target:
        result = result.resize(target, Image.Resampling.LANCZOS)
    return result


def _run_upscaler(model: Any, tile: Any) -> Any:
    import torch

    tensor = torch.from_numpy(np.ascontiguousarray(tile)).permute(2, 0, 1)[None]
    param = next(model.model.parameters())
    with torch.inference_mode():
        out = model(tensor.to(param.device, param.dtype)).float().clamp(0, 1)
    return out[0].permute(1, 2, 0).cpu().numpy()


def import_spandrel() -> Any:
    """Import spandrel; if torchvision (used by two architectures only) cannot be imported,
    import it with a placeholder so the other architectures still load."""
    import importlib
    import sys
    import types

    try:
        return importlib.import_module("spandrel")
    except (ImportError, RuntimeError):
        for name in [m for m in sys.modules if m == "spandrel" or m.startswith("spandrel.")]:
            del sys.modules[name]
    saved = {k: sys.modules.get(k) for k in ("torchvision", "torchvision.transforms")}
    saved["torchvision.transforms.functional"] = sys.modules.get(
        "torchvision.transforms.functional"
    )

    def _missing(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("this upscaler architecture needs torchvision, which is not usable")

    functional = types.ModuleType("torchvision.transforms.functional")
    functional.normalize = _missing  # type: ignore[attr-defined]
    functional.rotate = _missing  # type: ignore[attr-defined]
    functional.InterpolationMode = type("InterpolationMode", (), {})  # type: ignore[attr-defined]
    transforms = types.ModuleType("torchvision.transforms")
    transforms.functional = functional  # type: ignore[attr-defined]
    root = types.ModuleType("torchvision")
    root.transforms = transforms  # type: ignore[attr-defined]
    sys.modules.update(
        {
            "torchvision": root,
            "torchvision.transforms": transforms,
            "torchvision.transforms.functional": functional,
        }
    )
    try:
        return importlib.import_module("spandrel")
    finally:
        for name, module in saved.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module
