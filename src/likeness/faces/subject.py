"""Choosing the one face an image is about, and flagging images where that choice is shaky.

The subject is the largest face; faces at least `tie_ratio` (0.8) times its area count as
equally large, and among those the one nearest the image centre wins. So a close-up beats a
face in the background, and in a group of similar faces the central one is the subject.

Flags (stable strings, used in JSON output and filters):
- `no_face`: no face passed the detection threshold.
- `multiple_faces`: another face is at least `other_face_ratio` (0.5) times as wide as the
  subject (small faces in the background do not count).
- `face_too_small`: the subject's box is narrower than `min_face_px` (100 px): identity
  embeddings are computed on a 150 px aligned chip, and smaller faces are upsampled guesses.
- `face_cut_off`: the subject's box extends past the image border by more than
  `cut_off_tolerance` (5%) of its width, or a jaw landmark lies outside the image.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from likeness.faces.types import Face

NO_FACE = "no_face"
MULTIPLE_FACES = "multiple_faces"
FACE_TOO_SMALL = "face_too_small"
FACE_CUT_OFF = "face_cut_off"


@dataclass(frozen=True)
class SubjectRules:
    tie_ratio: float = 0.8
    other_face_ratio: float = 0.5
    min_face_px: float = 100.0
    cut_off_tolerance: float = 0.05


def select_subject(
    faces: Sequence[Face], width: int, height: int, rules: SubjectRules | None = None
) -> int | None:
    """Index of the subject face in `faces`, or None when there is none.

    Example:
        >>> subject = select_subject(faces, image.width, image.height)  # doctest: +SKIP
    """
    rules = rules or SubjectRules()
    if not faces:
        return None
    largest = max(f.box.area for f in faces)
    contenders = [i for i, f in enumerate(faces) if f.box.area >= rules.tie_ratio * largest]
    cx, cy = width / 2, height / 2
    return min(
        contenders,
        key=lambda i: math.hypot(faces[i].box.center[0] - cx, faces[i].box.center[1] - cy),
    )


def face_flags(
    faces: Sequence[Face],
    subject: int | None,
    width: int,
    height: int,
    rules: SubjectRules | None = None,
) -> tuple[str, ...]:
    """The flags above, in a fixed order.

    Example:
        >>> face_flags(faces, subject, 1280, 886)  # doctest: +SKIP
        ('multiple_faces',)
    """
    rules = rules or SubjectRules()
    if subject is None:
        return (NO_FACE,)
    face = faces[subject]
    flags = []
    others = [f for i, f in enumerate(faces) if i != subject]
    if any(f.box.width >= rules.other_face_ratio * face.box.width for f in others):
        flags.append(MULTIPLE_FACES)
    if face.box.width < rules.min_face_px:
        flags.append(FACE_TOO_SMALL)
    if is_cut_off(face, width, height, rules.cut_off_tolerance):
        flags.append(FACE_CUT_OFF)
    return tuple(flags)


def is_cut_off(face: Face, width: int, height: int, tolerance: float = 0.05) -> bool:
    """True when the face box leaves the frame by more than `tolerance` of its width, or
    a jaw-line landmark (0-16) falls outside the image."""
    slack = tolerance * face.box.width
    box = face.box
    if box.x0 < -slack or box.y0 < -slack or box.x1 > width + slack or box.y1 > height + slack:
        return True
    jaw = face.landmarks[:17] if len(face.landmarks) >= 17 else face.landmarks
    return any(x < 0 or y < 0 or x >= width or y >= height for x, y in jaw)
