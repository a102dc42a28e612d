"""A dataset version as training data: items, aspect-ratio buckets, pixels, and the order.

- Items are the version's images with their *stored* captions (the trigger already placed by
  the caption template); an image excluded since the version was cut (a duplicate set aside
  by ``likeness dedup``) is left out and counted, never trained on.
- Buckets (kohya's idea): sizes whose sides are multiples of ``bucket_step`` and whose area
  stays within ``resolution**2``; each image goes to the bucket nearest its aspect ratio, is
  resized to cover it and centre-cropped. A batch holds images of one bucket.
- Edit pairs (family ``qwen_image_edit``, :func:`load_edit_items`): the target of each kept
  edit is the item, its instruction the caption, its control image rides along.
- The order is a pure function of (seed, epoch): the micro-batch at any step can be named
  without replaying the run, which is what makes a resumed run equal an uninterrupted one.
"""

from __future__ import annotations

import math
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from likeness.store.datasets import DatasetVersion, version_sha256

if TYPE_CHECKING:
    from likeness.workspace import Workspace

Bucket = tuple[int, int]
"""(width, height) in pixels."""
MAX_ASPECT = 2.0  # kohya's buckets stop at about 1:2 as well


@dataclass(frozen=True)
class TrainItem:
    """One training image: its content hash, stored caption, upright size and bucket."""

    sha256: str
    caption: str
    width: int
    height: int
    bucket: Bucket
    control_sha256: str | None = None
    """Edit pairs: the image the edit started from (the caption is then its instruction)."""

    def text_key(self, caption: str) -> str:
        """The key of this item's text embedding: the caption, and for an edit pair the
        control image too (Qwen-Image-Edit's encoder reads the instruction with the image)."""
        return caption if self.control_sha256 is None else f"{self.control_sha256}:{caption}"


@dataclass(frozen=True)
class TrainData:
    """What a run trains on, and what it left out."""

    items: tuple[TrainItem, ...]
    skipped: tuple[str, ...]
    """sha256s of version items whose image is excluded now (near duplicates)."""
    dataset_sha256: str
    """The version's content hash (:func:`likeness.store.datasets.version_sha256`)."""

    def captions(self) -> list[str]:
        """Distinct captions, sorted, plus the empty caption (for caption dropout)."""
        return sorted({item.caption for item in self.items} | {""})

    def buckets(self) -> list[Bucket]:
        return sorted({item.bucket for item in self.items})


class DataError(ValueError):
    """The dataset version cannot be trained on; the message says why and what to do."""


