"""Safe decoding: every bad file is refused with a reason; odd colour modes become 8-bit RGB."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from likeness.imaging import ImageRejected, decode_image, sharpness, to_rgb8
from tests.conftest import jpeg_bytes


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that declares a huge size in its header and carries almost no data: a bomb."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data))
            + kind
            + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def test_empty_file_is_rejected():
    with pytest.raises(ImageRejected, match="empty file"):
        decode_image(b"")


def test_text_named_jpg_is_rejected():
    with pytest.raises(ImageRejected, match="not an image"):
        decode_image(b"hello, I am a text file\n" * 10)


def test_truncated_jpeg_is_rejected(faces_dir):
    data = (faces_dir / "obama.jpg").read_bytes()
    with pytest.raises(ImageRejected, match="truncated"):
        decode_image(data[: len(data) // 2])


def test_decompression_bomb_header_is_rejected_before_decoding():
    data = png_header_only(20000, 20000)
    with pytest.raises(ImageRejected, match="max_pixels|too many pixels"):
        decode_image(data)
    # the configured limit applies below PIL's own bomb guard too
    with pytest.raises(ImageRejected, match="over the 1 MP limit"):
        decode_image(png_header_only(2000, 2000), max_pixels=1_000_000)


def test_unsupported_format_is_named():
    buf = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buf, format="PPM")
    with pytest.raises(ImageRejected, match="unsupported format PPM"):
        decode_image(buf.getvalue())


def test_cmyk_jpeg_becomes_rgb():
    cmyk = Image.new("CMYK", (40, 30), (0, 255, 255, 0))  # pure red in CMYK
    decoded = decode_image(jpeg_bytes(cmyk))
    assert decoded.mode == "CMYK"
    assert decoded.image.mode == "RGB"
    r, g, b = decoded.image.getpixel((20, 15))
    assert r > 200 and g < 60 and b < 60


def test_16_bit_grey_is_scaled_not_clipped():
    ramp = np.linspace(0, 65535, 256, dtype=np.uint16).reshape(1, 256).repeat(4, axis=0)
    buf = io.BytesIO()
    Image.fromarray(ramp).save(buf, format="PNG")
    decoded = decode_image(buf.getvalue())
    assert decoded.mode.startswith("I")
    grey = np.asarray(decoded.image)[0, :, 0]
    assert grey[0] == 0 and grey[-1] == 255
    assert 120 <= grey[128] <= 135  # mid-grey stays mid-grey


def test_palette_with_alpha_is_composited_on_white():
    img = Image.new("P", (10, 10), 0)
    img.putpalette([255, 0, 0] + [0, 0, 255] * 255)
    img.paste(1, (5, 0, 10, 10))
    img.info["transparency"] = 0  # index 0 (red) is fully transparent
    buf = io.BytesIO()
    img.save(buf, format="PNG", transparency=0)
    decoded = decode_image(buf.getvalue())
    assert decoded.image.mode == "RGB"
    assert decoded.image.getpixel((1, 1)) == (255, 255, 255)
    assert decoded.image.getpixel((8, 8)) == (0, 0, 255)


def test_rgba_alpha_is_composited():
    rgba = Image.new("RGBA", (4, 4), (0, 0, 0, 0))
    assert to_rgb8(rgba).getpixel((0, 0)) == (255, 255, 255)


def test_exif_rotation_is_applied_and_capture_time_read():
    img = Image.new("RGB", (60, 20), (0, 0, 0))
    img.paste((255, 255, 255), (0, 0, 10, 20))  # white band on the left
    exif = Image.Exif()
    exif[0x0112] = 6  # stored rotated: display needs 90 degrees clockwise
    exif.get_ifd(0x8769)[36867] = "2024:05:06 07:08:09"
    decoded = decode_image(jpeg_bytes(img, exif=exif.tobytes(), quality=95))
    assert (decoded.width, decoded.height) == (20, 60)
    assert decoded.oriented
    assert decoded.captured_at == "2024-05-06T07:08:09"
    top = np.asarray(decoded.image)[:5].mean()
    bottom = np.asarray(decoded.image)[-5:].mean()
    assert top > 200 > 50 > bottom  # the white band is now on top


def test_sharpness_drops_with_blur(faces_dir):
    from PIL import ImageFilter

    img = decode_image((faces_dir / "obama.jpg").read_bytes()).image
    values = [sharpness(img.filter(ImageFilter.GaussianBlur(r))) for r in (0.5, 1.5, 3)]
    assert sharpness(img) > values[0] > values[1] > values[2]
