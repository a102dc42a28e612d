"""LoRA files: recognise their format, load them once, activate them with strengths.

Accepted: kohya files (``lora_unet_*`` / ``lora_te1_*`` / ``lora_te2_*`` keys with
``lora_down``/``lora_up``/``alpha``), in both block-name layouts (original SDXL names such as
``lora_unet_input_blocks_4_1_...`` and diffusers names such as ``lora_unet_down_blocks_1_...``),
and diffusers/peft files (``unet.…lora_A.weight`` or ``transformer.…lora_A.weight``).
diffusers maps all of them onto the model; several LoRAs run at once through ``set_adapters``.
"""

from __future__ import annotations

import contextlib
import json
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from likeness.engines.base import EngineCannotHonour, EngineError, sha256_file
from likeness.engines.diffusers.loading import PICKLE_SUFFIXES
from likeness.recipes import LoraSpec

KOHYA_ORIGINAL = "kohya (original block names)"
KOHYA_DIFFUSERS = "kohya (diffusers block names)"
DIFFUSERS = "diffusers"


def safetensors_header(path: Path) -> dict[str, Any]:
    """The JSON header of a ``.safetensors`` file: ``{name: {dtype, shape, data_offsets}}``
    plus ``__metadata__`` (str -> str) when present. The tensors are not read."""
    with open(path, "rb") as fh:
        head = fh.read(8)
        if len(head) != 8:
            raise ValueError("file too short for a safetensors header")
        (length,) = struct.unpack("<Q", head)
        if length > 100_000_000:
            raise ValueError("header too large")
        header = json.loads(fh.read(length))
    if not isinstance(header, dict):
        raise ValueError("header is not a JSON object")
    return header


def safetensors_keys(path: Path) -> list[str]:
    """Tensor names of a ``.safetensors`` file, read from its header only."""
    return [k for k in safetensors_header(path) if k != "__metadata__"]


def lora_format(keys: list[str]) -> str | None:
    """The LoRA format these tensor names follow, or None when they are not a LoRA."""
    if any(k.startswith(("lora_unet_", "lora_te")) for k in keys):
        if any("input_blocks" in k or "output_blocks" in k or "middle_block" in k for k in keys):
            return KOHYA_ORIGINAL
        return KOHYA_DIFFUSERS
    if any(("lora_A" in k or "lora_B" in k or "lora.down" in k or "lora_down" in k) for k in keys):
        return DIFFUSERS
    return None


def check_lora(index: int, spec: LoraSpec, *, allow_pickle: bool) -> str:
    """Raise :class:`EngineCannotHonour` unless ``spec`` names a readable LoRA; its format."""
    field = f"loras.{index}.path"
    path = Path(spec.path).expanduser()
    if not path.is_file():
        raise EngineCannotHonour(field, spec.path, "does not exist; pass a LoRA .safetensors file")
    if path.suffix.lower() in PICKLE_SUFFIXES:
        if not allow_pickle:
            raise EngineCannotHonour(
                field,
                spec.path,
                "is a pickle file (it can run code when loaded); convert it to .safetensors "
                "or pass --allow-pickle",
            )
        return "pickle"
    if path.suffix.lower() != ".safetensors":
        raise EngineCannotHonour(field, spec.path, "is not a .safetensors LoRA file")
    try:
        keys = safetensors_keys(path)
    except (OSError, ValueError, struct.error) as exc:
        raise EngineCannotHonour(
            field, spec.path, f"is not a readable safetensors file ({exc})"
        ) from None
    fmt = lora_format(keys)
    if fmt is None:
        raise EngineCannotHonour(
            field, spec.path, "holds no LoRA weights (no lora_down/lora_A tensors)"
        )
    return fmt


