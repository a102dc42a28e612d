"""Facial expression from fer's mini-Xception (MIT, vendored TFLite file, run with
ai-edge-litert), optionally refined between `smiling` and `neutral` by mouth geometry.

The face box is widened by 10% on each side (fer's own crops are loose Haar boxes), turned to
grey, resized to 64x64 and scaled to [-1, 1]; the probabilities are averaged over the crop and
its mirror image. Labels: `neutral`, `smiling` (fer's "happy"), `angry`, `sad`, `surprised`,
`fearful`, `disgusted`.

Refinement: when the model hesitates between smiling and neutral (both >= 0.2), the lift of
the mouth corners above the lip centre, in eye distances, decides: >= 0.12 smiling, else
neutral. On the sample photos smiles lift the corners 0.13-0.27 and neutral faces 0.01-0.12.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

import likeness
from likeness.faces.types import Face
from likeness.metrics.quiet import native_stderr_silenced

MODEL_FILE = (
    Path(likeness.__file__).parent / "data" / "models" / "fer_emotion_model_quantized.tflite"
)
LABELS = ("angry", "disgusted", "fearful", "smiling", "sad", "surprised", "neutral")
SMILE_LIFT = 0.12
PAD = 0.1


@dataclass(frozen=True)
class Expression:
    label: str
    probability: float
    probabilities: dict[str, float]
    refined: bool = False


@dataclass
class ExpressionClassifier:
    model_file: Path = MODEL_FILE
    name: str = field(default="fer-mini-xception", init=False)
    version: str = field(default="1", init=False)
    _interpreter: Any = field(default=None, init=False, repr=False)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_interpreter"] = None
        return state

    def load(self) -> Any:
        if self._interpreter is None:
            try:
                from ai_edge_litert.interpreter import Interpreter
            except ImportError as exc:
                raise RuntimeError(
                    "expression needs ai-edge-litert; run `pip install ai-edge-litert`"
                ) from exc
            if not Path(self.model_file).is_file():
                raise FileNotFoundError(f"{self.model_file} is missing; reinstall likeness")
            with native_stderr_silenced():
                interpreter = Interpreter(model_path=str(self.model_file), num_threads=1)
                interpreter.allocate_tensors()
            self._interpreter = interpreter
        return self._interpreter

    def probabilities(self, grey: np.ndarray, face: Face) -> np.ndarray:
        """Model probabilities (in `LABELS` order) for one face of a grey image (0-255)."""
        import cv2

        interpreter = self.load()
        crop = face_crop(grey, face)
        x = cv2.resize(crop, (64, 64), interpolation=cv2.INTER_AREA).astype(np.float32)
        x = (x / 255.0 - 0.5) * 2.0
        inp = interpreter.get_input_details()[0]["index"]
        out = interpreter.get_output_details()[0]["index"]
        probs = []
        for view in (x, x[:, ::-1]):
            interpreter.set_tensor(inp, np.ascontiguousarray(view)[None, :, :, None])
            interpreter.invoke()
            probs.append(np.asarray(interpreter.get_tensor(out)[0], dtype=np.float64))
        mean = np.mean(probs, axis=0)
        return mean / max(1e-9, mean.sum())

    def classify(self, grey: np.ndarray, face: Face, refine: bool = True) -> Expression:
        probs = self.probabilities(grey, face)
        table = {label: round(float(p), 4) for label, p in zip(LABELS, probs, strict=True)}
        best = int(np.argmax(probs))
        label, refined = LABELS[best], False
        if refine and len(face.landmarks) == 68 and label in ("smiling", "neutral"):
            smiling, neutral = table["smiling"], table["neutral"]
            if smiling >= 0.2 and neutral >= 0.2:
                geometric = "smiling" if mouth_lift(face.points) >= SMILE_LIFT else "neutral"
                refined = geometric != label
                label = geometric
        return Expression(label, table[label], table, refined)


def face_crop(grey: np.ndarray, face: Face, pad: float = PAD) -> np.ndarray:
    """The face box widened by `pad` of its width on each side, as uint8; the part outside the
    image repeats the border pixels."""
    box = face.box
    margin = pad * box.width
    x0, y0 = int(round(box.x0 - margin)), int(round(box.y0 - margin))
    x1, y1 = int(round(box.x1 + margin)), int(round(box.y1 + margin))
    h, w = grey.shape[:2]
    inside = grey[max(0, y0) : min(h, y1), max(0, x0) : min(w, x1)]
    widths = ((max(0, -y0), max(0, y1 - h)), (max(0, -x0), max(0, x1 - w)))
    if any(any(pair) for pair in widths):
        inside = np.pad(inside, widths, mode="edge")
    return np.ascontiguousarray(np.clip(inside, 0, 255).astype(np.uint8))


def mouth_lift(points: np.ndarray) -> float:
    """How far the mouth corners (48, 54) sit above the midpoint of the lip centres (51, 57),
    in units of the distance between the eye centres; positive when the corners are raised.
    Measured in the face's own frame (eyes level), so a tilted head reads the same."""
    left, right = points[36:42].mean(axis=0), points[42:48].mean(axis=0)
    eye_distance = float(np.linalg.norm(right - left))
    angle = np.arctan2(right[1] - left[1], right[0] - left[0])
    c, s = np.cos(-angle), np.sin(-angle)
    points = (np.asarray(points, dtype=np.float64) - left) @ np.array([[c, s], [-s, c]])
    lips = (points[51] + points[57]) / 2
    corners = (points[48][1] + points[54][1]) / 2
    return float((lips[1] - corners) / max(eye_distance, 1e-6))
