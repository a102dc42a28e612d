"""LoRA files other tools load: write peft LoRA layers as kohya-style ``.safetensors``.

SDXL and SD1.5 files use kohya's names in the original ("sgm") block layout that real kohya
SDXL LoRAs use: ``lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q`` and
``lora_te1_`` / ``lora_te2_`` (SDXL) or ``lora_te_`` (SD1.5, as kohya writes SD1 files), each
module as ``.lora_down.weight``, ``.lora_up.weight`` and ``.alpha``. ComfyUI maps every such
UNet name (``lora_unet_`` + the original weight path with ``.`` -> ``_``) and diffusers, A1111
and Forge read them.

FLUX files use diffusers module names (``transformer.transformer_blocks.0.attn.to_q.lora_A
.weight`` / ``.lora_B.weight`` / ``.alpha``, ``text_encoder.text_model...`` for CLIP-L), the
layout ai-toolkit writes. ComfyUI maps each of them onto its slice of the fused original weight
(``flux_to_diffusers`` in ``comfy/utils.py``) and diffusers loads them natively for any model
size. kohya's own FLUX layout fuses q/k/v into one module of rank 3r whose alpha the readers
divide by 3r, and diffusers reads it only for the full-size FLUX.1 widths; per-module names keep
rank and alpha exactly as trained.

Qwen-Image-Edit files (family ``qwen_image_edit``) name each module
``diffusion_model.<diffusers module path>`` with ``.lora_A.weight`` / ``.lora_B.weight`` /
``.alpha``: ComfyUI's Qwen-Image model keeps diffusers' module names and its LoRA loader maps
``diffusion_model.<path>`` onto the weight ``diffusion_model.<path>.weight``; diffusers strips
the prefix when it loads the file into the edit pipeline.

Names are derived from the model's own modules (peft-wrapped layers found by walking it), mapped
with :mod:`likeness.engines.diffusers.checkpoint`, never from a list. ``.alpha`` is the trained
alpha, not the rank. Example::

    unet.add_adapter(LoraConfig(r=64, lora_alpha=32, target_modules=["to_q", "to_k"]))
    ...  # train
    meta = kohya_metadata(base_model="bigLove.safetensors", base_model_sha256=None,
                          family="sdxl", rank=64, alpha=32, steps=1500, resolution=1024,
                          trigger="zk1", dataset="mara@v2", dataset_sha256=digest)
    save_kohya_lora(Path("mara-v2.safetensors"), {"unet": unet}, family="sdxl", alpha=32,
                    metadata=meta)
"""

from __future__ import annotations

import json
import math
import os
import re
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from likeness.engines.diffusers.checkpoint import flux_module_to_original, unet_module_to_original

FAMILIES = ("sdxl", "sd15", "flux", "qwen_image_edit")
# Per family: component -> key prefix. FLUX keys keep diffusers' dotted module names.
COMPONENT_PREFIXES = {
    "sdxl": {"unet": "lora_unet_", "text_encoder": "lora_te1_", "text_encoder_2": "lora_te2_"},
    "sd15": {"unet": "lora_unet_", "text_encoder": "lora_te_"},
    "flux": {"transformer": "transformer.", "text_encoder": "text_encoder."},
    # ComfyUI maps Qwen-Image LoRA names onto its diffusion_model.<module>.weight keys (the
    # model keeps diffusers' module names); diffusers strips the prefix when loading.
    "qwen_image_edit": {"transformer": "diffusion_model."},
}
BASE_MODEL_VERSIONS = {
    "sdxl": "sdxl_base_v1-0",
    "sd15": "sd_v1",
    "flux": "flux1",
    "qwen_image_edit": "qwen_image_edit",
}
MODELSPEC_ARCHITECTURES = {
    "sdxl": "stable-diffusion-xl-v1-base/lora",
    "sd15": "stable-diffusion-v1/lora",
    "flux": "flux-1-dev/lora",
    "qwen_image_edit": "qwen-image-edit/lora",
}
MODELSPEC_IMPLEMENTATIONS = {
    "sdxl": "https://github.com/Stability-AI/generative-models",
    "sd15": "diffusers",
    "flux": "diffusers",
    "qwen_image_edit": "diffusers",
}
# Text-encoder modules ComfyUI maps (its LORA_CLIP_MAP): attention projections and the MLP.
_CLIP_MODULE = re.compile(
    r"text_model\.encoder\.layers\.\d+\.(?:self_attn\.(?:q|k|v|out)_proj|mlp\.fc[12])"
)
# Qwen-Image modules a LoRA may name: any Linear inside a double-stream block, or the model's
# input/output projections (all keep their diffusers names in ComfyUI's Qwen-Image model).
_QWEN_MODULE = re.compile(
    r"transformer_blocks\.\d+\.[A-Za-z0-9_.]+|img_in|txt_in|proj_out|norm_out\.linear"
)
_KOHYA_SUFFIXES = (".lora_down.weight", ".lora_up.weight", ".alpha")
_PEFT_SUFFIXES = (".lora_A.weight", ".lora_B.weight", ".alpha")


