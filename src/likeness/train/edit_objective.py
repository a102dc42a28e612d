"""What one training step of a Qwen-Image-Edit LoRA computes.

Flow matching as :class:`~likeness.train.objectives.FluxObjective` does it, on the *target*
image's latents, conditioned the way ``QwenImageEditPipeline`` conditions at inference:

- the control image's latents (posterior mean, normalised by the VAE's latent mean and std)
  are packed 2x2 and appended after the noisy target tokens, and the transformer is told both
  token grids (``img_shapes``); the loss covers the target tokens only;
- the instruction is encoded by the pipeline's own ``encode_prompt`` together with the control
  image (Qwen2.5-VL reads both), the image resized as the pipeline resizes it;
- the timestep is the noise level itself (the pipeline passes ``sigma * 1000 / 1000``).

Controls are cropped to their target's bucket: at the default resolution (1024) that is the
one-megapixel size the pipeline gives its input image.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from likeness.train.objectives import Batch, FluxObjective

if TYPE_CHECKING:
    import torch
    from PIL import Image


class QwenEditObjective(FluxObjective):
    """Qwen-Image-Edit: rectified flow on packed latents, the control tokens appended."""

    def __init__(self, model: Any, recipe: Any) -> None:
        super(FluxObjective, self).__init__(model, recipe)
        self.vae_scale = 2 ** len(model.vae.temperal_downsample)

    def encode_image(self, pixels: torch.Tensor) -> dict[str, torch.Tensor]:
        """VAE posterior of one image (1, 3, H, W) in [-1, 1] (the VAE takes one frame)."""
        import torch

        vae = self.model.vae
        with torch.no_grad():
            frames = pixels.to(self.device, dtype=vae.dtype)[:, :, None]
            dist = vae.encode(frames).latent_dist
        return {"mean": dist.mean[0, :, 0].float(), "std": dist.std[0, :, 0].float()}

    def normalise(self, latents: torch.Tensor) -> torch.Tensor:
        """The VAE's per-channel latent mean and std, as the pipeline applies them."""
        import torch

        config = self.model.vae.config
        shape = (1, len(config.latents_mean), 1, 1)
        mean = torch.tensor(config.latents_mean, dtype=latents.dtype).view(shape)
        std = torch.tensor(config.latents_std, dtype=latents.dtype).view(shape)
        return (latents - mean.to(latents.device)) / std.to(latents.device)

    def draw_latents(
        self, batch: Batch, generator: torch.Generator, *, mean: bool = False
    ) -> torch.Tensor:
        import torch

        latents = batch.latent_mean
        if not mean:
            eps = torch.randn(batch.latent_mean.shape, generator=generator)
            latents = latents + batch.latent_std * eps
        return self.normalise(latents).to(self.device)

    def encode_edit_text(self, captions: Sequence[str], control: Image.Image) -> dict[str, Any]:
        """Instruction embeddings with the control image, as the pipeline makes them (one
        control for every caption)."""
        import torch
        from diffusers.pipelines.qwenimage.pipeline_qwenimage_edit import calculate_dimensions

        pipe = self.model.pipe
        width, height, _ = calculate_dimensions(1024 * 1024, control.width / control.height)
        shown = pipe.image_processor.resize(control.convert("RGB"), height, width)
        embeds, mask = pipe.encode_prompt(
            prompt=list(captions), image=shown, device=self.model.text_device
        )
        if mask is None:
            mask = torch.ones(embeds.shape[:2], dtype=torch.long, device=embeds.device)
        return {"prompt_embeds": embeds, "prompt_mask": mask}

    def encode_text(self, captions: Sequence[str]) -> dict[str, torch.Tensor]:
        raise NotImplementedError(
            "qwen_image_edit encodes each instruction with its control image (encode_edit_text)"
        )

    def loss(
        self, batch: Batch, generator: torch.Generator, levels: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Flow-matching loss on the target tokens; ``levels`` fixes the noise levels."""
        import torch
        import torch.nn.functional as F
        from diffusers import QwenImageEditPipeline as Pipe

        if batch.control_mean is None or batch.text is None:
            raise ValueError("a qwen_image_edit batch needs control latents and cached text")
        latents, noise, sigmas, noisy = self.noised(batch, generator, levels)
        n, c, h, w = latents.shape
        dtype = self.model.weight_dtype
        control = self.normalise(batch.control_mean).to(self.device)
        ch, cw = control.shape[-2:]
        tokens = Pipe._pack_latents(noisy, n, c, h, w)
        model_input = torch.cat([tokens, Pipe._pack_latents(control, n, c, ch, cw)], dim=1)
        mask = batch.text["prompt_mask"].to(self.device)
        pred = self.model.denoiser(
            hidden_states=model_input.to(dtype),
            timestep=sigmas.to(dtype),
            guidance=None,
            encoder_hidden_states_mask=None if bool(mask.all()) else mask,
            encoder_hidden_states=batch.text["prompt_embeds"].to(self.device, dtype),
            img_shapes=[[(1, h // 2, w // 2), (1, ch // 2, cw // 2)]] * n,
            return_dict=False,
        )[0][:, : tokens.shape[1]]
        target = Pipe._pack_latents(noise - latents, n, c, h, w)
        return F.mse_loss(pred.float(), target.float(), reduction="mean")

    def sample(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError("qwen_image_edit runs have no text-to-image samples")
