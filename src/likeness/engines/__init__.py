"""Generation engines behind one protocol (see :mod:`likeness.engines.base`).

``get_engine("diffusers")`` runs models from local files; ``get_engine("comfyui",
comfy_url="http://127.0.0.1:8188")`` drives a ComfyUI server; ``get_engine("replicate")`` and
``get_engine("fal")`` run hosted FLUX LoRA models. Engines import their heavy dependencies only
when built.
"""

from __future__ import annotations

from typing import Any

from likeness.engines.base import (
    Engine,
    EngineCannotHonour,
    EngineError,
    EnginePool,
    GeneratedImage,
    PoolResult,
    ProgressCallback,
    ProgressUpdate,
    build_provenance,
    image_seeds,
    resolve_seed,
    sha256_file,
)

ENGINE_NAMES = ("diffusers", "comfyui", "replicate", "fal")

__all__ = [
    "ENGINE_NAMES",
    "Engine",
    "EngineCannotHonour",
    "EngineError",
    "EnginePool",
    "GeneratedImage",
    "ProgressCallback",
    "PoolResult",
    "ProgressUpdate",
    "build_provenance",
    "get_engine",
    "image_seeds",
    "resolve_seed",
    "sha256_file",
]


def get_engine(
    name: str,
    *,
    comfy_url: str | None = None,
    allow_pickle: bool = False,
    **options: Any,
) -> Engine:
    """Build the engine called ``name``; options go to its constructor.

    diffusers: ``DiffusersEngine(allow_pickle=..., device=None, dtype=None)``;
    comfyui: ``ComfyUIEngine(url=comfy_url)``; replicate, fal: ``HostedEngine(name,
    settings=HostedSettings, max_images=None, max_cost=None)``.
    """
    if name == "diffusers":
        from likeness.engines.diffusers import DiffusersEngine

        return DiffusersEngine(allow_pickle=allow_pickle, **options)
    if name == "comfyui":
        if not comfy_url:
            raise ValueError("--comfy-url: a ComfyUI server URL is needed for engine 'comfyui'")
        from likeness.engines.comfyui import ComfyUIEngine

        return ComfyUIEngine(url=comfy_url, **options)
    if name in ("replicate", "fal"):
        from likeness.engines.hosted import HostedEngine

        return HostedEngine(name, **options)
    raise ValueError(f"engine: {name!r} is not one of {', '.join(ENGINE_NAMES)}")