@dataclass(frozen=True)
class LoraLayerWeights:
    """One peft LoRA layer: its module path in the component and what the file stores."""

    module: str
    down: Any  # lora_A weight: (rank, in) or (rank, in, kh, kw)
    up: Any  # lora_B weight: (out, rank) or (out, rank, 1, 1)
    alpha: float

    @property
    def rank(self) -> int:
        return int(self.down.shape[0])


def peft_lora_layers(model: Any, adapter: str = "default") -> list[LoraLayerWeights]:
    """The LoRA layers of ``adapter`` injected in ``model`` (found by walking its modules).

    The alpha is the one the layer scales by (``scaling * rank``, which is ``lora_alpha``
    unless rsLoRA is on), so a reader that applies ``alpha / rank`` reproduces the layer.
    """
    from peft.tuners.lora import LoraLayer

    layers = []
    for name, module in model.named_modules():
        if not isinstance(module, LoraLayer):
            continue
        if adapter in getattr(module, "lora_embedding_A", {}):
            raise ValueError(
                f"{name}: an embedding LoRA has no kohya form that ComfyUI loads; "
                "target linear and conv layers"
            )
        if adapter not in module.lora_A:
            continue
        if module.use_dora.get(adapter):
            raise ValueError(f"{name}: DoRA layers have no kohya LoRA form; train without use_dora")
        if getattr(module, "lora_bias", {}).get(adapter):
            raise ValueError(
                f"{name}: LoRA biases have no kohya LoRA form; train without lora_bias"
            )
        down = module.lora_A[adapter].weight
        up = module.lora_B[adapter].weight
        rank = int(down.shape[0])
        alpha = float(module.lora_alpha[adapter])
        if not math.isclose(alpha / rank, float(module.scaling[adapter]), rel_tol=1e-6):
            alpha = float(module.scaling[adapter]) * rank
        layers.append(LoraLayerWeights(name, down.detach(), up.detach(), alpha))
    return layers


def kohya_module_name(family: str, component: str, module: str, model: Any) -> str:
    """The file's name for ``module`` (a path in ``component``) without the tensor suffix.

    UNet paths are mapped to the original block layout with the model's own config
    (``layers_per_block`` and which up blocks have attentions); text-encoder paths get the
    ``text_model.`` root kohya uses; FLUX paths stay diffusers paths, checked against the
    original layout ComfyUI maps them onto.
    """
    prefix = _prefix(family, component)
    if component == "unet" and family == "sd15":
        # kohya trains SD1.x on the diffusers UNet and names its modules so; diffusers reads
        # SD1.5 files only in that layout, ComfyUI maps it through unet_to_diffusers.
        unet_module_to_original(module, model.config.layers_per_block, set())  # must exist
        return prefix + module.replace(".", "_")
    if component == "unet":
        up_attention = {
            i for i, block in enumerate(model.up_blocks) if getattr(block, "attentions", None)
        }
        original = unet_module_to_original(module, model.config.layers_per_block, up_attention)
        return prefix + original.replace(".", "_")
    if family == "qwen_image_edit":
        if not _QWEN_MODULE.fullmatch(module):
            raise ValueError(
                f"transformer: a LoRA on {module!r} is outside the transformer blocks ComfyUI "
                "maps for Qwen-Image; target the blocks' attention and MLP layers"
            )
        return prefix + module
    if component == "transformer":
        try:
            flux_module_to_original(module)
        except KeyError:
            raise ValueError(
                f"transformer: a LoRA on {module!r} has no place in the original FLUX layout "
                "that ComfyUI maps; target attention, MLP and modulation layers"
            ) from None
        return prefix + module
    path = module if module.startswith("text_model.") else "text_model." + module
    if not _CLIP_MODULE.fullmatch(path):
        raise ValueError(
            f"{component}: a LoRA on {module!r} is not loaded by ComfyUI; target "
            "q_proj, k_proj, v_proj, out_proj, fc1 and fc2 of the encoder layers"
        )
    if family == "flux":
        return prefix + path
    return prefix + path.replace(".", "_")


