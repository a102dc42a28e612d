"""Thumbnails cached on disk: `<workspace>/cache/thumbs/<sha256>_<size>.webp`, made once.

Only a validated sha256 and a size from a fixed list ever form a file name, so a request can
name a thumbnail but never a path. A face crop (`<sha256>_face<size>.webp`) is the subject's
box with a margin, when an analyzer stored the box.
"""

from __future__ import annotations

import io
import os
import tempfile
from pathlib import Path

from likeness.imaging import decode_image
from likeness.store.blobs import BlobNotFound, BlobStore, is_sha256

SIZES = (256, 384, 1280)
"""Grid thumbnails (256, 384 for dense screens) and the focus view's large image (1280)."""
WEBP_QUALITY = 82


class ThumbnailCache:
    def __init__(self, root: Path, blobs: BlobStore, *, max_pixels: int = 100_000_000):
        self.root = Path(root)
        self.blobs = blobs
        self.max_pixels = max_pixels

    def path(self, sha: str, size: int, *, face: bool = False) -> Path:
        if not is_sha256(sha):
            raise BlobNotFound(sha)
        if size not in SIZES:
            raise ValueError(f"size: {size} is not one of {', '.join(map(str, SIZES))}")
        return self.root / f"{sha}_{'face' if face else ''}{size}.webp"

    def get(
        self,
        sha: str,
        size: int,
        *,
        box: tuple[float, float, float, float] | None = None,
    ) -> Path:
        """The cached thumbnail (made now if missing). With `box`, a square face crop.

        Raises BlobNotFound when the image is not stored.

        Example: cache.get(sha, 256) -> <workspace>/cache/thumbs/<sha>_256.webp
        """
        target = self.path(sha, size, face=box is not None)
        if target.is_file():
            return target
        data = self.blobs.read(sha)
        img = decode_image(data, max_pixels=self.max_pixels).image
        if box is not None:
            img = img.crop(square_with_margin(box, img.width, img.height))
        img.thumbnail((size, size))
        buffer = io.BytesIO()
        img.save(buffer, "WEBP", quality=WEBP_QUALITY, method=2)
        self._write(target, buffer.getvalue())
        return target

    def _write(self, target: Path, data: bytes) -> None:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


def square_with_margin(
    box: tuple[float, float, float, float], width: int, height: int, margin: float = 0.4
) -> tuple[int, int, int, int]:
    """A square around a face box, grown by `margin` of its size and kept inside the image."""
    x0, y0, x1, y1 = box
    side = max(x1 - x0, y1 - y0) * (1 + 2 * margin)
    side = min(side, width, height)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    left = min(max(0.0, cx - side / 2), width - side)
    top = min(max(0.0, cy - side / 2), height - side)
    return (round(left), round(top), round(left + side), round(top + side))


def warm(cache: ThumbnailCache, shas: list[str], size: int = SIZES[0]) -> int:
    """Make the missing thumbnails of `shas`, in order (the queue's order: the first page is
    ready first); returns how many were made. Images that cannot be decoded are skipped, the
    request for them will answer 404 or the decode error then."""
    made = 0
    for sha in shas:
        try:
            if cache.path(sha, size).is_file():
                continue
            cache.get(sha, size)
            made += 1
        except (BlobNotFound, ValueError, OSError):
            continue
    return made
