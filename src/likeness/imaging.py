"""Safe image decoding and the cheap per-image numbers every later step relies on.

Every image that enters Likeness goes through `decode_image`: the pixel count is checked from the
header before any pixel is decoded (decompression bombs), the whole file is decoded so that
truncation is caught at the door, EXIF orientation is applied, and any colour mode (CMYK,
palette, grey, 16-bit, alpha) becomes 8-bit RGB. Alpha is composited onto white, the background a
trainer or a face detector expects.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

DEFAULT_MAX_PIXELS = 100_000_000
SUPPORTED_FORMATS = frozenset({"JPEG", "PNG", "WEBP", "TIFF", "BMP", "GIF", "MPO"})

_EXIF_IFD = 0x8769
_DATETIME_ORIGINAL = 36867
_DATETIME = 306


class ImageRejected(ValueError):
    """An input that cannot be stored; `reason` says why and what to do about it."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class DecodedImage:
    """An image ready for measuring: 8-bit RGB, upright, with what the file said about itself."""

    image: Image.Image
    format: str
    mode: str
    """The colour mode in the file, before conversion (e.g. CMYK, P, I;16)."""
    captured_at: str | None
    """EXIF DateTimeOriginal (or DateTime) as ISO 8601, when the file has it."""
    oriented: bool
    """True when an EXIF orientation other than 'normal' was applied."""

    @property
    def width(self) -> int:
        return self.image.width

    @property
    def height(self) -> int:
        return self.image.height


def decode_image(data: bytes, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> DecodedImage:
    """Decode image bytes safely or raise `ImageRejected` with a one-line reason."""
    if not data:
        raise ImageRejected("empty file (0 bytes)")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            img = Image.open(io.BytesIO(data))
        except Image.DecompressionBombError as exc:
            raise ImageRejected(f"too many pixels ({exc}); raise ingest.max_pixels") from exc
        except UnidentifiedImageError as exc:
            raise ImageRejected("not an image (unknown or unreadable format)") from exc
        fmt = (img.format or "").upper()
        if fmt not in SUPPORTED_FORMATS:
            raise ImageRejected(f"unsupported format {fmt or 'unknown'}; convert it to PNG or JPEG")
        pixels = img.width * img.height
        if pixels > max_pixels:
            raise ImageRejected(
                f"{img.width}x{img.height} is {pixels / 1e6:.0f} MP, over the "
                f"{max_pixels / 1e6:.0f} MP limit; downscale it or raise ingest.max_pixels"
            )
        if img.width == 0 or img.height == 0:
            raise ImageRejected("image has no pixels (0 width or height)")
        try:
            img.load()
        except OSError as exc:
            raise ImageRejected(
                f"truncated or corrupt image data ({exc}); re-export the file"
            ) from exc
        except (ValueError, SyntaxError, Image.DecompressionBombError) as exc:
            raise ImageRejected(f"corrupt image ({exc}); re-export the file") from exc
    captured_at = _exif_capture_time(img)
    mode = img.mode
    orientation = img.getexif().get(0x0112, 1)
    upright = ImageOps.exif_transpose(img) if orientation not in (None, 1) else img
    return DecodedImage(
        image=to_rgb8(upright),
        format=fmt,
        mode=mode,
        captured_at=captured_at,
        oriented=orientation not in (None, 1),
    )


def open_image(path: Path | str, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> DecodedImage:
    """`decode_image` on a file."""
    return decode_image(Path(path).read_bytes(), max_pixels=max_pixels)


def load_rgb(path: Path | str) -> Image.Image:
    """An upright 8-bit RGB image from a file (the common case for measuring code)."""
    return open_image(path).image


def to_rgb8(img: Image.Image) -> Image.Image:
    """Any PIL mode to 8-bit RGB; high bit depths are scaled, not clipped."""
    mode = img.mode
    if mode == "RGB":
        return img
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        top = 65535.0 if mode.startswith("I;16") or arr.max(initial=0) > 255 else 255.0
        if mode == "F" and arr.max(initial=0) <= 1.0:
            top = 1.0
        grey = np.clip(arr / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return Image.fromarray(grey).convert("RGB")
    if mode == "P":
        img = img.convert("RGBA") if "transparency" in img.info else img.convert("RGB")
        mode = img.mode
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")


def _exif_capture_time(img: Image.Image) -> str | None:
    try:
        exif = img.getexif()
        raw = exif.get_ifd(_EXIF_IFD).get(_DATETIME_ORIGINAL) or exif.get(_DATETIME)
    except Exception:  # a broken EXIF block must not reject a good image
        return None
    if not raw:
        return None
    try:
        return datetime.strptime(str(raw).strip("\x00 "), "%Y:%m:%d %H:%M:%S").isoformat()
    except ValueError:
        return None


def resample(rgb: np.ndarray, long_side: float) -> np.ndarray:
    """`rgb` scaled so that its long side is `long_side` pixels: area-averaged when shrinking
    (no aliasing), bilinear when enlarging, and the array itself at its own size."""
    import cv2

    height, width = rgb.shape[:2]
    factor = long_side / max(height, width)
    if (round(width * factor), round(height * factor)) == (width, height):
        return rgb
    interpolation = cv2.INTER_AREA if factor < 1 else cv2.INTER_LINEAR
    return cv2.resize(rgb, None, fx=factor, fy=factor, interpolation=interpolation)


def downscale(rgb: np.ndarray, max_side: float) -> np.ndarray:
    """`rgb` shrunk so that its long side is at most `max_side` (the array itself when it
    already is): the one preview that detection, body pose and the pHash share."""
    return resample(rgb, max_side) if max(rgb.shape[:2]) > max_side else rgb


def grey_array(img: Image.Image, max_side: int | None = None) -> np.ndarray:
    """Luminance as float32 in [0, 255], optionally downscaled so the long side <= max_side."""
    if max_side and max(img.size) > max_side:
        scale = max_side / max(img.size)
        img = img.resize(
            (max(1, round(img.width * scale)), max(1, round(img.height * scale))),
            Image.Resampling.BILINEAR,
        )
    return np.asarray(img.convert("L"), dtype=np.float32)


def laplacian_variance(grey: np.ndarray) -> float:
    """Variance of the 4-neighbour Laplacian: the classic focus measure (higher = sharper)."""
    if grey.shape[0] < 3 or grey.shape[1] < 3:
        return 0.0
    lap = (
        grey[1:-1, :-2] + grey[1:-1, 2:] + grey[:-2, 1:-1] + grey[2:, 1:-1] - 4.0 * grey[1:-1, 1:-1]
    )
    return float(lap.var())


def sharpness(img: Image.Image, side: int = 512) -> float:
    """Laplacian variance on a copy scaled to a fixed long side, so images of different
    resolutions are compared on equal terms."""
    return laplacian_variance(grey_array(img, max_side=side))


def encode_png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()