def lora_state_dict(
    components: Mapping[str, Any], *, family: str, adapter: str = "default", dtype: Any = None
) -> dict[str, Any]:
    """The tensors of the file: per LoRA layer a down, an up and a scalar alpha."""
    import torch

    if family not in FAMILIES:
        raise ValueError(f"family: {family!r} is not one of {', '.join(FAMILIES)}")
    out: dict[str, Any] = {}
    for component, model in components.items():
        _prefix(family, component)
        peft_names = family in ("flux", "qwen_image_edit")
        down_key, up_key, alpha_key = _PEFT_SUFFIXES if peft_names else _KOHYA_SUFFIXES
        for layer in peft_lora_layers(model, adapter):
            base = kohya_module_name(family, component, layer.module, model)
            if base + alpha_key in out:
                raise ValueError(f"{component}: two LoRA layers map to the same name {base!r}")
            down, up = layer.down.cpu(), layer.up.cpu()
            if dtype is not None:
                down, up = down.to(dtype), up.to(dtype)
            out[base + down_key] = down.contiguous()
            out[base + up_key] = up.contiguous()
            out[base + alpha_key] = torch.tensor(layer.alpha, dtype=torch.float32)
    if not out:
        raise ValueError(
            f"components: no LoRA layers (adapter {adapter!r}) in "
            f"{', '.join(components) or 'nothing'}; inject them with add_adapter(LoraConfig(...))"
        )
    return out


def save_kohya_lora(
    path: Path,
    components: Mapping[str, Any],
    *,
    family: str,
    alpha: float,
    metadata: Mapping[str, str],
    dtype: Any = None,
) -> Path:
    """Write the LoRA layers of ``components`` ("unet"/"transformer", "text_encoder",
    "text_encoder_2": diffusers/transformers modules with peft adapter "default") to ``path``.

    ``alpha`` is the network alpha the adapters were configured with (checked against each
    component's peft config and ``metadata["ss_network_alpha"]``); each module's ``.alpha``
    tensor is the alpha it scales by. ``dtype`` (e.g. ``torch.float16``) casts the weights,
    as kohya's ``save_precision``. The file is written beside ``path`` and renamed over it
    once flushed, so a crash never leaves half a LoRA.
    """
    path = Path(path)
    if path.suffix.lower() != ".safetensors":
        raise ValueError(f"path: {path} must end in .safetensors")
    meta = _check_metadata(metadata)
    if "ss_network_alpha" in meta and not _same_number(meta["ss_network_alpha"], alpha):
        raise ValueError(
            f"alpha: {alpha} differs from metadata ss_network_alpha {meta['ss_network_alpha']}"
        )
    for component, model in components.items():
        config = getattr(model, "peft_config", {}).get("default")
        if config is not None and not math.isclose(float(config.lora_alpha), float(alpha)):
            raise ValueError(
                f"alpha: {alpha} but the {component}'s LoRA was configured with "
                f"lora_alpha {config.lora_alpha}; pass the alpha it was trained with"
            )
    tensors = lora_state_dict(components, family=family, dtype=dtype)
    _save_atomic(path, tensors, meta)
    return path