class LoraSet:
    """The LoRAs loaded into one pipeline, keyed by file content; activates recipe strengths."""

    def __init__(self) -> None:
        self._names: dict[str, str] = {}  # sha256 -> adapter name
        self._others: set[str] = set()  # adapters activated through `only` (identity LoRAs)
        self._enabled = True

    def apply(self, pipe: Any, loras: tuple[LoraSpec, ...]) -> list[str]:
        """Load any new files, then activate exactly ``loras`` at their strengths.

        Returns the files' sha256s in recipe order.
        """
        shas = [sha256_file(spec.path) for spec in loras]
        for index, (spec, sha) in enumerate(zip(loras, shas, strict=True)):
            if sha not in self._names:
                name = f"lora_{sha[:16]}"
                try:
                    with _quiet():
                        pipe.load_lora_weights(str(Path(spec.path).expanduser()), adapter_name=name)
                except Exception as exc:  # diffusers raises many types for a bad file
                    raise EngineError(
                        f"loras.{index}.path: {spec.path} could not be loaded into the "
                        f"{type(pipe).__name__} ({type(exc).__name__}: {exc})"
                    ) from exc
                self._names[sha] = name
        if not loras:
            if self._enabled and self._manages_any(pipe):
                pipe.disable_lora()
                self._enabled = False
            return []
        if not self._enabled:
            pipe.enable_lora()
            self._enabled = True
        names = [self._names[sha] for sha in shas]
        if len(set(names)) != len(names):
            raise EngineError("loras: the same LoRA file is listed twice; list it once")
        pipe.set_adapters(names, adapter_weights=[spec.strength for spec in loras])
        return shas

    def adopt(self, sha: str, adapter: str) -> None:
        """Treat the adapter ``adapter``, already in the pipeline, as the LoRA file ``sha``
        (the same weights): :meth:`apply` activates it instead of loading the file."""
        for known, name in list(self._names.items()):
            if name == adapter and known != sha:
                del self._names[known]
        self._names[sha] = adapter

    def drop(self, pipe: Any) -> None:
        """Delete from the pipeline every adapter this set loaded from a file (adopted ones
        stay, they are the caller's): judging one checkpoint after another from files would
        otherwise keep every checkpoint's weights in memory."""
        loaded = {name for name in self._names.values() if name.startswith("lora_")}
        if loaded and pipe is not None:
            pipe.delete_adapters(sorted(loaded))
        self._names = {sha: name for sha, name in self._names.items() if name not in loaded}

    def only(self, pipe: Any, names: list[str]) -> None:
        """Activate exactly the adapters ``names`` at strength 1 (none: all off), e.g. an
        identity adapter's own LoRA while the recipe's LoRAs rest; :meth:`apply` restores."""
        self._others.update(names)
        if not names:
            if self._manages_any(pipe):
                pipe.disable_lora()
                self._enabled = False
            return
        pipe.enable_lora()
        self._enabled = True
        pipe.set_adapters(names, adapter_weights=[1.0] * len(names))

    def _manages_any(self, pipe: Any) -> bool:
        """Whether an adapter this set loaded or activated is still in the pipeline (adapters
        put there by someone else are theirs to switch)."""
        return bool(self._names or self._others) and _has_adapters(pipe)

    def clear(self) -> None:
        self._names.clear()
        self._others.clear()
        self._enabled = True


def _has_adapters(pipe: Any) -> bool:
    """Whether any peft adapter (a LoRA, an identity adapter's LoRA) is loaded in the UNet
    or the transformer."""
    denoiser = getattr(pipe, "unet", None) or getattr(pipe, "transformer", None)
    return bool(getattr(denoiser, "peft_config", None))


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Hide per-file notices while loading: diffusers' "no text encoder keys" and the load
    report transformers prints when the adapter layers are created (before their weights are
    set, so it lists every LoRA weight as missing)."""
    import warnings

    from diffusers.utils import logging as dlog
    from transformers.utils import logging as tlog

    levels = dlog.get_verbosity(), tlog.get_verbosity()
    dlog.set_verbosity_error()
    tlog.set_verbosity_error()
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Already found a `peft_config`")
            yield
    finally:
        dlog.set_verbosity(levels[0])
        tlog.set_verbosity(levels[1])
