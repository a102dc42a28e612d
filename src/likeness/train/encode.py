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
    """Per item: {"mean", "std"} of its VAE posterior, "original" (h, w), "crop" (top, left);
    an edit pair's item also "control_mean", its control image's latents in the same bucket."""
    import torch

    found: list[dict[str, Any]] = []
    for index, item in enumerate(data.items):

        def encode(sha: str = item.sha256, bucket: tuple[int, int] = item.bucket) -> dict[str, Any]:
            image = decode_image(ws.blobs.read(sha), max_pixels=ws.settings.ingest.max_pixels).image
            cropped, top_left = crop_to_bucket(image, bucket)
            pixels = torch.from_numpy(to_tensor_array(cropped))[None]
            posterior = objective.encode_image(pixels)
            return {**posterior, "crop": torch.tensor(top_left, dtype=torch.int64)}

        key = cache.latent_key(item.sha256, vae_hash, item.bucket)
        tensors = cache.get_or_make("latents", key, encode)
        entry = {
            "mean": tensors["mean"],
            "std": tensors["std"],
            "original": (item.height, item.width),
            "crop": tuple(int(v) for v in tensors["crop"].tolist()),
        }
        if item.control_sha256 is not None:
            control_key = cache.latent_key(item.control_sha256, vae_hash, item.bucket)
            control = cache.get_or_make(
                "latents",
                control_key,
                lambda sha=item.control_sha256, b=item.bucket: encode(sha, b),
            )
            entry["control_mean"] = control["mean"]
        found.append(entry)
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


def cache_edit_texts(
    ws: Workspace,
    data: TrainData,
    objective: Any,
    cache: TrainCache,
    text_hash: str,
    family: str,
) -> dict[str, dict[str, Any]]:
    """Edit pairs: :meth:`TrainItem.text_key` -> the embeddings of the instruction (and of
    the empty instruction, for caption dropout) read together with the pair's control image.
    The cache key holds the control's sha256, so another pair with the same instruction and
    another photo is encoded on its own."""
    import functools

    import torch

    # A control photo serves its pair's instruction and the empty one, and often several
    # pairs in a row (edits of one source photo): decoded once for them.
    @functools.lru_cache(maxsize=2)
    def control_image(sha: str) -> Any:
        return decode_image(ws.blobs.read(sha), max_pixels=ws.settings.ingest.max_pixels).image

    found: dict[str, dict[str, Any]] = {}
    for item in data.items:
        for caption in (item.caption, ""):
            name = item.text_key(caption)
            if name in found:
                continue

            def encode(caption: str = caption, sha: str = item.control_sha256 or "") -> dict:
                with torch.no_grad():
                    embeds = objective.encode_edit_text([caption], control_image(sha))
                return {key: value[0] for key, value in embeds.items()}

            key = cache.text_key(name, text_hash, family, 0)
            found[name] = cache.get_or_make("text", key, encode)
    return found