def kohya_metadata(
    *,
    base_model: str,
    base_model_sha256: str | None,
    family: str,
    rank: int,
    alpha: float,
    steps: int,
    resolution: tuple[int, int] | int,
    trigger: str,
    dataset: str,
    dataset_sha256: str,
    **extra: Any,
) -> dict[str, str]:
    """kohya-style metadata (``ss_*``, ``modelspec.*``) plus ``likeness_*`` lineage keys.

    ``extra`` adds more training facts: a key that already starts with ``ss_``,
    ``modelspec.`` or ``likeness_`` is kept as is, any other gets ``ss_`` (``learning_rate=5e-5``
    -> ``ss_learning_rate``); None values are left out. ``output_name`` names the LoRA
    (default: the dataset version, e.g. ``mara-v2``); ``training_started_at`` is a unix time.
    """
    from likeness import __version__

    if family not in FAMILIES:
        raise ValueError(f"family: {family!r} is not one of {', '.join(FAMILIES)}")
    if isinstance(resolution, int):
        resolution = (resolution, resolution)
    width, height = resolution
    now = time.time()
    output_name = str(extra.pop("output_name", None) or dataset.replace("@", "-"))
    started = extra.pop("training_started_at", None) or now
    meta: dict[str, Any] = {
        "ss_network_module": "networks.lora",
        "ss_network_dim": rank,
        "ss_network_alpha": _number(alpha),
        "ss_base_model_version": BASE_MODEL_VERSIONS[family],
        "ss_sd_model_name": Path(base_model).name or base_model,
        "ss_new_sd_model_hash": base_model_sha256,
        "ss_v2": "False",
        "ss_steps": steps,
        "ss_resolution": f"({width}, {height})",
        "ss_output_name": output_name,
        "ss_training_started_at": started,
        "ss_training_finished_at": now,
        "ss_tag_frequency": json.dumps({dataset: {trigger: 1}}) if trigger else None,
        "modelspec.sai_model_spec": "1.0.1",
        "modelspec.architecture": MODELSPEC_ARCHITECTURES[family],
        "modelspec.implementation": MODELSPEC_IMPLEMENTATIONS[family],
        "modelspec.title": output_name,
        "modelspec.resolution": f"{width}x{height}",
        "modelspec.date": datetime.now(UTC).date().isoformat(),
        "modelspec.trigger_phrase": trigger or None,
        "likeness_version": __version__,
        "likeness_family": family,
        "likeness_base_model": base_model,
        "likeness_base_model_sha256": base_model_sha256,
        "likeness_trigger": trigger,
        "likeness_dataset": dataset,
        "likeness_dataset_sha256": dataset_sha256,
    }
    for key, value in extra.items():
        if not key.startswith(("ss_", "modelspec.", "likeness_")):
            key = "ss_" + key
        meta[key] = value
    return {k: str(v) for k, v in meta.items() if v is not None}


def read_kohya_lora(path: Path) -> tuple[dict[str, Any], dict[str, str]]:
    """The tensors and metadata of a LoRA ``.safetensors`` file (any format
    :func:`likeness.engines.diffusers.loras.lora_format` recognises)."""
    from safetensors import safe_open

    from likeness.engines.diffusers.loras import lora_format

    with safe_open(str(path), framework="pt") as handle:
        keys = list(handle.keys())
        if lora_format(keys) is None:
            raise ValueError(f"{path}: holds no LoRA weights (no lora_down/lora_A tensors)")
        tensors = {k: handle.get_tensor(k) for k in keys}
        metadata = dict(handle.metadata() or {})
    return tensors, metadata


# -- helpers ----------------------------------------------------------------------------
def _prefix(family: str, component: str) -> str:
    try:
        return COMPONENT_PREFIXES[family][component]
    except KeyError:
        if family not in COMPONENT_PREFIXES:
            raise ValueError(f"family: {family!r} is not one of {', '.join(FAMILIES)}") from None
        raise ValueError(
            f"components: {component!r} is not a {family} component "
            f"({', '.join(COMPONENT_PREFIXES[family])})"
        ) from None


def _check_metadata(metadata: Mapping[str, str]) -> dict[str, str]:
    for key, value in metadata.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise ValueError(
                f"metadata: {key!r} = {value!r}; safetensors metadata keys and values are text"
            )
    return dict(metadata)


def _number(value: float) -> float | int:
    return int(value) if float(value).is_integer() else float(value)


def _same_number(text: str, value: float) -> bool:
    try:
        return math.isclose(float(text), float(value))
    except ValueError:
        return False


def _save_atomic(path: Path, tensors: dict[str, Any], metadata: dict[str, str]) -> None:
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        os.chmod(tmp, 0o644)
        save_file(tensors, tmp, metadata=metadata)
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    try:  # make the rename itself durable
        dir_fd = os.open(path.parent, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dir_fd)
    except OSError:
        pass
    finally:
        os.close(dir_fd)
