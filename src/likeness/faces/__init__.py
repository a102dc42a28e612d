"""Face analysis: detection, landmarks, identity embeddings, head pose, the subject of an
image, and reference crops.

`DlibAnalyzer` is the default, offline backend; `InsightFaceAnalyzer` runs InsightFace ONNX
models from a local folder (non-commercial licence). Both satisfy `FaceAnalyzer`.
"""

from __future__ import annotations

from pathlib import Path

from likeness.faces.crop import crop_box, reference_crop
from likeness.faces.dlib_backend import DlibAnalyzer, dlib_model_dir
from likeness.faces.headpose import head_pose
from likeness.faces.protocol import FaceAnalyzer, FaceModelMissing
from likeness.faces.subject import (
    FACE_CUT_OFF,
    FACE_TOO_SMALL,
    MULTIPLE_FACES,
    NO_FACE,
    SubjectRules,
    face_flags,
    select_subject,
)
from likeness.faces.types import Box, Face, HeadPose

__all__ = [
    "FACE_CUT_OFF",
    "FACE_TOO_SMALL",
    "MULTIPLE_FACES",
    "NO_FACE",
    "Box",
    "DlibAnalyzer",
    "Face",
    "FaceAnalyzer",
    "FaceModelMissing",
    "HeadPose",
    "SubjectRules",
    "crop_box",
    "dlib_model_dir",
    "face_flags",
    "head_pose",
    "make_analyzer",
    "reference_crop",
    "select_subject",
]


def make_analyzer(insightface_dir: Path | str | None = None) -> FaceAnalyzer:
    """The dlib backend, or the InsightFace one when a local model folder is given."""
    if insightface_dir is None:
        return DlibAnalyzer()
    from likeness.faces.insightface_backend import InsightFaceAnalyzer

    return InsightFaceAnalyzer(Path(insightface_dir))
