"""The engine protocol every generator implements, and the shapes it returns.

An engine turns a :class:`~likeness.recipes.Recipe` into PNG images with provenance. It checks
the whole recipe *before* any work (``check`` raises :class:`EngineCannotHonour` naming the
field), so a batch never dies half-way on a field the engine cannot run.

Provenance (``GeneratedImage.provenance``, built by :func:`build_provenance`) is one plain dict::

    {"schema": 1, "recipe": {...recipe with this image's seed...}, "recipe_hash": "...",
     "seed": 42, "prompt": "zk1, a woman, ...", "negative": "...", "width": 832, "height": 1216,
     "model": {"name": "bigLove.safetensors", "path": "...", "sha256": "..." | None},
     "loras": [{"name": "zk1.safetensors", "path": "...", "strength": 0.7, "sha256": ... }],
     "engine": {"name": "diffusers", "version": "0.42.1", ...},
     "timings": {"load_s": 1.2, "sample_s": 8.1, ..., "total_s": 9.9},
     "likeness_version": "0.1.0"}
"""

from __future__ import annotations

import functools
import hashlib
import io
import os
import secrets
from collections.abc import Callable, Hashable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from likeness.recipes import Recipe, build_prompt

if TYPE_CHECKING:
    from PIL import Image

PROVENANCE_SCHEMA = 1
MAX_SEED = 2**64 - 1


class EngineCannotHonour(Exception):
    """The engine cannot run a recipe field; raised by ``check`` before any work starts."""

    def __init__(self, field: str, value: Any, reason: str) -> None:
        self.field = field
        self.value = value
        self.reason = reason
        super().__init__(f"{field}: {value!r} {reason}")


class EngineError(RuntimeError):
    """Generation failed while running (model file unreadable, server error, out of memory)."""


@dataclass(frozen=True)
class ProgressUpdate:
    """Where a run is: image ``image`` of ``images`` (0-based), step ``step`` of ``steps`` of
    the pass named ``stage`` ("load", "hash", "sample", "refiner", "detailer", "upscale"; an
    engine may name others, e.g. a server's node)."""

    image: int
    images: int
    step: int
    steps: int
    stage: str


ProgressCallback = Callable[[ProgressUpdate], None]


@dataclass(frozen=True)
class GeneratedImage:
    """One output: PNG bytes (with the provenance chunks written in), its seed and provenance."""

    png: bytes
    seed: int
    provenance: Mapping[str, Any]

    def image(self) -> Image.Image:
        """Decode the PNG into a PIL image."""
        from PIL import Image

        with Image.open(io.BytesIO(self.png)) as img:
            img.load()
            return img.copy()


@runtime_checkable
class Engine(Protocol):
    """What every generator (diffusers, ComfyUI, ...) offers.

    ``check(recipe)`` raises :class:`EngineCannotHonour` for the first field it cannot run;
    ``generate(recipe, n)`` makes ``n`` images with seeds ``recipe.seed + i`` (a recipe with
    ``seed = -1`` gets a random seed first, see :func:`resolve_seed`); ``edit`` applies an
    instruction to an image, or raises ``NotImplementedError`` saying which engine can;
    ``release()`` frees models and memory held between calls; ``close()`` ends what the
    engine opened itself (a server connection) and is the last call.
    """

    name: str

    def check(self, recipe: Recipe) -> None: ...

    def generate(
        self, recipe: Recipe, n: int, progress: ProgressCallback | None = None
    ) -> list[GeneratedImage]: ...

    def edit(self, image: Image.Image, instruction: str) -> GeneratedImage: ...

    def release(self) -> None: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class PoolResult:
    """What an :class:`EnginePool` hands back for one submitted recipe: its images, or the
    one-line reason it failed (the engine refused it, or every worker it was tried on died)."""

    tag: Hashable
    recipe: Recipe
    images: tuple[GeneratedImage, ...]
    error: str | None
    worker: str | None
    """The worker that made the images (or last tried), e.g. ``w2``."""


@runtime_checkable
class EnginePool(Protocol):
    """Several engines of one kind behind one queue (built by :mod:`likeness.scale`).

    ``check`` asks every worker and leaves out those that cannot run the recipe (raising only
    when none can); ``submit`` queues ``n`` images of a recipe under a caller's tag (``label``
    names it in progress displays);
    ``completed`` yields a :class:`PoolResult` per submission as each finishes, in any order,
    until nothing is queued (the caller may submit more while iterating). The caller stores
    what comes back: workers compute, only the caller writes.
    """

    name: str

    def check(self, recipe: Recipe) -> None: ...

    def submit(self, tag: Hashable, recipe: Recipe, n: int = 1, label: str = "") -> None: ...

    def completed(self) -> Iterator[PoolResult]: ...

    def release(self) -> None: ...

    def close(self) -> None: ...


def resolve_seed(recipe: Recipe) -> Recipe:
    """The recipe with ``seed = -1`` replaced by a random seed (other seeds unchanged)."""
    if recipe.seed != -1:
        return recipe
    return recipe.with_overrides({"seed": secrets.randbelow(2**32)})


def image_seeds(recipe: Recipe, n: int) -> list[int]:
    """Seeds of the ``n`` images of a run: ``seed, seed + 1, ...`` (wrapping at 2**64)."""
    if recipe.seed < 0:
        raise ValueError("seed: -1 must be resolved first; call resolve_seed(recipe)")
    return [(recipe.seed + i) % (MAX_SEED + 1) for i in range(n)]


def sha256_file(path: str | os.PathLike[str]) -> str:
    """sha256 (hex) of a file (``~`` expanded), cached per process by (path, size, mtime)."""
    resolved = Path(path).expanduser().resolve()
    stat = resolved.stat()
    return _sha256_cached(str(resolved), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=256)
def _sha256_cached(path: str, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 22):
            digest.update(chunk)
    return digest.hexdigest()


def build_provenance(
    *,
    recipe: Recipe,
    seed: int,
    engine: Mapping[str, Any],
    model_sha256: str | None,
    lora_sha256s: list[str | None],
    timings: Mapping[str, float],
    width: int,
    height: int,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The provenance dict (shape in the module docstring) for one image of ``recipe``.

    ``engine`` holds at least ``name`` and ``version``; sha256s are None when the engine
    cannot read the file (a model that lives on a ComfyUI server).
    """
    from likeness import __version__

    if len(lora_sha256s) != len(recipe.loras):
        raise ValueError("lora_sha256s: need one entry per recipe LoRA")
    if "name" not in engine or "version" not in engine:
        raise ValueError("engine: needs 'name' and 'version'")
    this = recipe.with_overrides({"seed": seed}) if recipe.seed != seed else recipe
    prov: dict[str, Any] = {
        "schema": PROVENANCE_SCHEMA,
        "recipe": this.to_dict(),
        "recipe_hash": this.recipe_hash(),
        "seed": seed,
        "prompt": build_prompt(this),
        "negative": this.negative,
        "width": width,
        "height": height,
        "model": {
            "name": PurePath(recipe.model).name,
            "path": recipe.model,
            "sha256": model_sha256,
        },
        "loras": [
            {
                "name": PurePath(lora.path).name,
                "path": lora.path,
                "strength": lora.strength,
                "sha256": sha,
            }
            for lora, sha in zip(recipe.loras, lora_sha256s, strict=True)
        ],
        "engine": dict(engine),
        "timings": {k: round(float(v), 4) for k, v in timings.items()},
        "likeness_version": __version__,
    }
    if extra:
        prov.update(extra)
    return prov
