"""Single-file checkpoints: the original-layout writer, bit-exact reload, the shipped configs."""

from __future__ import annotations

import gzip
import json

import numpy as np
import pytest

from likeness.engines.diffusers.loading import CONFIG_ROOT, load_pipeline, resolve_model

CAT_IDS = [49406, 320, 1125, 539, 320, 2368, 49407]


def test_single_file_checkpoint_loads_back_bit_exactly(tiny_models):
    import torch

    folder = load_pipeline(
        resolve_model(str(tiny_models.sdxl), "sdxl"), device="cpu", dtype=torch.float32
    )
    # The tiny model's architecture is not SDXL's, so its own configs are the config folder.
    single = load_pipeline(
        resolve_model(str(tiny_models.sdxl_single), "sdxl"),
        device="cpu",
        dtype=torch.float32,
        config=tiny_models.sdxl,
    )
    for name in ("unet", "vae", "text_encoder", "text_encoder_2"):
        a = getattr(folder, name).state_dict()
        b = getattr(single, name).state_dict()
        assert set(a) == set(b), name
        for key in a:
            assert torch.equal(a[key], b[key]), f"{name}.{key}"


def test_pickle_checkpoint_loads_only_when_allowed(tiny_models, tmp_path):
    import torch
    from safetensors.torch import load_file

    from likeness.engines.base import EngineCannotHonour

    ckpt = tmp_path / "tiny.ckpt"
    torch.save({"state_dict": load_file(tiny_models.sdxl_single)}, ckpt)
    with pytest.raises(EngineCannotHonour):
        resolve_model(str(ckpt), "sdxl")
    pipe = load_pipeline(
        resolve_model(str(ckpt), "sdxl", allow_pickle=True),
        device="cpu",
        dtype=torch.float32,
        config=tiny_models.sdxl,
    )
    reference = load_file(tiny_models.sdxl_single)
    key = "model.diffusion_model.input_blocks.4.1.proj_in.weight"
    assert torch.equal(pipe.unet.down_blocks[1].attentions[0].proj_in.weight, reference[key])


def test_folder_with_one_pickle_component_loads_only_when_allowed(tiny_models, tmp_path):
    """A diffusers folder whose VAE has only a .bin file: refused without --allow-pickle,
    loaded with it (the other components still from their safetensors)."""
    import shutil

    import torch
    from safetensors.torch import load_file

    from likeness.engines.base import EngineCannotHonour

    folder = tmp_path / "mixed"
    shutil.copytree(tiny_models.sd15, folder)
    vae = folder / "vae" / "diffusion_pytorch_model.safetensors"
    weights = load_file(vae)
    torch.save(weights, vae.with_suffix(".bin"))
    vae.unlink()
    with pytest.raises(EngineCannotHonour, match="pickle"):
        resolve_model(str(folder), "sd15")
    pipe = load_pipeline(
        resolve_model(str(folder), "sd15", allow_pickle=True), device="cpu", dtype=torch.float32
    )
    name = "decoder.conv_in.weight"
    assert torch.equal(pipe.vae.state_dict()[name], weights[name])


def test_sd15_single_file_checkpoint_loads_back_bit_exactly(tiny_models):
    import torch

    folder = load_pipeline(
        resolve_model(str(tiny_models.sd15), "sd15"), device="cpu", dtype=torch.float32
    )
    single = load_pipeline(
        resolve_model(str(tiny_models.sd15_single), "sd15"),
        device="cpu",
        dtype=torch.float32,
        config=tiny_models.sd15,
    )
    for name in ("unet", "vae", "text_encoder"):
        a, b = getattr(folder, name).state_dict(), getattr(single, name).state_dict()
        assert set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a), name


def test_single_file_checkpoint_original_key_layout(tiny_models):
    from likeness.engines.diffusers.loras import safetensors_keys

    keys = set(safetensors_keys(tiny_models.sdxl_single))
    assert "model.diffusion_model.input_blocks.4.1.proj_in.weight" in keys
    assert "model.diffusion_model.output_blocks.2.2.conv.weight" in keys  # upsampler after attn
    assert "model.diffusion_model.middle_block.1.proj_out.weight" in keys
    assert "model.diffusion_model.label_emb.0.0.weight" in keys
    assert "first_stage_model.decoder.up.0.block.0.conv1.weight" in keys
    assert "first_stage_model.encoder.mid.attn_1.q.weight" in keys
    assert "conditioner.embedders.0.transformer.text_model.final_layer_norm.weight" in keys
    assert "conditioner.embedders.1.model.transformer.resblocks.0.attn.in_proj_weight" in keys
    assert "conditioner.embedders.1.model.text_projection" in keys


def test_engine_generates_the_same_image_from_single_file_and_folder(tiny_models, tiny_recipe):
    from likeness.engines.diffusers import DiffusersEngine

    recipe = tiny_recipe.with_overrides({"refiner.enabled": False})
    from_folder = DiffusersEngine().generate(recipe, 1)[0]
    engine = DiffusersEngine(config=tiny_models.sdxl)
    from_file = engine.generate(recipe.with_overrides({"model": str(tiny_models.sdxl_single)}), 1)[
        0
    ]
    assert np.array_equal(np.asarray(from_folder.image()), np.asarray(from_file.image()))
    assert len(from_file.provenance["model"]["sha256"]) == 64
    engine.release()


