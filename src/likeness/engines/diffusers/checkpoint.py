"""Write a diffusers SDXL/SD1.5 pipeline as an original-layout single-file checkpoint.

Model sites publish SDXL checkpoints in the original (Stability "sgm") key layout:
``model.diffusion_model.input_blocks.4.1...`` for the UNet, ``first_stage_model.`` for the VAE,
``conditioner.embedders.0.transformer.text_model.`` (CLIP-L) and ``conditioner.embedders.1.model.``
(OpenCLIP-bigG, fused ``in_proj`` attention) for the text encoders. diffusers reads that layout
(``from_single_file``) but has no writer; this module is the inverse mapping, used to make
single-file checkpoints from tiny pipelines and to map LoRA block names
(:func:`unet_module_to_original`). Example::

    save_single_file(pipe, "tiny-sdxl.safetensors")
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
_RESNET = [
    ("norm1", "in_layers.0"),
    ("conv1", "in_layers.2"),
    ("norm2", "out_layers.0"),
    ("conv2", "out_layers.3"),
    ("time_emb_proj", "emb_layers.1"),
    ("conv_shortcut", "skip_connection"),
]
_UNET_TOP = {
    "time_embedding.linear_1": "time_embed.0",
    "time_embedding.linear_2": "time_embed.2",
    "add_embedding.linear_1": "label_emb.0.0",
    "add_embedding.linear_2": "label_emb.0.2",
    "class_embedding.linear_1": "label_emb.0.0",
    "class_embedding.linear_2": "label_emb.0.2",
    "conv_in": "input_blocks.0.0",
    "conv_norm_out": "out.0",
    "conv_out": "out.2",
}


def unet_module_to_original(name: str, layers_per_block: int, attention_up_blocks: set[int]) -> str:
    """Map a diffusers UNet module path to the original layout (both without ``.weight``).

    ``down_blocks.1.attentions.0.proj_in`` -> ``input_blocks.4.1.proj_in`` (2 layers per block).
    ``attention_up_blocks`` holds the indices of up blocks that have attentions (their
    upsampler sits at sub-index 2 instead of 1).
    """
    n = layers_per_block + 1
    for old, new in _UNET_TOP.items():
        if name == old or name.startswith(old + "."):
            return new + name[len(old) :]
    m = re.match(
        r"(down|up)_blocks\.(\d+)\.(resnets|attentions|downsamplers|upsamplers)\.(\d+)(.*)", name
    )
    if m:
        side, block, kind, index, rest = (
            m.group(1),
            int(m.group(2)),
            m.group(3),
            int(m.group(4)),
            m.group(5),
        )
        if side == "down":
            if kind == "downsamplers":
                return f"input_blocks.{1 + block * n + layers_per_block}.0.op" + rest.removeprefix(
                    ".conv"
                )
            sub = 0 if kind == "resnets" else 1
            out = f"input_blocks.{1 + block * n + index}.{sub}"
        else:
            if kind == "upsamplers":
                sub = 2 if block in attention_up_blocks else 1
                return f"output_blocks.{block * n + layers_per_block}.{sub}" + rest
            sub = 0 if kind == "resnets" else 1
            out = f"output_blocks.{block * n + index}.{sub}"
        return out + (_resnet_rest(rest) if kind == "resnets" else rest)
    m = re.match(r"mid_block\.(resnets|attentions)\.(\d+)(.*)", name)
    if m:
        kind, index, rest = m.group(1), int(m.group(2)), m.group(3)
        if kind == "attentions":
            return "middle_block.1" + rest
        return f"middle_block.{0 if index == 0 else 2}" + _resnet_rest(rest)
    raise KeyError(f"unet key {name!r} has no original-layout counterpart")


def _resnet_rest(rest: str) -> str:
    for old, new in _RESNET:
        if rest.startswith("." + old):
            return "." + new + rest[len(old) + 1 :]
    return rest


def unet_to_original(state: dict[str, Any], config: Any) -> dict[str, Any]:
    """UNet state dict (diffusers keys) -> original keys with ``model.diffusion_model.``."""
    up_attn = {int(k.split(".")[1]) for k in state if re.match(r"up_blocks\.\d+\.attentions\.", k)}
    out = {}
    for key, value in state.items():
        module, _, param = key.rpartition(".")
        out[
            UNET_PREFIX
            + unet_module_to_original(module, config.layers_per_block, up_attn)
            + "."
            + param
        ] = value
    return out


def vae_to_original(state: dict[str, Any], config: Any) -> dict[str, Any]:
    """VAE state dict -> original keys with ``first_stage_model.`` (attention as 1x1 convs)."""
    n_up = len(config.up_block_types)
    out = {}
    for key, value in state.items():
        new = key
        m = re.match(
            r"(encoder|decoder)\.(down|up)_blocks\.(\d+)\.(resnets|downsamplers|upsamplers)\.(\d+)\.(.*)",
            key,
        )
        if m:
            part, side, block, kind, index, rest = m.groups()
            block = int(block) if side == "down" else n_up - 1 - int(block)
            if kind == "resnets":
                new = f"{part}.{side}.{block}.block.{index}.{rest.replace('conv_shortcut', 'nin_shortcut')}"
            else:
                new = (
                    f"{part}.{side}.{block}.{'downsample' if side == 'down' else 'upsample'}.{rest}"
                )
        m = re.match(r"(encoder|decoder)\.mid_block\.resnets\.(\d+)\.(.*)", key)
        if m:
            part, index, rest = m.groups()
            new = (
                f"{part}.mid.block_{int(index) + 1}.{rest.replace('conv_shortcut', 'nin_shortcut')}"
            )
        m = re.match(r"(encoder|decoder)\.mid_block\.attentions\.0\.(.*)", key)
        if m:
            part, rest = m.groups()
            for old, repl in (
                ("group_norm", "norm"),
                ("to_q", "q"),
                ("to_k", "k"),
                ("to_v", "v"),
                ("to_out.0", "proj_out"),
            ):
                if rest.startswith(old + "."):
                    rest = repl + rest[len(old) :]
                    break
            new = f"{part}.mid.attn_1.{rest}"
            if value.ndim == 2:
                value = value[:, :, None, None]
        new = new.replace("conv_norm_out", "norm_out")
        out[VAE_PREFIX + new] = value
    return out


def clip_to_original(state: dict[str, Any], prefix: str) -> dict[str, Any]:
    """CLIP-L text encoder (Hugging Face layout) -> ``prefix + text_model.*`` keys."""
    return {
        prefix + (k if k.startswith("text_model.") else "text_model." + k): v
        for k, v in state.items()
    }


def open_clip_to_original(state: dict[str, Any], prefix: str) -> dict[str, Any]:
    """CLIPTextModelWithProjection -> OpenCLIP layout (``resblocks``, fused ``in_proj``)."""
    import torch

    state = {k.removeprefix("text_model."): v for k, v in state.items()}
    out: dict[str, Any] = {
        prefix + "positional_embedding": state.pop("embeddings.position_embedding.weight"),
        prefix + "token_embedding.weight": state.pop("embeddings.token_embedding.weight"),
        prefix + "ln_final.weight": state.pop("final_layer_norm.weight"),
        prefix + "ln_final.bias": state.pop("final_layer_norm.bias"),
        prefix + "text_projection": state.pop("text_projection.weight").T.contiguous(),
    }
    state.pop("embeddings.position_ids", None)
    fused: dict[str, dict[str, Any]] = {}
    for key, value in state.items():
        m = re.match(r"encoder\.layers\.(\d+)\.(.*)", key)
        if not m:
            raise KeyError(f"text encoder key {key!r} has no OpenCLIP counterpart")
        layer, rest = m.groups()
        base = f"{prefix}transformer.resblocks.{layer}."
        qkv = re.match(r"self_attn\.([qkv])_proj\.(weight|bias)", rest)
        if qkv:
            fused.setdefault(f"{base}attn.in_proj_{qkv.group(2)}", {})[qkv.group(1)] = value
            continue
        rest = (
            rest.replace("self_attn.", "attn.")
            .replace("layer_norm1", "ln_1")
            .replace("layer_norm2", "ln_2")
            .replace("mlp.fc1", "mlp.c_fc")
            .replace("mlp.fc2", "mlp.c_proj")
        )
        out[base + rest] = value
    for key, parts in fused.items():
        out[key] = torch.cat([parts["q"], parts["k"], parts["v"]], dim=0)
    return out


def pipeline_to_original(pipe: Any) -> dict[str, Any]:
    """The whole SDXL or SD1.5 pipeline as one original-layout state dict."""
    state = unet_to_original(pipe.unet.state_dict(), pipe.unet.config)
    state.update(vae_to_original(pipe.vae.state_dict(), pipe.vae.config))
    if getattr(pipe, "text_encoder_2", None) is not None:
        state.update(
            clip_to_original(pipe.text_encoder.state_dict(), "conditioner.embedders.0.transformer.")
        )
        state.update(
            open_clip_to_original(
                pipe.text_encoder_2.state_dict(), "conditioner.embedders.1.model."
            )
        )
    else:
        state.update(
            clip_to_original(pipe.text_encoder.state_dict(), "cond_stage_model.transformer.")
        )
    return state


def save_single_file(pipe: Any, path: str | Path) -> Path:
    """Write ``pipe`` as an original-layout ``.safetensors`` checkpoint."""
    from safetensors.torch import save_file

    state = {k: v.detach().contiguous() for k, v in pipeline_to_original(pipe).items()}
    save_file(state, str(path))
    return Path(path)


# FLUX: diffusers FluxTransformer2DModel module -> (original BFL module, part of a fused
# weight). The original layout fuses q/k/v (double blocks) and q/k/v/mlp (single blocks'
# linear1) into one weight; a part index says which slice, in concatenation order.
_FLUX_DOUBLE = {
    "attn.to_q": ("img_attn.qkv", 0),
    "attn.to_k": ("img_attn.qkv", 1),
    "attn.to_v": ("img_attn.qkv", 2),
    "attn.add_q_proj": ("txt_attn.qkv", 0),
    "attn.add_k_proj": ("txt_attn.qkv", 1),
    "attn.add_v_proj": ("txt_attn.qkv", 2),
    "attn.to_out.0": ("img_attn.proj", None),
    "attn.to_add_out": ("txt_attn.proj", None),
    "norm1.linear": ("img_mod.lin", None),
    "norm1_context.linear": ("txt_mod.lin", None),
    "ff.net.0.proj": ("img_mlp.0", None),
    "ff.net.2": ("img_mlp.2", None),
    "ff_context.net.0.proj": ("txt_mlp.0", None),
    "ff_context.net.2": ("txt_mlp.2", None),
}
_FLUX_SINGLE = {
    "attn.to_q": ("linear1", 0),
    "attn.to_k": ("linear1", 1),
    "attn.to_v": ("linear1", 2),
    "proj_mlp": ("linear1", 3),
    "proj_out": ("linear2", None),
    "norm.linear": ("modulation.lin", None),
}
_FLUX_TOP = {
    "x_embedder": "img_in",
    "context_embedder": "txt_in",
    "time_text_embed.timestep_embedder.linear_1": "time_in.in_layer",
    "time_text_embed.timestep_embedder.linear_2": "time_in.out_layer",
    "time_text_embed.text_embedder.linear_1": "vector_in.in_layer",
    "time_text_embed.text_embedder.linear_2": "vector_in.out_layer",
    "time_text_embed.guidance_embedder.linear_1": "guidance_in.in_layer",
    "time_text_embed.guidance_embedder.linear_2": "guidance_in.out_layer",
    "proj_out": "final_layer.linear",
    "norm_out.linear": "final_layer.adaLN_modulation.1",  # shift/scale halves swapped
}


def flux_module_to_original(name: str) -> tuple[str, int | None]:
    """Map a diffusers FLUX transformer Linear module path to the original (BFL) layout.

    Returns the original module path and, for a slice of a fused weight, the part index:
    ``transformer_blocks.0.attn.to_k`` -> (``double_blocks.0.img_attn.qkv``, 1);
    ``single_transformer_blocks.3.proj_mlp`` -> (``single_blocks.3.linear1``, 3).
    """
    if name in _FLUX_TOP:
        return _FLUX_TOP[name], None
    m = re.fullmatch(r"(single_)?transformer_blocks\.(\d+)\.(.+)", name)
    if m:
        table, prefix = (
            (_FLUX_SINGLE, "single_blocks") if m.group(1) else (_FLUX_DOUBLE, "double_blocks")
        )
        if m.group(3) in table:
            module, part = table[m.group(3)]
            return f"{prefix}.{m.group(2)}.{module}", part
    raise KeyError(f"flux transformer module {name!r} has no original-layout counterpart")


def flux_to_original(state: dict[str, Any]) -> dict[str, Any]:
    """FLUX transformer state dict (diffusers keys) -> original BFL keys (fused q/k/v/mlp,
    ``*.scale`` RMS norms, swapped final modulation), without a prefix."""
    import torch

    norms = {
        "attn.norm_q": "img_attn.norm.query_norm",
        "attn.norm_k": "img_attn.norm.key_norm",
        "attn.norm_added_q": "txt_attn.norm.query_norm",
        "attn.norm_added_k": "txt_attn.norm.key_norm",
    }
    out: dict[str, Any] = {}
    fused: dict[str, dict[int, Any]] = {}
    for key, value in state.items():
        module, _, param = key.rpartition(".")
        m = re.fullmatch(r"(single_)?transformer_blocks\.(\d+)\.(attn\.norm_\w+)", module)
        if m:
            block = f"{'single_blocks' if m.group(1) else 'double_blocks'}.{m.group(2)}"
            norm = norms[m.group(3)]
            if m.group(1):
                norm = norm.removeprefix("img_attn.")
            out[f"{block}.{norm}.scale"] = value
            continue
        original, part = flux_module_to_original(module)
        if module == "norm_out.linear":
            scale, shift = value.chunk(2, dim=0)  # diffusers (scale, shift), BFL (shift, scale)
            value = torch.cat([shift, scale], dim=0)
        if part is None:
            out[f"{original}.{param}"] = value
        else:
            fused.setdefault(f"{original}.{param}", {})[part] = value
    for key, parts in fused.items():
        out[key] = torch.cat([parts[i] for i in sorted(parts)], dim=0)
    return out
