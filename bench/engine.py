"""Diffusers engine overhead: `DiffusersEngine.generate` vs a bare diffusers pipeline call.

Builds a tiny random-weight SDXL pipeline (offline), then times, interleaved in the same run:
  - baseline: `StableDiffusionXLPipeline.__call__` with the same prompt, size, steps, CFG,
    dpmpp_2m + karras scheduler and seeded generator, returning PIL images;
  - candidate: `DiffusersEngine.generate(recipe, n)` on the same model folder and settings
    (refiner off), which also checks the recipe, maps the scheduler, builds provenance and
    encodes the PNG with its metadata chunks.
Prints the median wall time per image of each and the ratio (target: at most 1.05).

Run: .venv/bin/python bench/engine.py [--rounds 7] [--size 256] [--steps 12] [--images 2]
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
    args = parser.parse_args()

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


if __name__ == "__main__":
    main()
