"""Does SDXL LoRA training fit a 24 GB card? Peak VRAM and it/s of `likeness train`'s step.

Where a CUDA device exists: builds SDXL's UNet and VAE from the configs shipped in
`likeness/engines/diffusers/configs/sdxl` with random weights, directly on the GPU (the UNet in
bf16, the VAE in fp32, as `likeness train` holds them; the text encoders are not on the GPU while
training: captions are cached first and the encoders moved off). Then, with the trainer's own
parts: `prepare_train_model` injects the LoRA (rank 64, alpha 32, kohya's targets) and turns on
gradient checkpointing, the SDXL objective computes the loss at 1024x1024 (128x128 latents) from
random cached latents and caption embeddings, accelerate runs it in bf16, AdamW steps. Prints
peak VRAM (allocated and reserved by torch, and used on the device) and steps per second.

Without CUDA it says so and exits 0. `--tiny-cpu` runs the same code on the tiny SDXL on the CPU
(a check of this script, not of the claim).

Run: .venv/bin/python bench/gpu_train_check.py [--steps 10] [--size 1024] [--rank 64] [--batch 1]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
GIB = 1024**3
CARD_GIB = 24


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--rank", type=int, default=64)
    parser.add_argument("--alpha", type=float, default=32.0)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--tiny-cpu", action="store_true", help="check the script on the CPU")
    args = parser.parse_args(argv)

    import torch

    if not args.tiny_cpu and not torch.cuda.is_available():
        print("no CUDA device here: this check needs a GPU (nothing was measured)")
        return 0
    from accelerate import Accelerator

    from likeness.engines.diffusers.loading import CONFIG_ROOT, ModelSource
    from likeness.train.objectives import Batch, make_objective
    from likeness.train.optim import build_optimizer
    from likeness.train.recipe import TrainRecipe
    from likeness.train.setup import prepare_train_model

    recipe = TrainRecipe(
        family="sdxl",
        rank=args.rank,
        alpha=args.alpha,
        mixed_precision="no" if args.tiny_cpu else "bf16",
        gradient_checkpointing=True,
        resolution=args.size if not args.tiny_cpu else 64,
        batch=args.batch,
    )
    device = torch.device("cpu" if args.tiny_cpu else "cuda")
    # 1. SDXL with random weights, built on the device.
    pipe = _tiny_sdxl() if args.tiny_cpu else _random_sdxl(device, CONFIG_ROOT / "sdxl")
    source = ModelSource("folder", CONFIG_ROOT / "sdxl", "sdxl")
    model = prepare_train_model(pipe, source, recipe, device, lora_seed=0)
    lora = sum(p.numel() for _, p in model.trainable_parameters())
    # 2. The trainer's objective, optimizer and accelerate, on random cached inputs.
    objective = make_objective(model, recipe)
    accelerator = Accelerator(mixed_precision=recipe.mixed_precision, cpu=args.tiny_cpu)
    params = [p for _, p in model.trainable_parameters()]
    optimizer = build_optimizer(recipe, [("unet", params)])
    _, optimizer = accelerator.prepare(model.denoiser, optimizer)
    size = recipe.resolution
    latent = size // 8
    text_width = model.denoiser.config.cross_attention_dim
    pooled_width = model.denoiser.config.projection_class_embeddings_input_dim - 6 * (
        model.denoiser.config.addition_time_embed_dim
    )
    batch = Batch(
        latent_mean=torch.randn(args.batch, 4, latent, latent),
        latent_std=torch.full((args.batch, 4, latent, latent), 0.01),
        text={
            "prompt_embeds": torch.randn(args.batch, 77, text_width),
            "pooled": torch.randn(args.batch, pooled_width),
        },
        captions=[""] * args.batch,
        original_sizes=[(size, size)] * args.batch,
        crops=[(0, 0)] * args.batch,
        size=(size, size),
        images=["random"] * args.batch,
    )
    if not args.tiny_cpu:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    # 3. Optimizer steps, as the trainer's loop runs them.
    model.denoiser.train()
    times = []
    for step in range(args.steps):
        began = time.perf_counter()
        loss = objective.loss(batch, torch.Generator().manual_seed(step))
        accelerator.backward(loss)
        accelerator.clip_grad_norm_(params, recipe.max_grad_norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        value = float(loss.detach())
        times.append(time.perf_counter() - began)
    steady = times[2:] or times
    print(
        f"SDXL UNet ({sum(p.numel() for p in model.denoiser.parameters()) / 1e9:.2f} B "
        f"parameters with the LoRA), LoRA rank {args.rank}: {lora / 1e6:.1f} M trainable; "
        f"{size}x{size}, batch {args.batch}, {recipe.mixed_precision}, gradient checkpointing"
    )
    print(f"{args.steps} steps, last loss {value:.4f}: {1 / statistics.median(steady):.2f} it/s")
    if args.tiny_cpu:
        return 0
    allocated = torch.cuda.max_memory_allocated() / GIB
    reserved = torch.cuda.max_memory_reserved() / GIB
    free, total = torch.cuda.mem_get_info()
    print(
        f"peak VRAM: {allocated:.2f} GiB allocated, {reserved:.2f} GiB reserved by torch; "
        f"{(total - free) / GIB:.2f} of {total / GIB:.1f} GiB used on {torch.cuda.get_device_name()}"
    )
    verdict = "fits" if reserved < CARD_GIB * 0.95 else "does NOT fit"
    print(f"{verdict} a {CARD_GIB} GB card with 5% to spare (a running ComfyUI needs ~8 GB more)")
    return 0


def _random_sdxl(device, config):
    """SDXL (UNet bf16, VAE fp32, no text encoders) with random weights made on ``device``."""
    import torch
    from diffusers import (
        AutoencoderKL,
        EulerDiscreteScheduler,
        StableDiffusionXLPipeline,
        UNet2DConditionModel,
    )

    with torch.device(device):
        unet = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(config / "unet"))
        unet = unet.to(torch.bfloat16)
        vae = AutoencoderKL.from_config(AutoencoderKL.load_config(config / "vae"))
    torch.cuda.empty_cache()
    return StableDiffusionXLPipeline(
        vae=vae,
        text_encoder=None,
        text_encoder_2=None,
        tokenizer=None,
        tokenizer_2=None,
        unet=unet,
        scheduler=EulerDiscreteScheduler.from_pretrained(str(config), subfolder="scheduler"),
    )


def _tiny_sdxl():
    from likeness.engines.diffusers.tiny import tiny_sdxl

    pipe = tiny_sdxl(seed=0)
    pipe.text_encoder = pipe.text_encoder_2 = None
    return pipe


if __name__ == "__main__":
    raise SystemExit(main())
