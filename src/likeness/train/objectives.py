"""What one training step computes, per model family.

- SDXL / SD1.5 (:class:`UNetObjective`): DDPM noising at a uniform timestep; the target is the
  noise (epsilon) or the velocity (v-prediction), as the model's scheduler config says; offset
  noise when asked; SDXL gets its size and crop conditioning (``time_ids``).
- FLUX (:class:`FluxObjective`): flow matching, ``x_t = (1 - s) x_0 + s noise`` with ``s``
  drawn by the recipe's timestep sampling (uniform, sigmoid, shift, flux_shift, as kohya's
  flux trainer names them), the raw prediction against ``noise - x_0``, latents packed 2x2,
  and the guidance embedding when the transformer has one (FLUX.1 dev).

Every random draw comes from the ``generator`` passed in, seeded from (recipe seed, step), so
a step's result depends on nothing that happened before it but the weights.
Text goes through the pipeline's own ``encode_prompt``, so captions are encoded exactly as the
pipeline encodes prompts at generation time.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch
    from PIL import Image

    from likeness.train.recipe import TrainRecipe
    from likeness.train.setup import TrainModel


@dataclass
class Batch:
    """One micro-batch, all images of one bucket."""

    latent_mean: torch.Tensor
    latent_std: torch.Tensor
    """The VAE's posterior (cached); each step draws a latent from it."""
    text: dict[str, torch.Tensor] | None
    """Cached text embeddings, stacked; None when the text encoders train (``captions`` are
    encoded at each step instead)."""
    captions: list[str]
    """After caption dropout."""
    original_sizes: list[tuple[int, int]]
    """(height, width) of each source image."""
    crops: list[tuple[int, int]]
    """(top, left) of each crop in the resized image."""
    size: tuple[int, int]
    """(height, width) of the bucket, in pixels."""
    images: list[str]
    """sha256 of each image."""
    control_mean: torch.Tensor | None = None
    """Edit pairs: the control images' latents (the posterior mean, as the edit pipeline
    encodes its input image)."""


def make_objective(model: TrainModel, recipe: TrainRecipe) -> Any:
    if model.family == "qwen_image_edit":
        from likeness.train.edit_objective import QwenEditObjective

        return QwenEditObjective(model, recipe)
    return FluxObjective(model, recipe) if model.family == "flux" else UNetObjective(model, recipe)


class _Common:
    def __init__(self, model: TrainModel, recipe: TrainRecipe) -> None:
        self.model = model
        self.recipe = recipe
        self.device = model.device

    def encode_image(self, pixels: torch.Tensor) -> dict[str, torch.Tensor]:
        """VAE posterior of one image (1, 3, H, W) in [-1, 1]: mean and std, fp32."""
        import torch

        vae = self.model.vae
        with torch.no_grad():
            dist = vae.encode(pixels.to(self.device, dtype=vae.dtype)).latent_dist
        return {"mean": dist.mean[0].float(), "std": dist.std[0].float()}

    def draw_latents(
        self, batch: Batch, generator: torch.Generator, *, mean: bool = False
    ) -> torch.Tensor:
        """A latent drawn from each image's posterior (its mean when ``mean``), scaled as
        the denoiser expects."""
        import torch

        latents = batch.latent_mean
        if not mean:
            eps = torch.randn(batch.latent_mean.shape, generator=generator)
            latents = latents + batch.latent_std * eps
        config = self.model.vae.config
        shift = getattr(config, "shift_factor", None) or 0.0
        return ((latents - shift) * config.scaling_factor).to(self.device)


