"""Judging a checkpoint: the trainer's own pipeline vs the checkpoint file in a second engine.

Builds a tiny random-weight SDXL (offline), loads it as the trainer does (LoRA layers in),
and writes checkpoint files from it. Then, per round and interleaved, renders the same probes
(one card shot per round, fixed seeds) two ways:
  - in-memory (what `likeness train` does at each checkpoint): a diffusers engine lent the
    trainer's pipeline (`DiffusersEngine.use_pipeline`), the LoRA already in its layers;
  - file: a second diffusers engine on the same base model with the checkpoint file as the
    recipe's LoRA (what judging a checkpoint later costs): it holds its own copy of the base
    model, loads each checkpoint file, and unloads it after.
The first file round also loads the base model; it is reported on its own. Prints the median
CPU seconds per checkpoint of each way over the later rounds, their ratio, and the memory the
file way adds (the second copy of the base model's weights). Scoring is the same for both and
left out.

Run: .venv/bin/python bench/judge.py [--rounds 6] [--probes 4] [--size 64] [--steps 4]
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
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--probes", type=int, default=4, help="probe images per checkpoint")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=4, help="sampling steps per probe")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)

    from likeness.engines.diffusers import DiffusersEngine
    from likeness.engines.diffusers.loading import resolve_model
    from likeness.engines.diffusers.tiny import save_tiny_pipeline
    from likeness.evaluate.card_spec import load_card_spec
    from likeness.train.judge import probe_plans, trainer_pipeline
    from likeness.train.kohya import save_kohya_lora
    from likeness.train.recipe import TrainRecipe
    from likeness.train.setup import load_train_model

    with tempfile.TemporaryDirectory(prefix="likeness-bench-judge-") as tmp:
        root = Path(tmp)
        folder = save_tiny_pipeline("sdxl", root / "tiny-sdxl")
        recipe = TrainRecipe.from_dict({
            "model": str(folder), "dataset": "bench@v1", "rank": 4, "alpha": 4.0,
            "mixed_precision": "no", "gradient_checkpointing": False, "resolution": args.size,
            "bucket_step": 16, "warmup_steps": 0,
            "judge": {"probes": ["front_neutral"], "seeds": list(range(1, args.probes + 1)),
                      "steps": args.steps, "width": args.size, "height": args.size},
        })  # fmt: skip
        source = resolve_model(recipe.model, "sdxl")
        model = load_train_model(recipe, source, "cpu", lora_seed=0)
        spec = load_card_spec()
        base_bytes = sum(
            p.numel() * p.element_size()
            for c in model.pipe.components.values()
            if isinstance(c, torch.nn.Module)
            for p in c.parameters()
        )
        lent, second = DiffusersEngine(device="cpu"), DiffusersEngine(device="cpu")
        memory, files, first_file = [], [], None
        for round_ in range(args.rounds + 1):
            # A new checkpoint: the LoRA moves, a file is written from it.
            with torch.no_grad():
                for _, param in model.trainable_parameters():
                    param.add_(torch.randn_like(param) * 1e-3)
            path = root / f"ckpt-{round_}.safetensors"
            save_kohya_lora(path, model.trained, family="sdxl", alpha=recipe.alpha,
                            metadata={}, dtype=torch.float32)  # fmt: skip
            from likeness.engines.base import sha256_file

            plans = probe_plans(recipe, spec, lora=str(path), trigger="zk1", class_word="man")
            order = ("memory", "file") if round_ % 2 else ("file", "memory")
            for way in order:
                began = time.process_time()
                if way == "memory":
                    lent.use_pipeline(model.pipe, recipe.model, "sdxl",
                                      loras={sha256_file(path): "default"})  # fmt: skip
                    with trainer_pipeline(model):
                        for plan in plans:
                            lent.generate(plan.recipe, 1)
                else:
                    for plan in plans:
                        second.generate(plan.recipe, 1)
                    second.drop_loras()
                spent = time.process_time() - began
                if way == "memory":
                    memory.append(spent)
                elif round_ == 0:
                    first_file = spent
                else:
                    files.append(spent)
        lent.release()
        second.release()
    later_memory = memory[1:]
    ratio = statistics.median(f / m for f, m in zip(files, later_memory, strict=True))
    print(f"probes per checkpoint: {args.probes} at {args.size} px, {args.steps} steps")
    print(f"in-memory (trainer's pipeline): {statistics.median(later_memory):.3f} CPU s/checkpoint")
    print(f"file (second engine):           {statistics.median(files):.3f} CPU s/checkpoint "
          f"(first, loading the base model: {first_file:.3f} s)")  # fmt: skip
    print(f"file/in-memory: {ratio:.2f}x (median of per-round ratios over {len(files)} rounds)")
    print(f"memory the file way adds: the base model again, {base_bytes / 2**20:.1f} MiB here "
          "(SDXL in fp16: about 6.5 GB; the FLUX.1 dev transformer alone about 22 GiB in bf16)")  # fmt: skip


if __name__ == "__main__":
    main()
