"""Tiny random-weight SDXL, SD1.5, FLUX and Qwen-Image-Edit pipelines, built offline from configs.

They have the real architectures (and the real CLIP vocabulary), only narrow: tests, benchmarks
and the training code run every code path on CPU in well under a second per call. Nothing is
downloaded. Example::

    folder = save_tiny_pipeline("sdxl", tmp_path / "tiny-sdxl")   # a diffusers folder
    engine.generate(Recipe(model=str(folder), width=64, height=64, steps=4), n=1)

The two SDXL text encoders have different widths on purpose: with equal widths
``from_single_file`` would load encoder 1's weights into encoder 2 without an error.
"""

from __future__ import annotations

import functools
import string
from collections.abc import Callable
from pathlib import Path
from typing import Any

from likeness.engines.diffusers.loading import config_folder

TINY_SIZE = 64  # pixels; latents are 8x8 with the tiny VAEs (scale factor 8)


def _clip_tokenizer(family: str, subfolder: str = "tokenizer") -> Any:
    from transformers import CLIPTokenizer

    return CLIPTokenizer.from_pretrained(str(config_folder(family)), subfolder=subfolder)


def _clip_text_config(hidden: int, projection: int) -> Any:
    from transformers import CLIPTextConfig

    return CLIPTextConfig(
        bos_token_id=49406,
        eos_token_id=49407,
        pad_token_id=49407,
        hidden_size=hidden,
        intermediate_size=hidden * 2,
        layer_norm_eps=1e-05,
        num_attention_heads=4,
        num_hidden_layers=2,
        vocab_size=49408,
        max_position_embeddings=77,
        hidden_act="gelu",
        projection_dim=projection,
    )


def _vae(latent_channels: int = 4, **extra: Any) -> Any:
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(8, 8, 8, 8),
        layers_per_block=1,
        latent_channels=latent_channels,
        norm_num_groups=4,
        sample_size=TINY_SIZE,
        **extra,
    )


def _seeded(build: Callable[[int], Any]) -> Callable[[int], Any]:
    """Build with torch's RNG seeded by ``seed``, restoring the caller's RNG state after."""

    @functools.wraps(build)
    def seeded(seed: int = 0) -> Any:
        import torch

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return build(seed)

    return seeded


def _sd15_unet(unet_class: Any, *, in_channels: int) -> Any:
    """The SD1.5-layout UNet (4 input channels; 8 for InstructPix2Pix's image conditioning)."""
    return unet_class(
        block_out_channels=(32, 64),
        layers_per_block=2,
        sample_size=TINY_SIZE // 8,
        in_channels=in_channels,
        out_channels=4,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=32,
        attention_head_dim=8,
        norm_num_groups=16,
    )