def make_buckets(resolution: int, step: int, *, enabled: bool = True) -> list[Bucket]:
    """Bucket sizes for ``resolution``: the square, and for each width (a multiple of
    ``step``) the tallest height whose area stays within ``resolution**2``, up to 1:2."""
    if not enabled:
        return [(resolution, resolution)]
    area = resolution * resolution
    found = {(resolution, resolution)}
    for width in range(step, 4 * resolution + 1, step):
        height = (area // width) // step * step
        if height < step:
            break
        if max(width, height) / min(width, height) <= MAX_ASPECT:
            found.add((width, height))
    return sorted(found)


def nearest_bucket(width: int, height: int, buckets: Sequence[Bucket]) -> Bucket:
    """The bucket whose aspect ratio is nearest (in log ratio) to ``width``/``height``;
    of equals, the larger one."""
    ratio = math.log(width / height)
    return min(buckets, key=lambda b: (abs(math.log(b[0] / b[1]) - ratio), -b[0] * b[1]))


def load_items(
    conn: sqlite3.Connection, version: DatasetVersion, buckets: Sequence[Bucket]
) -> TrainData:
    """The version's items with their stored captions; excluded images left out."""
    items: list[TrainItem] = []
    skipped: list[str] = []
    for entry in version.items:
        row = conn.execute(
            "SELECT width, height, excluded FROM images WHERE sha256 = ?", (entry.image_sha,)
        ).fetchone()
        if row is None:
            raise DataError(
                f"image {entry.image_sha[:12]} of {version.ref} is missing from the workspace"
            )
        if row["excluded"]:
            skipped.append(entry.image_sha)
            continue
        bucket = nearest_bucket(row["width"], row["height"], buckets)
        items.append(TrainItem(entry.image_sha, entry.caption, row["width"], row["height"], bucket))
    if not items:
        raise DataError(
            f"{version.ref} has no image left to train on ({len(skipped)} excluded as "
            "duplicates); make a new version with `likeness dataset create`"
        )
    return TrainData(tuple(items), tuple(skipped), version_sha256(version))


def load_edit_items(ws: Workspace, version: DatasetVersion, buckets: Sequence[Bucket]) -> TrainData:
    """The version's edit pairs (:func:`likeness.evaluate.edit_pairs.edit_pairs`) as items:
    the target is trained on, its control conditions it, its instruction is the caption.
    Pairs whose target is excluded now are left out and counted, as images are."""
    from likeness.evaluate.edit_pairs import edit_pairs

    pairs, _ = edit_pairs(ws, version)
    items: list[TrainItem] = []
    skipped: list[str] = []
    for pair in pairs:
        row = ws.db.execute(
            "SELECT width, height, excluded FROM images WHERE sha256 = ?", (pair.target_sha,)
        ).fetchone()
        if (
            row is None
            or ws.db.execute(
                "SELECT 1 FROM images WHERE sha256 = ?", (pair.control_sha,)
            ).fetchone()
            is None
        ):
            raise DataError(
                f"an image of the pair {pair.stem} of {version.ref} is missing from the workspace"
            )
        if row["excluded"]:
            skipped.append(pair.target_sha)
            continue
        bucket = nearest_bucket(row["width"], row["height"], buckets)
        items.append(TrainItem(pair.target_sha, pair.instruction, row["width"], row["height"],
                               bucket, control_sha256=pair.control_sha))  # fmt: skip
    if not items:
        raise DataError(
            f"{version.ref} holds no edit pairs to train on; make a version of kept edits "
            "(`likeness dataset create NAME --origin enriched`)"
        )
    return TrainData(tuple(items), tuple(skipped), version_sha256(version))


def crop_to_bucket(image: Image.Image, bucket: Bucket) -> tuple[Image.Image, tuple[int, int]]:
    """Resize ``image`` to cover ``bucket`` (Lanczos), then centre-crop it to the bucket.

    Returns the crop and its top-left corner (top, left) in the resized image: SDXL is told
    both, as its ``crop_coords_top_left`` conditioning.
    """
    width, height = bucket
    scale = max(width / image.width, height / image.height)
    size = (max(width, round(image.width * scale)), max(height, round(image.height * scale)))
    resized = image.resize(size, Image.Resampling.LANCZOS) if size != image.size else image
    left = (resized.width - width) // 2
    top = (resized.height - height) // 2
    return resized.crop((left, top, left + width, top + height)), (top, left)


def to_tensor_array(image: Image.Image) -> np.ndarray:
    """RGB image -> float32 array (3, H, W) in [-1, 1], what the VAE encodes."""
    array = np.asarray(image.convert("RGB"), dtype=np.float32) / 127.5 - 1.0
    return np.ascontiguousarray(array.transpose(2, 0, 1))


# -- order -------------------------------------------------------------------------------
class DataOrder:
    """Which items form micro-batch ``i`` of the run, from (seed, epoch) alone.

    Each epoch shuffles the items of every bucket, cuts them into batches of ``batch`` (the
    last one of a bucket may be smaller), and shuffles the batches, as kohya does.
    """

    def __init__(self, items: Sequence[TrainItem], batch: int, seed: int) -> None:
        self.batch = batch
        self.seed = seed
        self._by_bucket: dict[Bucket, list[int]] = {}
        for index, item in enumerate(items):
            self._by_bucket.setdefault(item.bucket, []).append(index)
        self.batches_per_epoch = sum(math.ceil(len(v) / batch) for v in self._by_bucket.values())
        self._epoch: tuple[int, list[list[int]]] | None = None

    def epoch_seed(self, epoch: int) -> list[int]:
        """The seed material of an epoch's permutation (recorded in the resume state)."""
        return [self.seed, epoch]

    def epoch_batches(self, epoch: int) -> list[list[int]]:
        rng = np.random.default_rng(self.epoch_seed(epoch))
        batches: list[list[int]] = []
        for bucket in sorted(self._by_bucket):
            members = list(self._by_bucket[bucket])
            rng.shuffle(members)
            batches += [members[i : i + self.batch] for i in range(0, len(members), self.batch)]
        order = rng.permutation(len(batches))
        return [batches[i] for i in order]

    def position(self, micro_batch: int) -> tuple[int, int]:
        """(epoch, index within the epoch) of a run-wide micro-batch number."""
        return divmod(micro_batch, self.batches_per_epoch)

    def micro_batch(self, index: int) -> list[int]:
        """Item indices of run-wide micro-batch ``index``."""
        epoch, within = self.position(index)
        if self._epoch is None or self._epoch[0] != epoch:
            self._epoch = (epoch, self.epoch_batches(epoch))
        return self._epoch[1][within]
