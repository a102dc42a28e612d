"""An optional backend for InsightFace ONNX model packs (buffalo_l, antelopev2).

Used only when the user points at a local folder that already holds the models; nothing is
downloaded. The InsightFace model packs are released for **non-commercial research use only**:
a user who scores with them accepts that licence. `onnxruntime` is imported lazily and its
absence is reported with the command that installs it.

A folder must hold one SCRFD detector (`det_*.onnx` or `scrfd_*.onnx`, with five keypoints)
and one ArcFace recogniser (`w600k_*.onnx` or `glintr100.onnx`). Faces carry the five
keypoints as landmarks and a 512-D L2-normalised embedding; the same-person threshold is a
Euclidean distance of 1.1 (cosine similarity about 0.4).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from likeness.faces.headpose import HEADPOSE_VERSION, head_pose
from likeness.faces.protocol import FaceModelMissing
from likeness.faces.types import Box, Face

LICENCE_NOTE = "InsightFace model packs: non-commercial research use only"
# Where ArcFace expects the five keypoints in its 112x112 input.
ARCFACE_TEMPLATE = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655],
     [70.7299, 92.2041]],
    dtype=np.float32,
)  # fmt: skip


def find_models(folder: Path) -> tuple[Path, Path]:
    """The (detector, recogniser) ONNX files in `folder`, or a FaceModelMissing naming them."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FaceModelMissing(f"{folder} is not a folder; pass the unpacked buffalo_l/antelopev2")
    onnx = sorted(folder.glob("*.onnx"))
    detectors = [p for p in onnx if p.name.startswith(("det_", "scrfd_"))]
    recognisers = [p for p in onnx if p.name.startswith(("w600k", "glintr"))]
    if not detectors or not recognisers:
        raise FaceModelMissing(
            f"{folder} needs a det_*.onnx/scrfd_*.onnx detector and a w600k_*/glintr100 "
            f"recogniser; found {[p.name for p in onnx] or 'no .onnx files'}"
        )
    return detectors[0], recognisers[0]


