"""Find and load a model: a single-file checkpoint or a diffusers folder, fully offline.

Single-file SDXL and SD1.5 checkpoints (the `.safetensors` files model sites publish) load with
``from_single_file(path, config=<shipped config folder>)``: the configs and the real CLIP
tokenizers ship inside this package (``configs/``), so no model hub is ever contacted. FLUX
loads from a diffusers folder. Pickle files (``.ckpt .pt .bin .pth``) can run code when
loaded; they are refused unless the caller allows them explicitly.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from likeness.engines.base import EngineCannotHonour

CONFIG_ROOT = Path(__file__).parent / "configs"
PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin")
PIPELINE_CLASSES = {
    "sdxl": "StableDiffusionXLPipeline",
    "sd15": "StableDiffusionPipeline",
    "flux": "FluxPipeline",
    "qwen_image_edit": "QwenImageEditPipeline",
}


@dataclass(frozen=True)
class ModelSource:
    """Where weights come from: ``kind`` is "single_file" or "folder"."""

    kind: str
    path: Path
    family: str


def config_folder(family: str) -> Path:
    """The shipped config-only diffusers folder for single-file checkpoints of ``family``."""
    folder = CONFIG_ROOT / family
    if not (folder / "model_index.json").is_file():
        raise EngineCannotHonour(
            "family", family, "has no shipped single-file config; use a diffusers folder"
        )
    return folder


def resolve_model(model: str, family: str, *, allow_pickle: bool = False) -> ModelSource:
    """Check that ``model`` is something this engine can load for ``family``; no loading yet."""
    path = Path(model).expanduser()
    if not model.strip():
        raise EngineCannotHonour("model", model, "is empty; set a checkpoint file or folder")
    if not path.exists():
        raise EngineCannotHonour(
            "model",
            model,
            "does not exist; pass a .safetensors checkpoint or a diffusers folder",
        )
    if path.is_dir():
        index = path / "model_index.json"
        if not index.is_file():
            raise EngineCannotHonour(
                "model", model, "is a folder without model_index.json; not a diffusers pipeline"
            )
        class_name = pipeline_class_name(index, "model", model)
        expected = PIPELINE_CLASSES[family]
        if class_name != expected:
            raise EngineCannotHonour(
                "family",
                family,
                f"does not match the folder's pipeline {class_name}; expected {expected}",
            )
        if not allow_pickle:
            refuse_pickle_weights(path)
        return ModelSource("folder", path, family)
    suffix = path.suffix.lower()
    if suffix in PICKLE_SUFFIXES and not allow_pickle:
        raise EngineCannotHonour(
            "model",
            model,
            "is a pickle file (it can run code when loaded); convert it to .safetensors "
            "or pass --allow-pickle",
        )
    if suffix not in (".safetensors", *PICKLE_SUFFIXES):
        raise EngineCannotHonour(
            "model", model, "is not a .safetensors checkpoint or a diffusers folder"
        )
    if family in ("flux", "qwen_image_edit"):
        raise EngineCannotHonour(
            "model", model, f"is a single file; {family} loads from a diffusers folder here"
        )
    config_folder(family)
    if suffix == ".safetensors":
        found = _checkpoint_family(path)
        if found is not None and found != family:
            raise EngineCannotHonour(
                "family", family, f"does not match {path.name}, which holds a {found} model"
            )
    return ModelSource("single_file", path, family)


def pipeline_class_name(index: Path, field: str, model: str) -> str:
    """The ``_class_name`` in a diffusers folder's ``model_index.json`` ("" when absent);
    a file that is not a JSON object is refused naming ``field``."""
    try:
        data = json.loads(index.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise EngineCannotHonour(
            field, model, f"has an unreadable {index.name} ({exc}); re-download the folder"
        ) from None
    if not isinstance(data, dict):
        raise EngineCannotHonour(field, model, f"has a {index.name} that is not a JSON object")
    return str(data.get("_class_name") or "")


# Tensor names that tell the model family of an original-layout checkpoint.
_FAMILY_MARKERS = (
    ("double_blocks.", "flux"),
    ("conditioner.embedders.1.model.", "sdxl"),
    ("conditioner.embedders.0.model.", "sdxl refiner"),
    ("cond_stage_model.model.", "sd2"),
    ("cond_stage_model.transformer.", "sd15"),
)


def _checkpoint_family(path: Path) -> str | None:
    """The family a single-file checkpoint's tensor names point to, or None when unclear."""
    from likeness.engines.diffusers.loras import safetensors_keys

    try:
        keys = safetensors_keys(path)
    except (OSError, ValueError) as exc:
        raise EngineCannotHonour(
            "model", str(path), f"is not a readable safetensors file ({exc})"
        ) from None
    for marker, family in _FAMILY_MARKERS:
        if any(marker in key for key in keys):
            return family
    return None


