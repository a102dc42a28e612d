"""The copies that near-duplicate detection must catch, made from one image.

Used by the demo and the tests to show dedup on real photos: a JPEG re-encode at quality 60, a
50% resize, a centred 5% crop and a colour shift are the usual ways one photo reaches a dataset
several times.
"""

from __future__ import annotations

import io

from PIL import Image, ImageEnhance


def _jpeg(img: Image.Image, quality: int) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def near_duplicate_variants(img: Image.Image) -> dict[str, bytes]:
    """name -> encoded bytes of each variant."""
    w, h = img.size
    dx, dy = round(w * 0.025), round(h * 0.025)
    cropped = img.crop((dx, dy, w - dx, h - dy))
    half = img.resize((max(1, w // 2), max(1, h // 2)), Image.Resampling.LANCZOS)
    shifted = ImageEnhance.Brightness(ImageEnhance.Color(img).enhance(1.4)).enhance(0.92)
    return {
        "reencode_q60.jpg": _jpeg(img, 60),
        "resize_50.jpg": _jpeg(half, 92),
        "crop_5.jpg": _jpeg(cropped, 92),
        "colour_shift.jpg": _jpeg(shifted, 92),
    }
