"""Tiny random-weight models built once per test session, fully offline.

`tiny_models` holds: tiny SDXL and SD1.5 diffusers folders, the same pipelines as
original-layout single-file checkpoints, a tiny FLUX folder with a diffusers-format LoRA, and one
SDXL UNet LoRA saved in three formats (diffusers
with its alpha metadata, kohya with original SDXL block names, kohya with diffusers block names)
plus a kohya copy with a different alpha.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"

SIZE = 64
LORA_RANK = 4
LORA_ALPHA = 8


@dataclass(frozen=True)
class TinyModels:
    sdxl: Path
    sdxl_single: Path
    flux: Path
    flux_lora: Path
    sd15: Path
    sd15_single: Path
    lora_diffusers: Path
    lora_kohya_original: Path
    lora_kohya_diffusers: Path
    lora_kohya_alpha4: Path
    lora_te_diffusers: Path
    lora_te_kohya: Path


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> TinyModels:
    import torch
    from diffusers import FluxPipeline, StableDiffusionXLPipeline
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict
    from safetensors.torch import save_file

    from likeness.engines.diffusers.checkpoint import save_single_file
    from likeness.engines.diffusers.kohya import text_encoder_lora_to_kohya, unet_lora_to_kohya
    from likeness.engines.diffusers.tiny import tiny_flux, tiny_sd15, tiny_sdxl

    root = tmp_path_factory.mktemp("tiny")
    pipe = tiny_sdxl(seed=0)
    pipe.save_pretrained(root / "sdxl")
    save_single_file(pipe, root / "sdxl-single.safetensors")
    sd15 = tiny_sd15(seed=0)
    sd15.save_pretrained(root / "sd15")
    save_single_file(sd15, root / "sd15-single.safetensors")
    flux = tiny_flux(seed=0)
    flux.save_pretrained(root / "flux")
    flux_config = LoraConfig(
        r=LORA_RANK,
        lora_alpha=LORA_ALPHA,
        init_lora_weights=False,
        target_modules=["to_q", "to_k", "to_v", "to_out.0"],
    )
    torch.manual_seed(2)
    flux.transformer.add_adapter(flux_config)
    FluxPipeline.save_lora_weights(
        root / "lora-flux",
        transformer_lora_layers=get_peft_model_state_dict(flux.transformer),
        transformer_lora_adapter_metadata=flux_config.to_dict(),
    )

    config = LoraConfig(
        r=LORA_RANK,
        lora_alpha=LORA_ALPHA,
        init_lora_weights=False,  # random A and B: the LoRA changes the output
        target_modules=["to_q", "to_k", "to_v", "to_out.0", "proj_in", "proj_out", "conv1"],
    )
    torch.manual_seed(1)
    pipe.unet.add_adapter(config)
    state = get_peft_model_state_dict(pipe.unet)
    StableDiffusionXLPipeline.save_lora_weights(
        root / "lora-diffusers",
        unet_lora_layers=state,
        unet_lora_adapter_metadata=config.to_dict(),
    )
    kohya = unet_lora_to_kohya(state, alpha=LORA_ALPHA, unet_config=pipe.unet.config)
    save_file(kohya, root / "lora-kohya-original.safetensors")
    save_file(
        unet_lora_to_kohya(state, alpha=LORA_ALPHA, layout="diffusers"),
        root / "lora-kohya-diffusers.safetensors",
    )
    save_file(
        unet_lora_to_kohya(state, alpha=LORA_ALPHA / 2, unet_config=pipe.unet.config),
        root / "lora-kohya-alpha4.safetensors",
    )
    # Text-encoder LoRAs (alpha 2 at rank 4) in both formats.
    te_config = LoraConfig(
        r=LORA_RANK,
        lora_alpha=2,
        init_lora_weights=False,
        target_modules=["q_proj", "k_proj", "v_proj", "out_proj"],
    )
    torch.manual_seed(3)
    pipe.text_encoder.add_adapter(te_config)
    pipe.text_encoder_2.add_adapter(te_config)
    te1 = get_peft_model_state_dict(pipe.text_encoder)
    te2 = get_peft_model_state_dict(pipe.text_encoder_2)
    StableDiffusionXLPipeline.save_lora_weights(
        root / "lora-te-diffusers",
        text_encoder_lora_layers=te1,
        text_encoder_2_lora_layers=te2,
        text_encoder_lora_adapter_metadata=te_config.to_dict(),
        text_encoder_2_lora_adapter_metadata=te_config.to_dict(),
    )
    te_kohya = text_encoder_lora_to_kohya(te1, alpha=2)
    te_kohya.update(text_encoder_lora_to_kohya(te2, alpha=2, encoder="text_encoder_2"))
    save_file(te_kohya, root / "lora-te-kohya.safetensors")
    return TinyModels(
        sdxl=root / "sdxl",
        sdxl_single=root / "sdxl-single.safetensors",
        flux=root / "flux",
        flux_lora=root / "lora-flux" / "pytorch_lora_weights.safetensors",
        sd15=root / "sd15",
        sd15_single=root / "sd15-single.safetensors",
        lora_diffusers=root / "lora-diffusers" / "pytorch_lora_weights.safetensors",
        lora_kohya_original=root / "lora-kohya-original.safetensors",
        lora_kohya_diffusers=root / "lora-kohya-diffusers.safetensors",
        lora_kohya_alpha4=root / "lora-kohya-alpha4.safetensors",
        lora_te_diffusers=root / "lora-te-diffusers" / "pytorch_lora_weights.safetensors",
        lora_te_kohya=root / "lora-te-kohya.safetensors",
    )


@pytest.fixture(scope="session")
def engine():
    """One engine for the session, so the loaded tiny pipeline is reused between tests."""
    from likeness.engines.diffusers import DiffusersEngine

    eng = DiffusersEngine()
    yield eng
    eng.release()


@pytest.fixture(scope="session")
def tiny_recipe(tiny_models: TinyModels):
    """A fast SDXL recipe on the tiny model: 64 px, 4 steps, refiner 2 steps at 0.5."""
    from likeness.recipes import Recipe

    return Recipe(
        model=str(tiny_models.sdxl),
        prompt="a photo of a person",
        negative="blurry",
        width=SIZE,
        height=SIZE,
        steps=4,
        seed=7,
    ).with_overrides({"refiner.steps": 2, "refiner.denoise": 0.5})
