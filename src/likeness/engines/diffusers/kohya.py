"""Write UNet LoRA weights (peft/diffusers keys) as a kohya-format state dict.

ComfyUI, A1111 and model sites load kohya LoRAs: ``lora_unet_<module>.lora_down.weight``,
``.lora_up.weight`` and a scalar ``.alpha`` per module. SDXL files use the original block names
(``lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q``); older and SD1.5 files often
use diffusers names (``lora_unet_down_blocks_1_attentions_0_...``). diffusers'
``convert_state_dict_to_kohya`` writes ``alpha = rank``; here the real alpha is kept. Example::

    kohya = unet_lora_to_kohya(get_peft_model_state_dict(unet), alpha=8, unet_config=unet.config)
    safetensors.torch.save_file(kohya, "zk1.safetensors")
"""

from __future__ import annotations

import re
from typing import Any

from likeness.engines.diffusers.checkpoint import unet_module_to_original

_LORA_KEY = re.compile(
    r"(?:unet\.|text_encoder\.|text_encoder_2\.)?(.+)\.lora_([AB])\.(?:default\.)?weight"
)
TEXT_ENCODER_PREFIXES = {"text_encoder": "lora_te1_", "text_encoder_2": "lora_te2_"}


def unet_lora_to_kohya(
    state: dict[str, Any],
    *,
    alpha: float | dict[str, float],
    unet_config: Any = None,
    layout: str = "original",
) -> dict[str, Any]:
    """Kohya state dict from peft UNet LoRA weights (``<module>.lora_A.weight`` keys).

    ``alpha`` is one value or a per-module dict; ``layout`` is "original" (needs
    ``unet_config`` for ``layers_per_block``) or "diffusers".
    """
    import torch

    if layout not in ("original", "diffusers"):
        raise ValueError(f"layout: {layout!r} is not 'original' or 'diffusers'")
    if layout == "original" and unet_config is None:
        raise ValueError("unet_config: needed for the original block layout")
    modules = {}
    for key, value in state.items():
        m = _LORA_KEY.fullmatch(key)
        if not m:
            raise KeyError(f"{key!r} is not a peft LoRA key (<module>.lora_A/B.weight)")
        modules.setdefault(m.group(1), {})[m.group(2)] = value
    up_attn = {
        int(k.split(".")[1]) for k in modules if re.match(r"up_blocks\.\d+\.attentions\.", k)
    }
    out: dict[str, Any] = {}
    for module, weights in modules.items():
        name = module
        if layout == "original":
            name = unet_module_to_original(module, unet_config.layers_per_block, up_attn)
        base = "lora_unet_" + name.replace(".", "_")
        out[base + ".lora_down.weight"] = weights["A"].contiguous()
        out[base + ".lora_up.weight"] = weights["B"].contiguous()
        a = alpha[module] if isinstance(alpha, dict) else alpha
        out[base + ".alpha"] = torch.tensor(float(a), dtype=weights["A"].dtype)
    return out


def text_encoder_lora_to_kohya(
    state: dict[str, Any], *, alpha: float | dict[str, float], encoder: str = "text_encoder"
) -> dict[str, Any]:
    """Kohya state dict (``lora_te1_*`` / ``lora_te2_*``) from peft CLIP text-encoder LoRA
    weights; ``encoder`` is "text_encoder" (CLIP-L, te1) or "text_encoder_2" (bigG, te2)."""
    import torch

    if encoder not in TEXT_ENCODER_PREFIXES:
        raise ValueError(f"encoder: {encoder!r} is not text_encoder or text_encoder_2")
    modules: dict[str, dict[str, Any]] = {}
    for key, value in state.items():
        m = _LORA_KEY.fullmatch(key)
        if not m:
            raise KeyError(f"{key!r} is not a peft LoRA key (<module>.lora_A/B.weight)")
        module = m.group(1)
        if not module.startswith("text_model."):  # CLIPTextModel is flat in recent transformers
            module = "text_model." + module
        modules.setdefault(module, {})[m.group(2)] = value
    out: dict[str, Any] = {}
    for module, weights in modules.items():
        base = TEXT_ENCODER_PREFIXES[encoder] + module.replace(".", "_")
        out[base + ".lora_down.weight"] = weights["A"].contiguous()
        out[base + ".lora_up.weight"] = weights["B"].contiguous()
        a = alpha[module] if isinstance(alpha, dict) else alpha
        out[base + ".alpha"] = torch.tensor(float(a), dtype=weights["A"].dtype)
    return out