def refuse_pickle_weights(folder: Path) -> None:
    """Refuse a diffusers folder whose components have only pickle weights (.bin/.pt)."""
    for sub in folder.iterdir():
        if not sub.is_dir():
            continue
        weights = [p for p in sub.iterdir() if p.suffix in (".safetensors", *PICKLE_SUFFIXES)]
        if weights and not any(p.suffix == ".safetensors" for p in weights):
            raise EngineCannotHonour(
                "model",
                str(folder),
                f"has only pickle weights in {sub.name}/; convert them to .safetensors "
                "or pass --allow-pickle",
            )


def load_pipeline(
    source: ModelSource,
    *,
    device: str,
    dtype: Any,
    config: str | Path | None = None,
) -> Any:
    """Load the text-to-image pipeline of ``source`` on ``device`` in ``dtype``, offline.

    ``config`` overrides the shipped config folder for single files (a checkpoint whose
    architecture differs from the real model, as in tests).
    """
    import diffusers

    cls = getattr(diffusers, PIPELINE_CLASSES[source.family])
    with quiet_loading():
        pipe = _load(cls, source, dtype, config)
    pipe.to(device)
    for component in pipe.components.values():
        if hasattr(component, "eval"):
            component.eval()
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _load(cls: Any, source: ModelSource, dtype: Any, config: str | Path | None) -> Any:
    if source.kind == "folder":
        from likeness.engines.diffusers.edit import pipeline_overrides

        return cls.from_pretrained(
            str(source.path),
            dtype=dtype,
            local_files_only=True,
            use_safetensors=_safetensors_everywhere(source.path),
            **pipeline_overrides(source.path, PIPELINE_CLASSES[source.family]),
        )
    return cls.from_single_file(
        str(source.path),
        config=str(config or config_folder(source.family)),
        dtype=dtype,
        local_files_only=True,
    )


@contextlib.contextmanager
def quiet_loading() -> Iterator[None]:
    """No per-component progress bars while loading or saving (the CLI draws its own)."""
    from diffusers.utils import logging as dlog
    from transformers.utils import logging as tlog

    d_on, t_on = dlog.is_progress_bar_enabled(), tlog.is_progress_bar_enabled()
    dlog.disable_progress_bar()
    tlog.disable_progress_bar()
    try:
        yield
    finally:
        if d_on:
            dlog.enable_progress_bar()
        if t_on:
            tlog.enable_progress_bar()


def _safetensors_everywhere(folder: Path) -> bool | None:
    """True when every component with weights has a ``.safetensors`` file (then nothing else
    is read); None for a folder where some component has only pickles, which diffusers then
    loads component by component, safetensors first. Such a folder gets this far only with
    --allow-pickle (``refuse_pickle_weights``)."""
    for sub in folder.iterdir():
        if not sub.is_dir():
            continue
        suffixes = {p.suffix for p in sub.iterdir()}
        if suffixes & set(PICKLE_SUFFIXES) and ".safetensors" not in suffixes:
            return None
    return True