@dataclass
class InsightFaceAnalyzer:
    """SCRFD detection + ArcFace embedding from a local InsightFace model folder."""

    model_dir: Path
    det_size: int = 640
    threshold: float = 0.5
    nms_iou: float = 0.4
    name: str = field(default="insightface", init=False)
    match_threshold: float = field(default=1.1, init=False)
    _sessions: tuple[Any, Any] | None = field(default=None, init=False, repr=False)

    @property
    def version(self) -> str:
        det, rec = find_models(self.model_dir)
        return f"{det.name}+{rec.name}:{self.det_size}:{self.threshold}:pose{HEADPOSE_VERSION}"

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_sessions"] = None
        return state

    def load(self) -> tuple[Any, Any]:
        if self._sessions is None:
            try:
                import onnxruntime as ort
            except ImportError as exc:
                raise FaceModelMissing(
                    "the InsightFace backend needs onnxruntime; run `pip install onnxruntime`"
                ) from exc
            det, rec = find_models(self.model_dir)
            opts = ["CPUExecutionProvider"]
            self._sessions = (
                ort.InferenceSession(str(det), providers=opts),
                ort.InferenceSession(str(rec), providers=opts),
            )
        return self._sessions

    def analyze(self, rgb: np.ndarray) -> list[Face]:
        det, rec = self.load()
        height, width = rgb.shape[:2]
        boxes, scores, kps = self._detect(det, rgb)
        faces = []
        for box, score, points in zip(boxes, scores, kps, strict=True):
            embedding = self._embed(rec, rgb, points)
            faces.append(
                Face(
                    box=Box(*(float(v) for v in box)),
                    score=float(score),
                    landmarks=tuple((float(x), float(y)) for x, y in points),
                    descriptor=tuple(float(v) for v in embedding),
                    pose=head_pose(points, width, height),
                )
            )
        return faces

    def _detect(self, session: Any, rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        import cv2

        size = self.det_size
        scale = size / max(rgb.shape[:2])
        resized = cv2.resize(rgb, (round(rgb.shape[1] * scale), round(rgb.shape[0] * scale)))
        canvas = np.zeros((size, size, 3), dtype=np.float32)
        canvas[: resized.shape[0], : resized.shape[1]] = resized
        blob = ((canvas - 127.5) / 128.0).transpose(2, 0, 1)[None]
        outputs = session.run(None, {session.get_inputs()[0].name: blob})
        return decode_scrfd(outputs, size, scale, self.threshold, self.nms_iou)

    @staticmethod
    def _embed(session: Any, rgb: np.ndarray, points: np.ndarray) -> np.ndarray:
        import cv2

        matrix, _ = cv2.estimateAffinePartial2D(
            np.asarray(points, np.float32), ARCFACE_TEMPLATE, method=cv2.LMEDS
        )
        chip = cv2.warpAffine(rgb, matrix, (112, 112)).astype(np.float32)
        blob = ((chip - 127.5) / 127.5).transpose(2, 0, 1)[None]
        out = session.run(None, {session.get_inputs()[0].name: blob})[0][0]
        return out / max(1e-12, float(np.linalg.norm(out)))


def decode_scrfd(
    outputs: list[np.ndarray], size: int, scale: float, threshold: float, nms_iou: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Boxes (N, 4), scores (N,) and keypoints (N, 5, 2) in original-image pixels from the nine
    SCRFD outputs (scores, box distances, keypoint offsets for strides 8, 16, 32)."""
    strides, anchors = (8, 16, 32), 2
    if len(outputs) != 9:
        raise FaceModelMissing(
            f"expected an SCRFD model with 9 outputs (keypoints), got {len(outputs)}"
        )
    all_boxes, all_scores, all_kps = [], [], []
    for i, stride in enumerate(strides):
        score = np.asarray(outputs[i]).reshape(-1)
        dist = np.asarray(outputs[i + 3]).reshape(-1, 4) * stride
        kp = np.asarray(outputs[i + 6]).reshape(-1, 10) * stride
        cells = size // stride
        ys, xs = np.mgrid[:cells, :cells]
        centres = np.repeat(np.stack([xs, ys], axis=-1).reshape(-1, 2) * stride, anchors, axis=0)
        keep = score >= threshold
        c = centres[keep].astype(np.float32)
        d = dist[keep]
        all_boxes.append(np.concatenate([c - d[:, :2], c + d[:, 2:]], axis=1))
        all_kps.append(np.repeat(c, 5, axis=0).reshape(-1, 5, 2) + kp[keep].reshape(-1, 5, 2))
        all_scores.append(score[keep])
    boxes = np.concatenate(all_boxes) / scale
    scores = np.concatenate(all_scores)
    kps = np.concatenate(all_kps) / scale
    order = _nms(boxes, scores, nms_iou)
    return boxes[order], scores[order], kps[order]


def _nms(boxes: np.ndarray, scores: np.ndarray, iou: float) -> list[int]:
    order = list(np.argsort(-scores))
    kept: list[int] = []
    while order:
        i = order.pop(0)
        kept.append(int(i))
        rest = []
        for j in order:
            ix = max(0.0, min(boxes[i, 2], boxes[j, 2]) - max(boxes[i, 0], boxes[j, 0]))
            iy = max(0.0, min(boxes[i, 3], boxes[j, 3]) - max(boxes[i, 1], boxes[j, 1]))
            inter = ix * iy
            area_i = (boxes[i, 2] - boxes[i, 0]) * (boxes[i, 3] - boxes[i, 1])
            area_j = (boxes[j, 2] - boxes[j, 0]) * (boxes[j, 3] - boxes[j, 1])
            if inter / max(1e-9, area_i + area_j - inter) <= iou:
                rest.append(j)
        order = rest
    return kept
