"""Tiny random-weight identity adapters for a UNet, in the real files' key layout.

- :func:`faceid_state`: IP-Adapter FaceID as ``ip-adapter-faceid_sdxl.bin`` lays it out:
  ``image_proj`` = ``proj.0`` (512 -> 2x), ``proj.2`` (-> 4 tokens x cross-attention width),
  ``norm``; ``ip_adapter`` = ``{i}.to_k_ip/to_v_ip.weight`` for every cross-attention
  processor ``i`` (odd numbers, counting every attention processor of the UNet in order) and
  the FaceID LoRA ``{i}.to_{q,k,v,out}_lora.{down,up}.weight`` for every processor.
- :func:`instantid_state`: InstantID's ``ip-adapter.bin``: ``image_proj`` is a 4-layer
  Resampler (``latents`` of 16 queries, ``proj_in`` from 512, ``layers.{l}.0`` attention with
  ``norm1/norm2/to_q/to_kv/to_out``, ``layers.{l}.1`` feed-forward ``0/1/3``, ``proj_out``,
  ``norm_out``) and ``ip_adapter`` the same ``to_k_ip/to_v_ip`` layout, without a LoRA.
- :func:`save_controlnet`: InstantID's IdentityNet is a ControlNet made from the UNet.

Example::

    torch.save(faceid_state(pipe.unet), "ip-adapter-faceid_tiny.bin")
    save_file(flatten(instantid_state(pipe.unet)), "ip-adapter.safetensors")
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

ID_DIM = 512  # ArcFace
FACEID_TOKENS = 4
INSTANTID_TOKENS = 16
LORA_RANK = 4


def _hidden_size(unet: Any, name: str) -> int:
    """The channel width of the attention processor ``name`` (as diffusers computes it)."""
    channels = unet.config.block_out_channels
    if name.startswith("mid_block"):
        return channels[-1]
    if name.startswith("up_blocks"):
        return list(reversed(channels))[int(name[len("up_blocks.")])]
    return channels[int(name[len("down_blocks.")])]


def _ip_layers(unet: Any, rand: Any, lora: bool) -> dict[str, Any]:
    cross = unet.config.cross_attention_dim
    out: dict[str, Any] = {}
    for i, name in enumerate(unet.attn_processors):
        hidden = _hidden_size(unet, name)
        self_attention = name.endswith("attn1.processor")
        if not self_attention:
            out[f"{i}.to_k_ip.weight"] = rand(hidden, cross)
            out[f"{i}.to_v_ip.weight"] = rand(hidden, cross)
        if lora:
            width_in = hidden if self_attention else cross
            for part, fan_in in (("to_q", hidden), ("to_k", width_in), ("to_v", width_in),
                                 ("to_out", hidden)):  # fmt: skip
                out[f"{i}.{part}_lora.down.weight"] = rand(LORA_RANK, fan_in)
                out[f"{i}.{part}_lora.up.weight"] = rand(hidden, LORA_RANK)
    return out


def _rand(seed: int, scale: float) -> Any:
    import torch

    generator = torch.Generator().manual_seed(seed)
    return lambda *shape: torch.randn(*shape, generator=generator) * scale


def faceid_state(unet: Any, seed: int = 0, scale: float = 0.05) -> dict[str, dict[str, Any]]:
    """An IP-Adapter FaceID state dict (with its LoRA) that fits ``unet``."""
    import torch

    rand = _rand(seed, scale)
    cross = unet.config.cross_attention_dim
    proj = {
        "proj.0.weight": rand(2 * ID_DIM, ID_DIM),
        "proj.0.bias": rand(2 * ID_DIM),
        "proj.2.weight": rand(cross * FACEID_TOKENS, 2 * ID_DIM),
        "proj.2.bias": rand(cross * FACEID_TOKENS),
        "norm.weight": torch.ones(cross),
        "norm.bias": torch.zeros(cross),
    }
    return {"image_proj": proj, "ip_adapter": _ip_layers(unet, rand, lora=True)}


def instantid_state(
    unet: Any, seed: int = 0, scale: float = 0.05, width: int = 64
) -> dict[str, dict[str, Any]]:
    """An InstantID adapter state dict (Resampler of ``width`` channels, one 64-wide head)
    that fits ``unet``."""
    import torch

    rand = _rand(seed, scale)
    cross = unet.config.cross_attention_dim
    proj: dict[str, Any] = {
        "latents": rand(1, INSTANTID_TOKENS, width),
        "proj_in.weight": rand(width, ID_DIM),
        "proj_in.bias": rand(width),
        "proj_out.weight": rand(cross, width),
        "proj_out.bias": rand(cross),
        "norm_out.weight": torch.ones(cross),
        "norm_out.bias": torch.zeros(cross),
    }
    inner = 64  # one head of 64 channels
    for layer in range(4):
        p = f"layers.{layer}."
        for norm in ("0.norm1", "0.norm2", "1.0"):
            proj[f"{p}{norm}.weight"] = torch.ones(width)
            proj[f"{p}{norm}.bias"] = torch.zeros(width)
        proj[f"{p}0.to_q.weight"] = rand(inner, width)
        proj[f"{p}0.to_kv.weight"] = rand(2 * inner, width)
        proj[f"{p}0.to_out.weight"] = rand(width, inner)
        proj[f"{p}1.1.weight"] = rand(4 * width, width)
        proj[f"{p}1.3.weight"] = rand(width, 4 * width)
    return {"image_proj": proj, "ip_adapter": _ip_layers(unet, rand, lora=False)}


def save_controlnet(unet: Any, folder: str | Path, seed: int = 0) -> Path:
    """A ControlNet made from ``unet`` (random conditioning layers), as a diffusers folder."""
    import torch
    from diffusers import ControlNetModel

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        controlnet = ControlNetModel.from_unet(unet, conditioning_channels=3)
        for param in controlnet.controlnet_cond_embedding.parameters():
            torch.nn.init.normal_(param, std=0.02)
        for block in [*controlnet.controlnet_down_blocks, controlnet.controlnet_mid_block]:
            for param in block.parameters():
                torch.nn.init.normal_(param, std=0.02)
    folder = Path(folder)
    controlnet.save_pretrained(str(folder), safe_serialization=True)
    return folder
