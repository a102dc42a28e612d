"""LoRA files in the workspace: what a file holds, and adding one trained elsewhere.

:func:`inspect_lora` reads a ``.safetensors`` LoRA (kohya, diffusers or the FLUX layouts)
without loading its weights, except the ``.alpha`` scalars: format, family, rank, alpha,
steps, base model. :func:`add_lora` records a file trained elsewhere against the dataset
version it was trained on, so the lineage dataset -> LoRA -> sweeps and cards holds for it too.

Added files are copied into the workspace's ``loras/`` folder by default: the record is then
kept true when the original is moved, renamed or overwritten, and recipes can name a path that
travels with the workspace. ``in_place=True`` records the file where it is (for a large file
on the same disk), by its absolute path. Example::

    row = add_lora(ws, Path("~/Downloads/mara_v2.safetensors"), dataset="mara@v2")
"""

from __future__ import annotations

import json
import math
import shutil
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from likeness.engines.base import sha256_file
from likeness.engines.diffusers.loras import lora_format, safetensors_header
from likeness.store.datasets import (
    DatasetError,
    DatasetVersion,
    parse_ref,
    resolve,
    version_sha256,
)
from likeness.store.loras import LORA_FAMILIES, LoraRow, lora_by_sha256, record_lora
from likeness.train.export_config import lineage_from_metadata
from likeness.workspace import Workspace

LORAS_DIR = "loras"
_FAMILY_BY_VERSION = (
    ("sdxl", "sdxl"),
    ("sd_v1", "sd15"),
    ("flux", "flux"),
    ("qwen_image_edit", "qwen_image_edit"),
)
_FAMILY_BY_ARCH = (
    ("stable-diffusion-xl", "sdxl"),
    ("stable-diffusion-v1", "sd15"),
    ("flux", "flux"),
    ("qwen-image-edit", "qwen_image_edit"),
)
_DOWN = (".lora_down.weight", ".lora_A.weight", ".lora.down.weight", "_lora.down.weight")
_CROSS_ATTENTION_WIDTH = {768: "sd15", 2048: "sdxl"}


class LoraFileError(ValueError):
    """The file is not a LoRA this workspace can record; the message says what to change."""


@dataclass(frozen=True)
class LoraFileInfo:
    path: Path
    format: str
    family: str | None
    """``sdxl``, ``sd15``, ``flux`` or ``qwen_image_edit``; None when neither metadata nor
    keys tell."""
    family_from: str
    """Where the family was read: ``metadata``, ``keys`` or ``unknown``."""
    rank: int
    alpha: float
    modules: int
    steps: int | None
    base_model: str | None
    base_model_sha256: str | None
    metadata: dict[str, str]

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "format": self.format,
            "family": self.family,
            "family_from": self.family_from,
            "rank": self.rank,
            "alpha": self.alpha,
            "modules": self.modules,
            "steps": self.steps,
            "base_model": self.base_model,
            "base_model_sha256": self.base_model_sha256,
        }


