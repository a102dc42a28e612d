"""Training loop overhead: `likeness train`'s loop vs a bare peft loop, and the cache's effect.

Builds a tiny random-weight SDXL (offline) and a workspace holding the sample face photos, with
a one-image dataset version. Then, interleaved in the same run:
  - baseline: a bare diffusers + peft loop on the same model folder, the same LoRA (targets,
    rank, alpha), AdamW and the same latents and caption embeddings (encoded once): per step a
    latent drawn from the posterior, noise, a timestep, `add_noise`, the UNet, MSE, backward,
    `clip_grad_norm_`, optimizer step, `zero_grad`, `loss.item()`;
  - candidate: `train_lora` on the same model, data, rank and batch (again each round), timed
    step to step through its `on_step` hook: the whole loop (seeded generators, caption
    dropout draw, NaN checks, accelerate, LR schedule, job heartbeat, progress report), with
    its one checkpoint at the last step left out of the per-step figure and timed on its own.
Prints the median seconds per step of each and the median over rounds of the per-round ratio
(target: at most 1.05): pairing the two loops round by round cancels slow swings of a shared
machine. Steps are
timed in CPU seconds of this process (one torch thread), which other work on a shared machine
does not stretch as it stretches wall time.

Then the cache: two runs of a one-step recipe on all five sample photos; the second finds every
latent and caption embedding cached. Prints the time from the start of each run to its first
step and what each encoded.

Run: .venv/bin/python bench/train.py [--rounds 12] [--steps 16] [--size 64]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=12)
    parser.add_argument("--steps", type=int, default=16, help="steps per round and loop")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--rank", type=int, default=4)
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads (tiny models: 1 is fastest)"
    )
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)

    from likeness.curate.ingest import Ingester
    from likeness.data import FACES
    from likeness.engines.diffusers.tiny import save_tiny_pipeline
    from likeness.store.datasets import DatasetItem, create_version
    from likeness.train.loop import TrainHooks
    from likeness.train.recipe import JudgeSettings, TrainRecipe
    from likeness.train.run import train_lora
    from likeness.workspace import Workspace

    with tempfile.TemporaryDirectory() as tmp:
        folder = save_tiny_pipeline("sdxl", Path(tmp) / "tiny-sdxl")
        ws = Workspace.create(Path(tmp) / "ws", name="Bench", trigger="vrexoq123")
        ingester = Ingester(ws, origin="source")
        shas = [
            ingester.ingest_bytes(p.read_bytes(), name=p.name).sha256
            for p in sorted(FACES.glob("obama*.jpg"))
        ]
        fields = {
            "trigger": "vrexoq123",
            "class_word": "man",
            "caption_template": "t",
            "trigger_placement": "start",
            "selection": {},
        }
        caption = "vrexoq123 photo of man"
        create_version(ws.db, "one", [DatasetItem(shas[0], caption)], **fields)
        create_version(ws.db, "all", [DatasetItem(s, caption) for s in shas], **fields)
        recipe = TrainRecipe(
            model=str(folder),
            dataset="one@v1",
            rank=args.rank,
            alpha=float(args.rank),
            resolution=args.size,
            bucket_step=16,
            mixed_precision="no",
            warmup_steps=0,
            learning_rate=1e-4,
            gradient_checkpointing=False,
            caption_dropout=0.0,
            steps=args.steps,
            judge=JudgeSettings(enabled=False),  # the step is timed, not the judge
            checkpoint_every=args.steps,
            save_precision="fp32",
        )
        bare = BareLoop(folder, recipe, ws, shas[0], caption)

        # 1. Interleaved rounds: bare loop and likeness train, alternating which goes first.
        bare_steps: list[float] = []
        loop_steps: list[float] = []
        ratios: list[float] = []
        checkpoint_s: list[float] = []
        for round_ in range(args.rounds):
            marks: list[float] = []
            hooks = TrainHooks(
                on_step=lambda _report, marks=marks: marks.append(time.process_time())
            )
            if round_ % 2:
                bare_round = bare.run(args.steps)
            train_lora(ws, recipe, device="cpu", hooks=hooks, again=True)
            if not round_ % 2:
                bare_round = bare.run(args.steps)
            gaps = [b - a for a, b in zip(marks, marks[1:], strict=False)]
            loop_round = gaps[:-1]  # the last gap holds the checkpoint
            checkpoint_s.append(gaps[-1] - statistics.median(loop_round))
            ratios.append(statistics.median(loop_round) / statistics.median(bare_round))
            bare_steps += bare_round
            loop_steps += loop_round
        base, cand = statistics.median(bare_steps), statistics.median(loop_steps)
        threads = torch.get_num_threads()
        print(f"tiny SDXL at {args.size} px, rank {args.rank}, batch 1, {threads} thread(s)")
        print(f"bare peft loop: {base * 1000:8.1f} CPU ms/step (median of {len(bare_steps)})")
        print(f"likeness train: {cand * 1000:8.1f} CPU ms/step (median of {len(loop_steps)})")
        spread = f"rounds {min(ratios):.3f}-{max(ratios):.3f}"
        print(
            f"likeness/bare: {statistics.median(ratios):.3f}x, median of {len(ratios)} "
            f"interleaved rounds ({spread}; target <= 1.05)"
        )
        print(
            f"one checkpoint (kohya file, resume state, database rows, fixed-batch loss): "
            f"{statistics.median(checkpoint_s) * 1000:.0f} CPU ms"
        )

        # 2. The cache: a first run (empty cache) and a second run over all five photos.
        shutil.rmtree(ws.root / "cache", ignore_errors=True)
        cached = recipe.with_overrides({"dataset": "all@v1", "steps": 1, "checkpoint_every": 1})
        for label in ("first run ", "second run"):
            marks: dict[str, float] = {}

            def note(line: str, marks=marks) -> None:
                marks[line.split(" ", 1)[0]] = time.process_time()

            result = train_lora(ws, cached, device="cpu", notify=note, again=True)
            c = result.cache
            print(
                f"cache, {label}: {marks['latents:'] - marks['loaded']:5.2f} CPU s for the "
                f"latents, {marks['cache:'] - marks['latents:']:5.2f} for the captions; "
                f"{c['latents_encoded']} latents encoded, {c['latents_cached']} reused; "
                f"{c['texts_encoded']} captions encoded, {c['texts_cached']} reused"
            )
        ws.close()


class BareLoop:
    """A diffusers + peft training loop with nothing around it (the baseline)."""

    def __init__(self, folder: Path, recipe, ws, sha: str, caption: str) -> None:
        import torch
        from diffusers import DDPMScheduler, StableDiffusionXLPipeline
        from peft import LoraConfig

        from likeness.engines.diffusers.loading import quiet_loading
        from likeness.imaging import decode_image
        from likeness.train.data import crop_to_bucket, to_tensor_array

        with quiet_loading():
            pipe = StableDiffusionXLPipeline.from_pretrained(str(folder))
        for part in (pipe.unet, pipe.vae, pipe.text_encoder, pipe.text_encoder_2):
            part.requires_grad_(False)
        pipe.unet.add_adapter(
            LoraConfig(
                r=recipe.rank, lora_alpha=recipe.alpha, target_modules=list(recipe.unet_targets())
            )
        )
        self.unet = pipe.unet
        self.params = [p for p in self.unet.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(self.params, lr=recipe.learning_rate)
        self.scheduler = DDPMScheduler.from_config(pipe.scheduler.config)
        size = recipe.resolution
        image, crop = crop_to_bucket(decode_image(ws.blobs.read(sha)).image, (size, size))
        with torch.no_grad():
            dist = pipe.vae.encode(torch.from_numpy(to_tensor_array(image))[None]).latent_dist
            self.mean, self.std = dist.mean, dist.std
            embeds, _, pooled, _ = pipe.encode_prompt(
                caption, device="cpu", num_images_per_prompt=1, do_classifier_free_guidance=False
            )
        self.embeds, self.pooled = embeds, pooled
        self.time_ids = torch.tensor([[size, size, *crop, size, size]], dtype=torch.float32)
        self.scale = pipe.vae.config.scaling_factor

    def run(self, steps: int) -> list[float]:
        import torch
        import torch.nn.functional as F

        self.unet.train()
        times = []
        for _ in range(steps):
            began = time.process_time()
            latents = (self.mean + self.std * torch.randn_like(self.mean)) * self.scale
            noise = torch.randn_like(latents)
            t = torch.randint(0, self.scheduler.config.num_train_timesteps, (1,))
            noisy = self.scheduler.add_noise(latents, noise, t)
            pred = self.unet(
                noisy,
                t,
                encoder_hidden_states=self.embeds,
                added_cond_kwargs={"text_embeds": self.pooled, "time_ids": self.time_ids},
                return_dict=False,
            )[0]
            loss = F.mse_loss(pred.float(), noise.float())
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.params, 1.0)
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
            loss.item()
            times.append(time.process_time() - began)
        return times[1:]  # the first step warms the allocator


if __name__ == "__main__":
    main()
