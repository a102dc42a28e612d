"""An optional backend for InsightFace ONNX model packs (buffalo_l, antelopev2), on onnxruntime.

Used only when the user points at a local folder that already holds the models; nothing is
downloaded. The InsightFace model packs are released for **non-commercial research use only**:
a user who scores or conditions with them accepts that licence. `onnxruntime` is imported
lazily and its absence is reported with the command that installs it.

A folder must hold one SCRFD detector (`det_*.onnx` or `scrfd_*.onnx`, with five keypoints)
and one ArcFace recogniser (`w600k_*.onnx` or `glintr100.onnx`):

- the detector takes a 1x3xHxW RGB image scaled as (x - 127.5) / 128 (H and W fixed by the
  model, or `det_size` when they are dynamic; the photo is letterboxed into the top-left
  corner) and answers nine outputs: scores (N, 1), box distances (N, 4) and keypoint offsets
  (N, 10) for strides 8, 16 and 32, with two anchors per grid cell (N = 2 * H/s * W/s), all
  in units of the stride from the cell's corner;
- the recogniser takes the face warped onto ArcFace's 112x112 five-point template (a
  least-squares similarity transform: rotation, uniform scale, shift) scaled as
  (x - 127.5) / 127.5, and answers a 512-D embedding.

Faces carry the five keypoints (eye centres, nose tip, mouth corners) as landmarks and the
L2-normalised embedding; the same-person threshold is a Euclidean distance of 1.1 (cosine
similarity about 0.4). :meth:`InsightFaceAnalyzer.raw_embedding` gives the embedding before
normalisation, which InstantID's adapter was trained on.

onnxruntime runs on CUDA when it offers the CUDA provider (the onnxruntime-gpu wheel), else on
the CPU; `device="cpu"` forces the CPU.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from likeness.faces.headpose import HEADPOSE_VERSION, head_pose
from likeness.faces.protocol import FaceModelMissing
from likeness.faces.types import Box, Face

LICENCE_NOTE = "InsightFace model packs: non-commercial research use only"
STRIDES = (8, 16, 32)
ANCHORS = 2
ARCFACE_SIZE = 112
# Where ArcFace expects the five keypoints in its 112x112 input.
ARCFACE_TEMPLATE = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655],
     [70.7299, 92.2041]],
    dtype=np.float32,
)  # fmt: skip


def find_models(folder: Path) -> tuple[Path, Path]:
    """The (detector, recogniser) ONNX files in `folder`, or a FaceModelMissing naming them."""
    folder = Path(folder).expanduser()
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


def onnx_providers(device: str | None = None) -> list[str]:
    """Execution providers to ask onnxruntime for: CUDA first when it offers it (and `device`
    is not "cpu"), the CPU always."""
    import onnxruntime as ort

    available = ort.get_available_providers()
    if device != "cpu" and "CUDAExecutionProvider" in available:
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    if device == "cuda":
        raise FaceModelMissing(
            "device cuda: this onnxruntime has no CUDA provider; install onnxruntime-gpu"
        )
    return ["CPUExecutionProvider"]


@dataclass
class InsightFaceAnalyzer:
    """SCRFD detection + ArcFace embedding from a local InsightFace model folder."""

    model_dir: Path
    det_size: int = 640
    threshold: float = 0.5
    nms_iou: float = 0.4
    device: str | None = None
    name: str = field(default="insightface", init=False)
    match_threshold: float = field(default=1.1, init=False)
    _sessions: tuple[Any, Any] | None = field(default=None, init=False, repr=False)

    @property
    def version(self) -> str:
        det, rec = find_models(self.model_dir)
        return f"{det.name}+{rec.name}:{self.det_size}:{self.threshold}:pose{HEADPOSE_VERSION}"

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_sessions"] = None  # sessions do not pickle; each process opens its own
        return state

    def check(self) -> tuple[Path, Path]:
        """The (detector, recogniser) files; raises FaceModelMissing when onnxruntime or a
        model file is missing, without loading anything."""
        if importlib.util.find_spec("onnxruntime") is None:
            raise FaceModelMissing(
                "the InsightFace backend needs onnxruntime; run `pip install onnxruntime`"
            )
        return find_models(self.model_dir)

    def load(self) -> tuple[Any, Any]:
        if self._sessions is None:
            det, rec = self.check()
            import onnxruntime as ort

            providers = onnx_providers(self.device)
            try:
                sessions = (
                    ort.InferenceSession(str(det), providers=providers),
                    ort.InferenceSession(str(rec), providers=providers),
                )
            except Exception as exc:  # onnxruntime raises its own types for a broken file
                raise FaceModelMissing(
                    f"{self.model_dir}: the ONNX models could not be loaded ({exc}); "
                    "re-extract the model pack"
                ) from exc
            check_io(*sessions)
            self._sessions = sessions
        return self._sessions

    @property
    def providers(self) -> list[str]:
        """The execution providers the loaded sessions run on."""
        return list(self.load()[0].get_providers())

    def analyze(self, rgb: np.ndarray) -> list[Face]:
        """Faces in an HxWx3 uint8 RGB image, strongest detection first."""
        height, width = rgb.shape[:2]
        boxes, scores, kps = self.detect(rgb)
        faces = []
        for box, score, points in zip(boxes, scores, kps, strict=True):
            embedding = normalise(self.raw_embedding(rgb, points))
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

    def detect(self, rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Boxes (N, 4), scores (N,) and keypoints (N, 5, 2) in image pixels, best first."""
        det, _ = self.load()
        size = detector_size(det, self.det_size)
        blob, scale = letterbox(rgb, size)
        outputs = det.run(None, {det.get_inputs()[0].name: blob})
        return decode_scrfd(outputs, size, scale, self.threshold, self.nms_iou)

    def raw_embedding(self, rgb: np.ndarray, points: np.ndarray) -> np.ndarray:
        """The recogniser's 512-D output for the face whose five keypoints are `points`,
        before L2 normalisation."""
        _, rec = self.load()
        chip = align_face(rgb, points)
        blob = ((chip.astype(np.float32) - 127.5) / 127.5).transpose(2, 0, 1)[None]
        return np.asarray(rec.run(None, {rec.get_inputs()[0].name: blob})[0][0], np.float32)