@_seeded
def tiny_sdxl(seed: int = 0) -> Any:
    """A StableDiffusionXLPipeline with tiny random weights (fp32, eval mode)."""
    from diffusers import (
        EulerDiscreteScheduler,
        StableDiffusionXLPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    unet = UNet2DConditionModel(
        block_out_channels=(32, 64),
        layers_per_block=2,
        sample_size=TINY_SIZE // 8,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4),
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=8,
        transformer_layers_per_block=(1, 2),
        projection_class_embeddings_input_dim=6 * 8 + 32,
        cross_attention_dim=32 + 48,
        norm_num_groups=16,
    )
    vae = _vae(scaling_factor=0.13025, force_upcast=False)
    text_encoder = CLIPTextModel(_clip_text_config(32, 32))
    text_encoder_2 = CLIPTextModelWithProjection(_clip_text_config(48, 32))
    scheduler = EulerDiscreteScheduler.from_pretrained(
        str(config_folder("sdxl")), subfolder="scheduler"
    )
    pipe = StableDiffusionXLPipeline(
        vae=vae,
        text_encoder=text_encoder,
        text_encoder_2=text_encoder_2,
        tokenizer=_clip_tokenizer("sdxl", "tokenizer"),
        tokenizer_2=_clip_tokenizer("sdxl", "tokenizer_2"),
        unet=unet,
        scheduler=scheduler,
    )
    _eval(pipe)
    return pipe


@_seeded
def tiny_sd15(seed: int = 0) -> Any:
    """A StableDiffusionPipeline (SD1.5 layout) with tiny random weights."""
    from diffusers import PNDMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextModel

    unet = _sd15_unet(UNet2DConditionModel, in_channels=4)
    pipe = StableDiffusionPipeline(
        vae=_vae(),
        text_encoder=CLIPTextModel(_clip_text_config(32, 32)),
        tokenizer=_clip_tokenizer("sd15"),
        unet=unet,
        scheduler=PNDMScheduler.from_pretrained(str(config_folder("sd15")), subfolder="scheduler"),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    _eval(pipe)
    return pipe


@_seeded
def tiny_instruct_pix2pix(seed: int = 0) -> Any:
    """A StableDiffusionInstructPix2PixPipeline (SD1.5 layout, 8 UNet input channels)."""
    from diffusers import (
        EulerAncestralDiscreteScheduler,
        StableDiffusionInstructPix2PixPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextModel

    unet = _sd15_unet(UNet2DConditionModel, in_channels=8)
    pipe = StableDiffusionInstructPix2PixPipeline(
        vae=_vae(),
        text_encoder=CLIPTextModel(_clip_text_config(32, 32)),
        tokenizer=_clip_tokenizer("sd15"),
        unet=unet,
        scheduler=EulerAncestralDiscreteScheduler.from_pretrained(
            str(config_folder("sd15")), subfolder="scheduler"
        ),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    _eval(pipe)
    return pipe


def tiny_t5_tokenizer() -> Any:
    """A T5 (Unigram + Metaspace, ``</s>`` appended) tokenizer over letters and digits."""
    from transformers import T5TokenizerFast

    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("\u2581", -2.0)]
    pieces += [(c, -3.0) for c in string.ascii_lowercase + string.digits + ",.-"]
    pieces += [("\u2581" + c, -2.5) for c in string.ascii_lowercase + string.digits]
    return T5TokenizerFast(vocab=pieces, extra_ids=0, model_max_length=512)


@_seeded
def tiny_flux(seed: int = 0) -> Any:
    """A FluxPipeline with tiny random weights (CLIP + T5 text encoders, 1+1 blocks)."""
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel
    from transformers import CLIPTextModel, T5Config, T5EncoderModel

    transformer = FluxTransformer2DModel(
        patch_size=1,
        in_channels=16,
        num_layers=1,
        num_single_layers=1,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=32,
        pooled_projection_dim=32,
        axes_dims_rope=[4, 4, 8],
    )
    t5_tokenizer = tiny_t5_tokenizer()
    t5 = T5EncoderModel(
        T5Config(
            vocab_size=len(t5_tokenizer),
            d_model=32,
            d_kv=8,
            d_ff=37,
            num_layers=2,
            num_heads=4,
            relative_attention_num_buckets=8,
            pad_token_id=0,
            eos_token_id=1,
        )
    )
    vae = _vae(
        latent_channels=4,
        use_quant_conv=False,
        use_post_quant_conv=False,
        shift_factor=0.0609,
        scaling_factor=1.5035,
    )
    pipe = FluxPipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(),
        vae=vae,
        text_encoder=CLIPTextModel(_clip_text_config(32, 32)),
        tokenizer=_clip_tokenizer("sdxl", "tokenizer"),
        text_encoder_2=t5,
        tokenizer_2=t5_tokenizer,
        transformer=transformer,
    )
    _eval(pipe)
    return pipe


def tiny_qwen_tokenizer() -> Any:
    """A byte-level Qwen2 tokenizer (one token per byte, no merges) with the chat and vision
    marks Qwen-Image-Edit's prompt template uses."""
    from transformers import Qwen2Tokenizer

    from likeness.engines.diffusers.clip_vocab import bytes_to_unicode

    vocab = {char: index for index, char in enumerate(bytes_to_unicode().values())}
    for token in QWEN_SPECIAL_TOKENS:
        vocab[token] = len(vocab)
    tokenizer = Qwen2Tokenizer(vocab=vocab, merges=[])
    tokenizer.add_special_tokens({"additional_special_tokens": list(QWEN_SPECIAL_TOKENS[1:])})
    return tokenizer


QWEN_SPECIAL_TOKENS = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
)
QWEN_IMAGE_PIXELS = (56 * 56, 112 * 112)
"""(min, max) pixels the tiny processor gives the vision tower: a few patches per image."""


@_seeded
def tiny_qwen_image_edit(seed: int = 0) -> Any:
    """A QwenImageEditPipeline with tiny random weights: a 2-layer Qwen2.5-VL text encoder
    (with its vision tower), a 2-block QwenImage transformer and an 8x AutoencoderKLQwenImage.

    The pipeline resizes the control image to about one megapixel whatever its size; the VAE
    is narrow so that this costs about a second on CPU.
    """
    from diffusers import (
        AutoencoderKLQwenImage,
        FlowMatchEulerDiscreteScheduler,
        QwenImageEditPipeline,
        QwenImageTransformer2DModel,
    )
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    from likeness.engines.diffusers.edit import qwen_processor_from_parts

    tokenizer = tiny_qwen_tokenizer()
    ids = {token: tokenizer.convert_tokens_to_ids(token) for token in QWEN_SPECIAL_TOKENS}
    config = Qwen2_5_VLConfig(
        text_config={
            "hidden_size": 16,
            "intermediate_size": 16,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "num_key_value_heads": 2,
            "rope_scaling": {"mrope_section": [1, 1, 2], "rope_type": "default", "type": "default"},
            "rope_theta": 1e6,
            "vocab_size": len(tokenizer),
            "bos_token_id": ids["<|endoftext|>"],
            "eos_token_id": ids["<|im_end|>"],
        },
        vision_config={
            "depth": 2,
            "hidden_size": 16,
            "intermediate_size": 16,
            "num_heads": 2,
            "out_hidden_size": 16,
        },
        hidden_size=16,
        vocab_size=len(tokenizer),
        bos_token_id=ids["<|endoftext|>"],
        eos_token_id=ids["<|im_end|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
        vision_token_id=ids["<|vision_pad|>"],
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
    )
    transformer = QwenImageTransformer2DModel(
        patch_size=2,
        in_channels=16,
        out_channels=4,
        num_layers=2,
        attention_head_dim=16,
        num_attention_heads=3,
        joint_attention_dim=16,
        guidance_embeds=False,
        axes_dims_rope=(8, 4, 4),
    )
    vae = AutoencoderKLQwenImage(
        base_dim=4,
        z_dim=4,
        dim_mult=[1, 2, 2, 2],
        num_res_blocks=1,
        temperal_downsample=[False, True, True],
        latents_mean=[0.0] * 4,
        latents_std=[1.0] * 4,
    )
    pipe = QwenImageEditPipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(),
        vae=vae,
        text_encoder=Qwen2_5_VLForConditionalGeneration(config),
        tokenizer=tokenizer,
        processor=qwen_processor_from_parts(tokenizer, *QWEN_IMAGE_PIXELS),
        transformer=transformer,
    )
    _eval(pipe)
    return pipe


def _eval(pipe: Any) -> None:
    # Pipelines built from components start in train() mode.
    for component in pipe.components.values():
        if hasattr(component, "eval"):
            component.eval()


BUILDERS = {
    "sdxl": tiny_sdxl,
    "sd15": tiny_sd15,
    "flux": tiny_flux,
    "instruct_pix2pix": tiny_instruct_pix2pix,
    "qwen_image_edit": tiny_qwen_image_edit,
}


def save_tiny_pipeline(family: str, folder: str | Path, seed: int = 0) -> Path:
    """Build the tiny pipeline of ``family`` (or "instruct_pix2pix" / "qwen_image_edit", edit
    models) and save it as a diffusers folder (safetensors)."""
    from likeness.engines.diffusers.loading import quiet_loading

    folder = Path(folder)
    pipe = BUILDERS[family](seed)
    with quiet_loading():
        pipe.save_pretrained(str(folder), safe_serialization=True)
    if family == "qwen_image_edit":
        from likeness.engines.diffusers.edit import write_qwen_folder_index

        write_qwen_folder_index(folder)
    return folder