class UNetObjective(_Common):
    """SDXL and SD1.5: denoising score matching with the model's own noise schedule."""

    def __init__(self, model: TrainModel, recipe: TrainRecipe) -> None:
        super().__init__(model, recipe)
        from diffusers import DDPMScheduler

        self.scheduler = DDPMScheduler.from_config(model.pipe.scheduler.config)
        self.prediction_type = self.scheduler.config.prediction_type
        if self.prediction_type not in ("epsilon", "v_prediction"):
            raise ValueError(
                f"the model's scheduler predicts {self.prediction_type!r}; the trainer "
                "handles epsilon and v_prediction"
            )

    def encode_text(self, captions: Sequence[str]) -> dict[str, torch.Tensor]:
        """Prompt embeddings (and SDXL's pooled embedding), batched, as the pipeline makes
        them; with gradients when the text encoders train."""
        pipe = self.model.pipe
        if self.model.family == "sdxl":
            embeds, _, pooled, _ = pipe.encode_prompt(
                prompt=list(captions),
                device=self.model.text_device,
                num_images_per_prompt=1,
                do_classifier_free_guidance=False,
            )
            return {"prompt_embeds": embeds, "pooled": pooled}
        embeds, _ = pipe.encode_prompt(list(captions), self.model.text_device, 1, False)
        return {"prompt_embeds": embeds}

    def loss(
        self, batch: Batch, generator: torch.Generator, levels: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Mean squared error of the prediction. ``levels`` (one noise level in [0, 1) per
        image) fixes the timesteps and takes the posterior mean: the fixed-batch loss."""
        import torch
        import torch.nn.functional as F

        recipe = self.recipe
        latents = self.draw_latents(batch, generator, mean=levels is not None)
        n = latents.shape[0]
        noise = torch.randn(latents.shape, generator=generator)
        if recipe.noise_offset:
            noise = noise + recipe.noise_offset * torch.randn(
                (n, latents.shape[1], 1, 1), generator=generator
            )
        noise = noise.to(self.device)
        steps = self.scheduler.config.num_train_timesteps
        if levels is None:
            timesteps = torch.randint(0, steps, (n,), generator=generator)
        else:
            timesteps = (levels * steps).long().clamp(0, steps - 1)
        timesteps = timesteps.to(self.device)
        noisy = self.scheduler.add_noise(latents, noise, timesteps)
        text = self.text_for(batch)
        dtype = self.model.weight_dtype
        kwargs: dict[str, Any] = {}
        if self.model.family == "sdxl":
            kwargs["added_cond_kwargs"] = {
                "text_embeds": text["pooled"].to(self.device, dtype),
                "time_ids": self.time_ids(batch).to(self.device, dtype),
            }
        pred = self.model.denoiser(
            noisy.to(dtype),
            timesteps,
            encoder_hidden_states=text["prompt_embeds"].to(self.device, dtype),
            return_dict=False,
            **kwargs,
        )[0]
        if self.prediction_type == "v_prediction":
            target = self.scheduler.get_velocity(latents, noise, timesteps)
        else:
            target = noise
        return F.mse_loss(pred.float(), target.float(), reduction="mean")

    def text_for(self, batch: Batch) -> dict[str, torch.Tensor]:
        return batch.text if batch.text is not None else self.encode_text(batch.captions)

    @staticmethod
    def time_ids(batch: Batch) -> torch.Tensor:
        """SDXL's micro-conditioning: original size, crop top-left, target size (h, w)."""
        import torch

        rows = [
            [*original, *crop, *batch.size]
            for original, crop in zip(batch.original_sizes, batch.crops, strict=True)
        ]
        return torch.tensor(rows, dtype=torch.float32)

    def sample(
        self,
        text: dict[str, torch.Tensor],
        empty: dict[str, torch.Tensor],
        size: tuple[int, int],
        generator: torch.Generator,
    ) -> Image.Image:
        """One image from cached prompt embeddings (the text encoders may be off the GPU)."""
        import torch

        pipe = self.model.sampling_pipeline()
        dtype = self.model.weight_dtype
        kwargs: dict[str, Any] = {
            "prompt_embeds": text["prompt_embeds"][None].to(self.device, dtype),
        }
        if self.model.family == "sdxl":
            kwargs["pooled_prompt_embeds"] = text["pooled"][None].to(self.device, dtype)
            zeros = bool(getattr(pipe.config, "force_zeros_for_empty_prompt", True))
            negative = {k: (torch.zeros_like(v) if zeros else empty[k]) for k, v in text.items()}
            kwargs["negative_prompt_embeds"] = negative["prompt_embeds"][None].to(
                self.device, dtype
            )
            kwargs["negative_pooled_prompt_embeds"] = negative["pooled"][None].to(
                self.device, dtype
            )
        else:
            kwargs["negative_prompt_embeds"] = empty["prompt_embeds"][None].to(self.device, dtype)
        return pipe(
            height=size[0],
            width=size[1],
            num_inference_steps=self.recipe.sample_steps,
            guidance_scale=self.recipe.sample_cfg,
            generator=generator,
            **kwargs,
        ).images[0]


class FluxObjective(_Common):
    """FLUX: rectified flow matching on packed latents."""

    def __init__(self, model: TrainModel, recipe: TrainRecipe) -> None:
        super().__init__(model, recipe)
        self.vae_scale = 2 ** (len(model.vae.config.block_out_channels) - 1)

    def encode_text(self, captions: Sequence[str]) -> dict[str, torch.Tensor]:
        embeds, pooled, _ = self.model.pipe.encode_prompt(
            prompt=list(captions),
            prompt_2=None,
            device=self.model.text_device,
            max_sequence_length=self.recipe.max_sequence_length,
        )
        return {"prompt_embeds": embeds, "pooled": pooled}

    def sigmas(self, n: int, latent_hw: tuple[int, int], generator: torch.Generator):
        """Noise levels in (0, 1) by the recipe's ``timestep_sampling``."""
        import torch

        recipe = self.recipe
        method = recipe.timestep_sampling
        if method == "uniform":
            return torch.rand((n,), generator=generator)
        s = torch.sigmoid(recipe.sigmoid_scale * torch.randn((n,), generator=generator))
        if method == "shift":
            shift = recipe.flow_shift
            s = (s * shift) / (1 + (shift - 1) * s)
        elif method == "flux_shift":
            # FLUX.1 dev's resolution-dependent shift: mu grows linearly with the token count.
            tokens = (latent_hw[0] // 2) * (latent_hw[1] // 2)
            mu = 0.5 + (1.15 - 0.5) * (tokens - 256) / (4096 - 256)
            s = math.exp(mu) / (math.exp(mu) + (1 / s - 1))
        return s

    def noised(
        self, batch: Batch, generator: torch.Generator, levels: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """The batch's latents, the noise, the noise levels and the straight-line mix of the
        two at those levels (rectified flow: the model learns ``noise - latents``)."""
        import torch

        latents = self.draw_latents(batch, generator, mean=levels is not None)
        n, _, h, w = latents.shape
        noise = torch.randn(latents.shape, generator=generator).to(self.device)
        sigmas = self.sigmas(n, (h, w), generator) if levels is None else levels
        sigmas = sigmas.to(self.device)
        s = sigmas.view(-1, 1, 1, 1)
        return latents, noise, sigmas, (1.0 - s) * latents + s * noise

    def loss(
        self, batch: Batch, generator: torch.Generator, levels: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Flow-matching loss; ``levels`` fixes the noise levels (see UNetObjective.loss)."""
        import torch
        import torch.nn.functional as F
        from diffusers import FluxPipeline

        latents, noise, sigmas, noisy = self.noised(batch, generator, levels)
        n, c, h, w = latents.shape
        dtype = self.model.weight_dtype
        packed = FluxPipeline._pack_latents(noisy, n, c, h, w).to(dtype)
        image_ids = FluxPipeline._prepare_latent_image_ids(n, h // 2, w // 2, self.device, dtype)
        text = batch.text if batch.text is not None else self.encode_text(batch.captions)
        prompt_embeds = text["prompt_embeds"].to(self.device, dtype)
        text_ids = torch.zeros(prompt_embeds.shape[1], 3, device=self.device, dtype=dtype)
        transformer = self.model.denoiser
        guidance = None
        if self.model.guidance_embeds:
            guidance = torch.full((n,), self.recipe.guidance, device=self.device, dtype=dtype)
        pred = transformer(
            hidden_states=packed,
            timestep=sigmas.to(dtype),
            guidance=guidance,
            pooled_projections=text["pooled"].to(self.device, dtype),
            encoder_hidden_states=prompt_embeds,
            txt_ids=text_ids,
            img_ids=image_ids,
            return_dict=False,
        )[0]
        pred = FluxPipeline._unpack_latents(
            pred, h * self.vae_scale, w * self.vae_scale, self.vae_scale
        )
        target = noise - latents
        return F.mse_loss(pred.float(), target.float(), reduction="mean")

    def sample(
        self,
        text: dict[str, torch.Tensor],
        empty: dict[str, torch.Tensor],
        size: tuple[int, int],
        generator: torch.Generator,
    ) -> Image.Image:
        pipe = self.model.sampling_pipeline()
        dtype = self.model.weight_dtype
        return pipe(
            prompt_embeds=text["prompt_embeds"][None].to(self.device, dtype),
            pooled_prompt_embeds=text["pooled"][None].to(self.device, dtype),
            height=size[0],
            width=size[1],
            num_inference_steps=self.recipe.sample_steps,
            guidance_scale=self.recipe.sample_cfg,
            generator=generator,
        ).images[0]
