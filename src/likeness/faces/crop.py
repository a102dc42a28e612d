"""Square face-only crops of reference photos.

Identity adapters (InstantID, IP-Adapter FaceID) copy whatever the reference shows: a hat or
glasses in an uncropped reference turns up in every output. A reference crop keeps the face and
a little context, nothing else.
"""

from __future__ import annotations

from PIL import Image

from likeness.faces.types import Face


def crop_box(face: Face, margin: float = 0.4) -> tuple[int, int, int, int]:
    """A square (left, top, right, bottom) around the face, `margin` times the face size added
    on every side. The face size is the larger of the box side and 2.8x the eye-to-mouth distance,
    so a loose or tight detector box gives a similar crop. The square may leave the image."""
    if margin < 0:
        raise ValueError(f"margin must be >= 0, got {margin}")
    box = face.box
    side = max(box.width, box.height)
    if len(face.landmarks) == 68:
        pts = face.points
        eyes = (pts[36:48].mean(axis=0)).tolist()
        mouth = pts[48:68].mean(axis=0).tolist()
        span = ((eyes[0] - mouth[0]) ** 2 + (eyes[1] - mouth[1]) ** 2) ** 0.5
        side = max(side, 2.8 * span)
        cx, cy = pts[27:36].mean(axis=0).tolist()  # the nose: the face's own centre
    else:
        cx, cy = box.center
    half = side * (0.5 + margin)
    return (round(cx - half), round(cy - half), round(cx + half), round(cy + half))


def reference_crop(
    image: Image.Image, face: Face, size: int = 1024, margin: float = 0.4
) -> Image.Image:
    """The face as a `size` x `size` RGB image.

    A square that would leave the photo is first moved, then shrunk (never below the face
    itself) to stay inside it; only a face that is itself cut off by the border gets the
    missing part filled by repeating the border pixels (no black bars for an adapter to copy).

    Example:
        >>> reference_crop(photo, face, size=1024, margin=0.4).save("ref_face.png")  # doctest: +SKIP
    """
    if size < 16:
        raise ValueError(f"size must be >= 16 px, got {size}")
    left, top, right, bottom = fit_square(crop_box(face, margin), face, *image.size)
    width, height = image.size
    pad = max(0, -left, -top, right - width, bottom - height)
    source = image.convert("RGB")
    if pad:
        import numpy as np

        arr = np.pad(np.asarray(source), ((pad, pad), (pad, pad), (0, 0)), mode="edge")
        source = Image.fromarray(arr)
        left, top, right, bottom = left + pad, top + pad, right + pad, bottom + pad
    return source.crop((left, top, right, bottom)).resize((size, size), Image.Resampling.LANCZOS)


def fit_square(
    square: tuple[int, int, int, int], face: Face, width: int, height: int
) -> tuple[int, int, int, int]:
    """Move `square` inside a `width` x `height` image, shrinking it down to the image's short
    side but never below the face box; what still sticks out is where the face is cut off."""
    left, top, right, bottom = square
    side = right - left
    face_side = int(round(max(face.box.width, face.box.height)))
    side = max(min(side, width, height), min(face_side, side))
    cx, cy = (left + right) / 2, (top + bottom) / 2
    left = int(round(cx - side / 2))
    top = int(round(cy - side / 2))
    # Shift inside, as far as the image allows.
    if side <= width:
        left = min(max(left, 0), width - side)
    if side <= height:
        top = min(max(top, 0), height - side)
    # Never shift the face out of the square.
    left = min(left, int(face.box.x0)) if face.box.x0 >= 0 else left
    top = min(top, int(face.box.y0)) if face.box.y0 >= 0 else top
    left = max(left, int(round(face.box.x1)) - side)
    top = max(top, int(round(face.box.y1)) - side)
    return (left, top, left + side, top + side)