def normalise(vector: np.ndarray) -> np.ndarray:
    """`vector` scaled to unit length (a zero vector stays zero)."""
    return vector / max(1e-12, float(np.linalg.norm(vector)))


def check_io(det: Any, rec: Any) -> None:
    """Refuse sessions whose inputs/outputs are not SCRFD's and ArcFace's."""
    outputs = det.get_outputs()
    if len(outputs) != 3 * len(STRIDES):
        raise FaceModelMissing(
            f"the detector has {len(outputs)} outputs; an SCRFD model with keypoints has 9"
        )
    shape = rec.get_inputs()[0].shape
    if list(shape[1:]) != [3, ARCFACE_SIZE, ARCFACE_SIZE]:
        raise FaceModelMissing(f"the recogniser takes {shape}; an ArcFace model takes Nx3x112x112")


def detector_size(session: Any, default: int) -> int:
    """The detector's square input side: fixed by the model, or `default` when dynamic."""
    shape = session.get_inputs()[0].shape
    height, width = shape[2], shape[3]
    if isinstance(height, int) and isinstance(width, int):
        if height != width:
            raise FaceModelMissing(f"the detector takes {height}x{width}; expected a square")
        return height
    return default


def letterbox(rgb: np.ndarray, size: int) -> tuple[np.ndarray, float]:
    """The detector's input blob (the image scaled into the top-left of a `size` square,
    (x - 127.5) / 128) and the scale applied."""
    import cv2

    scale = size / max(rgb.shape[:2])
    width = max(1, min(size, int(rgb.shape[1] * scale)))
    height = max(1, min(size, int(rgb.shape[0] * scale)))
    resized = cv2.resize(rgb, (width, height))
    canvas = np.zeros((size, size, 3), dtype=np.float32)
    canvas[:height, :width] = resized
    return ((canvas - 127.5) / 128.0).transpose(2, 0, 1)[None], scale


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """The 2x3 matrix of the rotation + uniform scale + shift that maps the points `src` onto
    `dst` with the least squared error (Umeyama 1991; a reflection is never chosen)."""
    src = np.asarray(src, np.float64)
    dst = np.asarray(dst, np.float64)
    src_mean, dst_mean = src.mean(axis=0), dst.mean(axis=0)
    src_c, dst_c = src - src_mean, dst - dst_mean
    cov = dst_c.T @ src_c / len(src)
    u, s, vt = np.linalg.svd(cov)
    d = np.ones(2)
    if np.linalg.det(cov) < 0:
        d[1] = -1.0
    rotation = u @ np.diag(d) @ vt
    variance = (src_c**2).sum() / len(src)
    scale = float((s * d).sum() / variance) if variance > 0 else 1.0
    shift = dst_mean - scale * rotation @ src_mean
    return np.hstack([scale * rotation, shift[:, None]])


def align_face(rgb: np.ndarray, points: np.ndarray, size: int = ARCFACE_SIZE) -> np.ndarray:
    """The face warped so its five keypoints land on ArcFace's template (`size` x `size`)."""
    import cv2

    template = ARCFACE_TEMPLATE * (size / ARCFACE_SIZE)
    matrix = similarity_transform(np.asarray(points, np.float64).reshape(5, 2), template)
    return cv2.warpAffine(np.ascontiguousarray(rgb), matrix, (size, size), borderValue=0.0)


def decode_scrfd(
    outputs: list[np.ndarray], size: int, scale: float, threshold: float, nms_iou: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Boxes (N, 4), scores (N,) and keypoints (N, 5, 2) in original-image pixels from the nine
    SCRFD outputs (scores, box distances, keypoint offsets for strides 8, 16, 32)."""
    if len(outputs) != 3 * len(STRIDES):
        raise FaceModelMissing(
            f"expected an SCRFD model with 9 outputs (keypoints), got {len(outputs)}"
        )
    all_boxes, all_scores, all_kps = [], [], []
    for i, stride in enumerate(STRIDES):
        score = np.asarray(outputs[i]).reshape(-1)
        dist = np.asarray(outputs[i + 3]).reshape(-1, 4) * stride
        kp = np.asarray(outputs[i + 6]).reshape(-1, 10) * stride
        cells = size // stride
        if score.shape[0] != cells * cells * ANCHORS:
            raise FaceModelMissing(
                f"stride {stride}: {score.shape[0]} scores for a {size} px input; expected "
                f"{cells * cells * ANCHORS} (2 anchors per cell)"
            )
        ys, xs = np.mgrid[:cells, :cells]
        centres = np.repeat(np.stack([xs, ys], axis=-1).reshape(-1, 2) * stride, ANCHORS, axis=0)
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
    order = list(np.argsort(-scores, kind="stable"))
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