@pytest.mark.parametrize("family,tokenizers", [("sdxl", 2), ("sd15", 1)])
def test_shipped_config_folder_is_complete(family, tokenizers):
    from transformers import CLIPTokenizer

    folder = CONFIG_ROOT / family
    index = json.loads((folder / "model_index.json").read_text())
    for component, spec in index.items():
        if component.startswith("_") or not isinstance(spec, list) or spec[0] is None:
            continue
        assert (folder / component).is_dir(), component
    names = ["tokenizer", "tokenizer_2"][:tokenizers]
    for name in names:
        tok = CLIPTokenizer.from_pretrained(str(folder), subfolder=name)
        assert len(tok) == 49408
        assert tok("a photo of a cat").input_ids == CAT_IDS
    assert (CONFIG_ROOT / "LICENSE-open_clip.txt").is_file()


def test_shipped_sdxl_configs_build_the_real_architecture():
    from accelerate import init_empty_weights
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import (
        CLIPTextConfig,
        CLIPTextModel,
        CLIPTextModelWithProjection,
    )

    folder = CONFIG_ROOT / "sdxl"

    def count(model):
        return sum(p.numel() for p in model.parameters())

    with init_empty_weights():
        unet = UNet2DConditionModel.from_config(
            UNet2DConditionModel.load_config(folder, subfolder="unet")
        )
        vae = AutoencoderKL.from_config(AutoencoderKL.load_config(folder, subfolder="vae"))
        te1 = CLIPTextModel(CLIPTextConfig.from_pretrained(folder, subfolder="text_encoder"))
        te2 = CLIPTextModelWithProjection(
            CLIPTextConfig.from_pretrained(folder, subfolder="text_encoder_2")
        )
    # Published parameter counts of SDXL base 1.0.
    assert count(unet) == 2_567_463_684
    assert count(vae) == 83_653_863
    assert count(te1) == 123_060_480
    assert count(te2) == 694_659_840


def test_real_sdxl_layout_round_trips_through_diffusers_single_file_reader():
    """The real SDXL architecture (weights on the meta device): every parameter written by the
    converter under its original name is read back by diffusers' single-file code."""
    from accelerate import init_empty_weights
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from diffusers.loaders import single_file_utils as sfu
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    from likeness.engines.diffusers import checkpoint as ck

    folder = CONFIG_ROOT / "sdxl"
    with init_empty_weights():
        unet = UNet2DConditionModel.from_config(
            UNet2DConditionModel.load_config(folder, subfolder="unet")
        )
        vae = AutoencoderKL.from_config(AutoencoderKL.load_config(folder, subfolder="vae"))
        te1 = CLIPTextModel(CLIPTextConfig.from_pretrained(folder, subfolder="text_encoder"))
        te2 = CLIPTextModelWithProjection(
            CLIPTextConfig.from_pretrained(folder, subfolder="text_encoder_2")
        )

    def same(back, model):
        state = model.state_dict()
        assert set(back) == set(state)
        assert all(back[k].shape == state[k].shape for k in back)

    original = ck.unet_to_original(unet.state_dict(), unet.config)
    assert len(original) == 1680  # the UNet tensors of sd_xl_base_1.0.safetensors
    for name in (  # names as they appear in published SDXL checkpoints
        "input_blocks.7.1.transformer_blocks.9.attn2.to_k.weight",
        "input_blocks.3.0.op.weight",
        "middle_block.1.transformer_blocks.9.ff.net.2.bias",
        "output_blocks.2.2.conv.weight",
        "output_blocks.5.2.conv.bias",
        "output_blocks.8.0.skip_connection.weight",
        "label_emb.0.2.weight",
    ):
        assert "model.diffusion_model." + name in original, name
    same(sfu.convert_ldm_unet_checkpoint(original, dict(unet.config)), unet)
    original = ck.vae_to_original(vae.state_dict(), vae.config)
    assert "first_stage_model.decoder.up.3.upsample.conv.weight" in original
    assert "first_stage_model.encoder.down.1.block.0.nin_shortcut.weight" in original
    same(sfu.convert_ldm_vae_checkpoint(original, dict(vae.config)), vae)
    original = ck.clip_to_original(te1.state_dict(), "conditioner.embedders.0.transformer.")
    back = sfu.convert_ldm_clip_checkpoint(original)
    if not any(k.startswith("text_model.") for k in te1.state_dict()):
        back = {k.removeprefix("text_model."): v for k, v in back.items()}
    same(back, te1)
    prefix = "conditioner.embedders.1.model."
    original = ck.open_clip_to_original(te2.state_dict(), prefix)
    assert prefix + "transformer.resblocks.31.attn.in_proj_weight" in original
    same(sfu.convert_open_clip_checkpoint(te2, original, prefix=prefix), te2)


def test_clip_vocab_builder_layout(tmp_path):
    from likeness.engines.diffusers.clip_vocab import write_clip_vocab

    bpe = tmp_path / "bpe.txt.gz"
    with gzip.open(bpe, "wt", encoding="utf-8") as fh:
        fh.write("#header\nc a\nca t</w>\n")
    write_clip_vocab(bpe, tmp_path / "out")
    vocab = json.loads((tmp_path / "out" / "vocab.json").read_text())
    assert vocab["!"] == 0 and vocab["!</w>"] == 256
    assert vocab["ca"] == 512 and vocab["cat</w>"] == 513
    assert vocab["<|startoftext|>"] == 514 and vocab["<|endoftext|>"] == 515
    merges = (tmp_path / "out" / "merges.txt").read_text().splitlines()
    assert merges == ["#version: 0.2", "c a", "ca t</w>"]
