"""One image's measurements that do not depend on the reference set: the unit that is cached
(by image sha256 + `ANALYZER_NAME` + `Instruments.version`) and computed in parallel.

Identity match and the reference-relative plastic reading need the references, so they are
derived later from this record (cheaply) by `likeness.metrics.scoring`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from likeness.faces import DlibAnalyzer, Face, FaceAnalyzer, face_flags, select_subject
from likeness.imaging import downscale
from likeness.metrics import quality, skin
from likeness.metrics.body import BodyPose, PoseBackend, body_pose, default_pose_backend
from likeness.metrics.expression import Expression, ExpressionClassifier

ANALYZER_NAME = "likeness.image"
ANALYSIS_VERSION = "4"
PREVIEW_SIDE = 640


@dataclass
class Instruments:
    """The models an analysis runs; picklable (each process loads its own copies).

    Args:
        faces (`FaceAnalyzer`, defaults to `DlibAnalyzer()`): the face backend.
        expression (`ExpressionClassifier`, *optional*): None skips expression.
        pose (`PoseBackend`, *optional*): body-pose backend; the default is MediaPipe when
            installed. None gives `not_available`.
        brisque (`bool`, defaults to False): also compute BRISQUE (about 0.1 s per image).
    """

    faces: FaceAnalyzer = field(default_factory=DlibAnalyzer)
    expression: ExpressionClassifier | None = field(default_factory=ExpressionClassifier)
    pose: PoseBackend | None = field(default_factory=default_pose_backend)
    brisque: bool = False

    @property
    def version(self) -> str:
        parts = [
            ANALYSIS_VERSION,
            f"{self.faces.name}={self.faces.version}",
            f"expr={self.expression.version if self.expression else 'off'}",
            f"pose={self.pose.name + ':' + self.pose.version if self.pose else 'off'}",
            f"brisque={int(self.brisque)}",
        ]
        return ";".join(parts)


@dataclass(frozen=True)
class ImageAnalysis:
    """Faces, subject, flags, expression, body pose and raw quality of one image."""

    sha256: str
    width: int
    height: int
    faces: tuple[Face, ...]
    subject: int | None
    flags: tuple[str, ...]
    expression: Expression | None
    body: BodyPose
    quality: quality.QualityRaw
    phash: str

    @property
    def face(self) -> Face | None:
        return self.faces[self.subject] if self.subject is not None else None

    def to_dict(self) -> dict[str, Any]:
        expr = self.expression
        return {
            "sha256": self.sha256,
            "width": self.width,
            "height": self.height,
            "faces": [f.to_dict() for f in self.faces],
            "subject": self.subject,
            "flags": list(self.flags),
            "expression": None if expr is None else expr.to_dict(),
            "body": {
                "label": self.body.label,
                "keypoints": [list(k) for k in self.body.keypoints],
                "reason": self.body.reason,
            },
            "quality": dict(self.quality.__dict__),
            "phash": self.phash,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ImageAnalysis:
        expr = data["expression"]
        body = data["body"]
        return cls(
            sha256=data["sha256"],
            width=int(data["width"]),
            height=int(data["height"]),
            faces=tuple(Face.from_dict(f) for f in data["faces"]),
            subject=data["subject"],
            flags=tuple(data["flags"]),
            expression=None if expr is None else Expression.from_dict(expr),
            body=BodyPose(
                body["label"], tuple(tuple(k) for k in body["keypoints"]), body["reason"]
            ),
            quality=quality.QualityRaw(**data["quality"]),
            phash=data["phash"],
        )


def analyze_image(rgb: np.ndarray, instruments: Instruments, sha256: str = "") -> ImageAnalysis:
    """Every reference-independent measurement of one HxWx3 uint8 RGB image.

    Example:
        >>> analysis = analyze_image(np.asarray(load_rgb("a.jpg")), Instruments())  # doctest: +SKIP
    """
    import imagehash
    from PIL import Image

    height, width = rgb.shape[:2]
    # 1. Faces and the subject (the dlib backend detects on the shared 640 px preview).
    preview = downscale(rgb, PREVIEW_SIDE)
    if isinstance(instruments.faces, DlibAnalyzer) and (
        instruments.faces.detect_max_side == PREVIEW_SIDE
    ):
        faces = tuple(instruments.faces.analyze(rgb, preview))
    else:
        faces = tuple(instruments.faces.analyze(rgb))
    subject = select_subject(faces, width, height)
    flags = face_flags(faces, subject, width, height)
    face = faces[subject] if subject is not None else None
    # 2. Expression of the subject.
    luma = quality.grey(rgb)
    expression = None
    if face is not None and instruments.expression is not None:
        expression = instruments.expression.classify(luma, face)
    # 3. Body pose (BlazePose works at 256 px: a 640 px preview loses nothing).
    body = body_pose(preview, instruments.pose)
    if preview is not rgb and body.keypoints:
        factor = max(rgb.shape[:2]) / max(preview.shape[:2])
        body = BodyPose(
            body.label,
            tuple((round(x * factor, 1), round(y * factor, 1), v) for x, y, v in body.keypoints),
            body.reason,
        )
    # 4. Quality.
    box = face.box if face is not None else None
    brisque = quality.brisque(luma) if instruments.brisque else None
    noise = quality.grain(luma)
    texture = None
    if face is not None and len(face.landmarks) == 68:
        texture = skin.skin_texture(luma, face.points, noise=noise)
    raw = quality.QualityRaw(
        sharpness=round(quality.sharpness(luma, box, noise=noise), 3),
        grain=round(noise, 4),
        skin_texture=round(texture, 5) if texture is not None else None,
        clipping=round(quality.clipping(luma, box), 4),
        face_px=round(face.box.width, 1) if face is not None else None,
        brisque=round(brisque, 3) if brisque is not None else None,
    )
    return ImageAnalysis(
        sha256=sha256,
        width=width,
        height=height,
        faces=faces,
        subject=subject,
        flags=flags,
        expression=expression,
        body=body,
        quality=raw,
        phash=str(imagehash.phash(Image.fromarray(preview))),
    )