def inspect_lora(path: Path) -> LoraFileInfo:
    """What ``path`` holds, read from its header (and its alpha scalars)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise LoraFileError(f"{path}: no such file")
    if path.suffix.lower() != ".safetensors":
        raise LoraFileError(
            f"{path}: only .safetensors LoRAs are recorded (a pickle can run code when loaded); "
            "convert it first"
        )
    try:
        header = safetensors_header(path)
    except (OSError, ValueError) as exc:
        raise LoraFileError(f"{path}: not a readable safetensors file ({exc})") from None
    metadata = {str(k): str(v) for k, v in (header.pop("__metadata__", None) or {}).items()}
    fmt = lora_format(list(header))
    if fmt is None:
        raise LoraFileError(f"{path}: holds no LoRA weights (no lora_down/lora_A tensors)")
    downs = {k: v for k, v in header.items() if k.endswith(_DOWN)}
    if not downs:
        raise LoraFileError(f"{path}: no LoRA down weights (lora_down/lora_A) found")
    rank = Counter(int(v["shape"][0]) for v in downs.values()).most_common(1)[0][0]
    family, family_from = guess_family(header, metadata)
    return LoraFileInfo(
        path=path,
        format=fmt,
        family=family,
        family_from=family_from,
        rank=rank,
        alpha=_alpha(path, header, metadata, rank),
        modules=len(downs),
        steps=_int(metadata.get("ss_steps")),
        base_model=metadata.get("likeness_base_model") or metadata.get("ss_sd_model_name"),
        base_model_sha256=_sha(
            metadata.get("likeness_base_model_sha256") or metadata.get("ss_new_sd_model_hash")
        ),
        metadata=metadata,
    )


def guess_family(header: dict[str, Any], metadata: dict[str, str]) -> tuple[str | None, str]:
    """(family, where it was read). Metadata first (``likeness_family``,
    ``ss_base_model_version``, ``modelspec.architecture``), then the tensor names and shapes:
    FLUX block names, SDXL's second text encoder or second transformer block, or the width of
    the cross-attention keys (768 SD1.5, 2048 SDXL)."""
    if metadata.get("likeness_family") in LORA_FAMILIES:
        return metadata["likeness_family"], "metadata"
    version = metadata.get("ss_base_model_version", "")
    for start, family in _FAMILY_BY_VERSION:
        if version.startswith(start):
            return family, "metadata"
    arch = metadata.get("modelspec.architecture", "")
    for start, family in _FAMILY_BY_ARCH:
        if arch.startswith(start):
            return family, "metadata"
    keys = [k for k in header if k != "__metadata__"]
    flux_marks = ("double_blocks", "single_blocks", "single_transformer_blocks", "x_embedder")
    if any(mark in k for k in keys for mark in flux_marks):
        return "flux", "keys"
    # Qwen-Image's double-stream blocks (img_mlp/txt_mlp); the only Qwen family recorded here
    # is the edit model, so a Qwen-Image LoRA without metadata is taken for one.
    if any(".img_mlp." in k or ".txt_mlp." in k or "_img_mlp_" in k for k in keys):
        return "qwen_image_edit", "keys"
    if any(k.startswith(("lora_te2_", "text_encoder_2.")) for k in keys):
        return "sdxl", "keys"
    for key in keys:
        if "attn2" in key and "to_k" in key and key.endswith(_DOWN):
            width = int(header[key]["shape"][1])
            if width in _CROSS_ATTENTION_WIDTH:
                return _CROSS_ATTENTION_WIDTH[width], "keys"
    if any("transformer_blocks_1_" in k or "transformer_blocks.1." in k for k in keys):
        return "sdxl", "keys"  # SD1.5 has one transformer block per attention
    return None, "unknown"


@dataclass(frozen=True)
class AddedLora:
    row: LoraRow
    new: bool
    """False when the same file (sha256) was already recorded."""
    dataset_from: str
    """Where its dataset version was read: ``option``, ``metadata`` or ``none``."""


def add_lora(
    ws: Workspace,
    path: Path,
    *,
    dataset: str | None,
    name: str | None = None,
    family: str | None = None,
    base_model: str | None = None,
    in_place: bool = False,
) -> AddedLora:
    """Record the LoRA file ``path`` (trained elsewhere) on ``dataset`` (``NAME@vN``).

    Without ``dataset``, the dataset version the file itself names is used (``likeness train
    export-config`` makes kohya and ai-toolkit write it, with its content hash) when this
    workspace has that version with that hash. A ``dataset`` that contradicts the file's, or a
    ``family`` that contradicts its metadata or keys, is refused. ``family`` is needed only
    when the file does not tell.
    """
    info = inspect_lora(path)
    family = _family(info, family)
    version, dataset_from = _dataset(ws, info, dataset)
    sha = sha256_file(info.path)
    existing = lora_by_sha256(ws.db, sha)
    name = (name or info.path.stem).strip()
    if existing is not None:
        target = Path(existing.path)
    elif in_place:
        target = info.path.resolve()
    else:
        target = _copy_in(ws, info.path, name, sha)
    record_lora(
        ws.db,
        path=str(target),
        sha256=sha,
        name=existing.name if existing else name,
        family=family,
        base_model=base_model or info.base_model or "unknown",
        base_model_sha256=info.base_model_sha256,
        rank=info.rank,
        alpha=info.alpha,
        steps=info.steps,
        dataset=version.name if version else None,
        dataset_version=version.version if version else None,
        source="added",
        train_run=None,
        metadata=info.metadata,
    )
    row = lora_by_sha256(ws.db, sha)
    assert row is not None
    return AddedLora(row, existing is None, dataset_from)


def _family(info: LoraFileInfo, family: str | None) -> str:
    if family is not None and family not in LORA_FAMILIES:
        raise LoraFileError(f"family: {family!r} is not one of {', '.join(LORA_FAMILIES)}")
    if family is None:
        if info.family is None:
            raise LoraFileError(
                f"{info.path}: neither its metadata nor its keys say which model family it is "
                "for; pass --family sdxl, sd15 or flux"
            )
        return info.family
    if info.family is not None and info.family != family:
        raise LoraFileError(
            f"family: {family} given, but the file's {info.family_from} say {info.family}"
        )
    return family


def _dataset(
    ws: Workspace, info: LoraFileInfo, dataset: str | None
) -> tuple[DatasetVersion | None, str]:
    """The dataset version to record, checked against the one the file names (if any)."""
    named = lineage_from_metadata(info.metadata)
    if dataset is not None:
        if parse_ref(dataset)[1] is None:
            raise LoraFileError(f"dataset: {dataset!r} needs a version; use NAME@vN")
        version = resolve(ws.db, dataset)
        if named is not None and named[1] != version_sha256(version):
            raise LoraFileError(
                f"dataset: {version.ref} given, but the file was trained on {named[0]} "
                f"(sha256 {named[1][:12]}), which differs; pass the version it names"
            )
        return version, "option"
    if named is None:
        return None, "none"
    try:
        version = resolve(ws.db, named[0])
    except DatasetError:
        raise LoraFileError(
            f"{info.path}: trained on {named[0]}, which this workspace does not have; "
            "pass --dataset NAME@vN"
        ) from None
    if version_sha256(version) != named[1]:
        raise LoraFileError(
            f"{info.path}: trained on a {named[0]} whose content (sha256 {named[1][:12]}) is "
            f"not this workspace's {version.ref}; pass --dataset NAME@vN"
        )
    return version, "metadata"


def _copy_in(ws: Workspace, source: Path, name: str, sha: str) -> Path:
    folder = ws.root / LORAS_DIR
    folder.mkdir(exist_ok=True)
    target = folder / f"{_safe(name)}.safetensors"
    if target.exists():
        if sha256_file(target) == sha:
            return target
        raise LoraFileError(
            f"{target} already holds another file; choose another --name or pass --in-place"
        )
    tmp = target.with_name(f".{target.name}.tmp")
    shutil.copyfile(source, tmp)
    if sha256_file(tmp) != sha:
        tmp.unlink(missing_ok=True)
        raise LoraFileError(f"{source}: changed while it was copied; add it again")
    tmp.replace(target)
    return target


def _safe(name: str) -> str:
    safe = "".join(c if c.isalnum() or c in "-_.@" else "_" for c in name).strip("._")
    if not safe:
        raise LoraFileError(f"name: {name!r} has no usable characters; pass --name")
    return safe


def _alpha(path: Path, header: dict[str, Any], metadata: dict[str, str], rank: int) -> float:
    """The most common ``.alpha`` value; without any, diffusers' adapter metadata or kohya's
    network alpha, else the rank (a file without alpha scales by 1, as readers take it)."""
    keys = [k for k in header if k.endswith(".alpha")]
    if keys:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as handle:
            values = [float(handle.get_tensor(k).float().item()) for k in keys]
        return Counter(values).most_common(1)[0][0]
    adapter = _json(metadata.get("lora_adapter_metadata"))  # diffusers' save_lora_weights
    alphas = [float(v) for k, v in adapter.items() if k.endswith("lora_alpha") and _is_number(v)]
    if alphas:
        return Counter(alphas).most_common(1)[0][0]
    network = metadata.get("ss_network_alpha")
    try:
        value = float(network) if network is not None else math.nan
    except ValueError:
        value = math.nan
    return value if math.isfinite(value) else float(rank)


def _json(text: str | None) -> dict[str, Any]:
    try:
        data = json.loads(text) if text else {}
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _int(text: str | None) -> int | None:
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None


def _sha(text: str | None) -> str | None:
    text = (text or "").strip().lower()
    return text if len(text) == 64 and all(c in "0123456789abcdef" for c in text) else None
