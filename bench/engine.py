"""Diffusers engine overhead: `DiffusersEngine.generate` vs a bare diffusers pipeline call.

Builds a tiny random-weight SDXL pipeline (offline), then times, interleaved in the same run:
  - baseline: `StableDiffusionXLPipeline.__call__` with the same prompt, size, steps, CFG,
    dpmpp_2m + karras scheduler and seeded generator, returning PIL images;
  - candidate: `DiffusersEngine.generate(recipe, n)` on the same model folder and settings
    (refiner off), which also checks the recipe, maps the scheduler, builds provenance and
    encodes the PNG with its metadata chunks.
Prints the median wall time per image of each and the ratio (target: at most 1.05).

Then the identity pass (IP-Adapter FaceID on the whole image, tiny random-weight adapter and
tiny InsightFace ONNX models), interleaved in the same run:
  - baseline: the img2img view of the same model with the same adapter loaded once through
    `load_ip_adapter`, called with `ip_adapter_image_embeds`, the same steps and strength;
  - candidate: the engine's identity pass on the same image (its `identity_s` timing), which
    also swaps the adapter in and out, switches LoRAs, reads the cached reference embedding and
    records provenance.

Run: .venv/bin/python bench/engine.py [--rounds 7] [--size 256] [--steps 12] [--images 2]
     [--identity-only]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--images", type=int, default=2, help="images per call (one batch)")
    parser.add_argument("--identity-only", action="store_true", help="time the identity pass only")
    args = parser.parse_args()
    if args.identity_only:
        bench_identity(args)
        return

    import torch
    from diffusers import DPMSolverMultistepScheduler, StableDiffusionXLPipeline

    from likeness.engines.diffusers import DiffusersEngine
    from likeness.engines.diffusers.loading import quiet_loading
    from likeness.engines.diffusers.tiny import save_tiny_pipeline
    from likeness.recipes import Recipe

    with tempfile.TemporaryDirectory() as tmp:
        folder = save_tiny_pipeline("sdxl", Path(tmp) / "tiny-sdxl")
        recipe = Recipe(
            model=str(folder),
            prompt="a photo of a person, studio light",
            negative="blurry",
            width=args.size,
            height=args.size,
            steps=args.steps,
            cfg=4.0,
            seed=1,
            batch=args.images,
        ).with_overrides({"refiner.enabled": False})

        with quiet_loading():
            bare = StableDiffusionXLPipeline.from_pretrained(str(folder))
        bare.set_progress_bar_config(disable=True)
        bare.scheduler = DPMSolverMultistepScheduler.from_config(
            bare.scheduler.config, algorithm_type="dpmsolver++", use_karras_sigmas=True
        )

        def run_bare() -> None:
            bare(
                prompt=[recipe.prompt] * args.images,
                negative_prompt=[recipe.negative] * args.images,
                width=args.size,
                height=args.size,
                num_inference_steps=args.steps,
                guidance_scale=recipe.cfg,
                generator=[torch.Generator("cpu").manual_seed(1 + i) for i in range(args.images)],
            )

        engine = DiffusersEngine()

        load_times: list[float] = []

        def run_engine() -> None:
            images = engine.generate(recipe, args.images)
            load_times.append(images[0].provenance["timings"]["load_s"])

        run_bare()  # warm up both (first calls allocate and load)
        run_engine()
        bare_times, engine_times = [], []
        for round_index in range(args.rounds):
            order = [(run_bare, bare_times), (run_engine, engine_times)]
            if round_index % 2:
                order.reverse()
            for fn, times in order:
                start = time.perf_counter()
                fn()
                times.append((time.perf_counter() - start) / args.images)

    base, cand = statistics.median(bare_times), statistics.median(engine_times)
    print("per round (ms/image), bare:", " ".join(f"{t * 1000:.0f}" for t in bare_times))
    print("per round (ms/image), engine:", " ".join(f"{t * 1000:.0f}" for t in engine_times))
    print(
        f"engine set-up per call (cached model, scheduler, checks): median "
        f"{statistics.median(load_times[1:]) * 1000:.1f} ms"
    )
    print(
        f"tiny SDXL {args.size}x{args.size}, {args.steps} steps, {args.images} images per call, "
        f"{args.rounds} rounds (medians)"
    )
    print(f"bare diffusers pipeline: {base * 1000:8.1f} ms/image")
    print(f"DiffusersEngine.generate: {cand * 1000:7.1f} ms/image")
    ratio = cand / base
    print(f"engine/bare: {ratio:.3f}x (target <= 1.05: {'ok' if ratio <= 1.05 else 'over'})")
    bench_identity(args)


def bench_identity(args: argparse.Namespace) -> None:
    """The identity pass against a bare diffusers IP-Adapter img2img call."""
    import numpy as np
    import torch
    from diffusers import AutoPipelineForImage2Image, StableDiffusionXLPipeline
    from PIL import Image

    from likeness.data import FACES
    from likeness.engines.diffusers import DiffusersEngine
    from likeness.engines.diffusers.loading import quiet_loading
    from likeness.engines.diffusers.passes import denoise_schedule
    from likeness.engines.diffusers.tiny import save_tiny_pipeline
    from likeness.engines.diffusers.tiny_identity import faceid_state
    from likeness.faces.tiny_insightface import save_tiny_insightface
    from likeness.recipes import Recipe

    steps, denoise = args.steps, 0.5
    with tempfile.TemporaryDirectory() as tmp:
        folder = save_tiny_pipeline("sdxl", Path(tmp) / "tiny-sdxl")
        with quiet_loading():
            bare = StableDiffusionXLPipeline.from_pretrained(str(folder))
        bare.set_progress_bar_config(disable=True)
        adapter = Path(tmp) / "ip-adapter-faceid_tiny.safetensors"
        from safetensors.torch import save_file

        from likeness.engines.diffusers.adapters import flatten

        save_file(flatten(faceid_state(bare.unet)), str(adapter))
        insightface = save_tiny_insightface(Path(tmp) / "buffalo_tiny")
        recipe = Recipe(
            model=str(folder),
            prompt="a photo of a person, studio light",
            negative="blurry",
            width=args.size,
            height=args.size,
            steps=2,
            cfg=4.0,
            seed=1,
            sampler="euler",
            scheduler="normal",
        ).with_overrides(
            {
                "refiner.enabled": False,
                "identity.enabled": True,
                "identity.method": "ipadapter_faceid",
                "identity.region": "image",
                "identity.steps": steps,
                "identity.denoise": denoise,
                "identity.references": [str(FACES / "obama.jpg")],
                "identity.adapter": str(adapter),
                "identity.insightface": str(insightface),
            }
        )
        engine = DiffusersEngine()
        image = Image.new("RGB", (args.size, args.size), (128, 110, 100))
        bare.load_ip_adapter(
            str(adapter.parent), subfolder="", weight_name=adapter.name, image_encoder_folder=None
        )
        bare.set_ip_adapter_scale(recipe.identity.weight)
        img2img = AutoPipelineForImage2Image.from_pipe(bare)
        img2img.set_progress_bar_config(disable=True)
        embeds = torch.stack([torch.zeros(1, 512), torch.randn(1, 512)])
        total, strength = denoise_schedule(steps, denoise)

        def run_bare() -> float:
            start = time.perf_counter()
            img2img(
                prompt=recipe.prompt,
                negative_prompt=recipe.negative,
                image=image,
                strength=strength,
                num_inference_steps=total,
                guidance_scale=recipe.cfg,
                generator=torch.Generator("cpu").manual_seed(1),
                ip_adapter_image_embeds=[embeds],
                output_type="pil",
            )
            return time.perf_counter() - start

        def run_engine() -> float:
            (out,) = engine.generate(recipe, 1)
            return out.provenance["timings"]["identity_s"]

        run_engine()  # warm up: loads the model, embeds the reference, loads the adapter
        scheduler = engine.pipeline(recipe).scheduler  # the recipe's euler, same config
        img2img.scheduler = scheduler.__class__.from_config(scheduler.config)
        run_bare()
        bare_times, engine_times = [], []
        for round_index in range(args.rounds):
            order = [(run_bare, bare_times), (run_engine, engine_times)]
            if round_index % 2:
                order.reverse()
            for fn, times in order:
                times.append(fn())
    base, cand = float(np.median(bare_times)), float(np.median(engine_times))
    print(f"identity pass, FaceID on the whole image, {steps} steps at denoise {denoise}:")
    print(f"bare diffusers IP-Adapter img2img: {base * 1000:8.1f} ms/image")
    print(f"engine identity pass:              {cand * 1000:8.1f} ms/image")
    ratio = cand / base
    print(f"identity/bare: {ratio:.3f}x (target <= 1.05: {'ok' if ratio <= 1.05 else 'over'})")


if __name__ == "__main__":
    main()
