"""Fill the training cache: encode each image's latents and each caption's embeddings once.

Images come from the workspace blob store (decoded with EXIF orientation applied, as measured
at ingest), cropped to their bucket and encoded by the VAE; captions (plus the empty caption for
caption dropout, plus the sample prompts) go through the pipeline's text encoders. What is
already cached under the same key is read, not encoded (``TrainCache.stats`` counts both).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from likeness.imaging import decode_image
from likeness.train.data import TrainData, crop_to_bucket, to_tensor_array

if TYPE_CHECKING:
    from likeness.train.cache import TrainCache
    from likeness.train.objectives import FluxObjective, UNetObjective
    from likeness.workspace import Workspace

Progress = Callable[[str, int, int], None]
"""(what, done, total)."""


def cache_latents(
    ws: Workspace,
    data: TrainData,
    objective: UNetObjective | FluxObjective,
    cache: TrainCache,
    vae_hash: str,
    progress: Progress | None = None,
) -> list[dict[str, Any]]:
    """Per item: {"mean", "std"} of its VAE posterior, "original" (h, w), "crop" (top, left)."""
    import torch

    found: list[dict[str, Any]] = []
    for index, item in enumerate(data.items):

        def encode(item=item) -> dict[str, Any]:
            image = decode_image(
                ws.blobs.read(item.sha256), max_pixels=ws.settings.ingest.max_pixels
            ).image
            cropped, top_left = crop_to_bucket(image, item.bucket)
            pixels = torch.from_numpy(to_tensor_array(cropped))[None]
            posterior = objective.encode_image(pixels)
            return {**posterior, "crop": torch.tensor(top_left, dtype=torch.int64)}

        key = cache.latent_key(item.sha256, vae_hash, item.bucket)
        tensors = cache.get_or_make("latents", key, encode)
        found.append(
            {
                "mean": tensors["mean"],
                "std": tensors["std"],
                "original": (item.height, item.width),
                "crop": tuple(int(v) for v in tensors["crop"].tolist()),
            }
        )
        if progress is not None:
            progress("latents", index + 1, len(data.items))
    return found


def cache_texts(
    captions: Sequence[str],
    objective: UNetObjective | FluxObjective,
    cache: TrainCache,
    text_hash: str,
    family: str,
    length: int,
    progress: Progress | None = None,
) -> dict[str, dict[str, Any]]:
    """Caption -> its embeddings (without the batch dimension), encoded once per key."""
    import torch

    found: dict[str, dict[str, Any]] = {}
    for index, caption in enumerate(captions):
        if caption in found:
            continue

        def encode(caption: str = caption) -> dict[str, Any]:
            with torch.no_grad():
                embeds = objective.encode_text([caption])
            return {name: value[0] for name, value in embeds.items()}

        key = cache.text_key(caption, text_hash, family, length)
        found[caption] = cache.get_or_make("text", key, encode)
        if progress is not None:
            progress("captions", index + 1, len(captions))
    return found
