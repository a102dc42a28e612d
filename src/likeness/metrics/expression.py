"""Facial expression: `neutral`, `smiling`, `angry`, `sad`, `other`, or `unsure`.

Two instruments vote, and a small rule set (in `decide`) combines them:
- fer's mini-Xception (MIT, vendored TFLite file, run with ai-edge-litert; about 66% accurate on
  FER2013) gives probabilities for its seven classes. The face box is widened by 10% on each
  side, turned to grey, resized to 64x64, scaled to [-1, 1], and averaged with its mirror image.
  Its `happy` is `smiling`; `surprise`, `fear` and `disgust` together are `other`.
- the 68 landmarks, measured in the face's own frame with yaw and pitch corrected
  (`likeness.metrics.face_geometry`), give each label a geometric support from 0 to 1:
  smiling: mouth corners lifted above the middle of the mouth (`corner_lift` 0.04 -> 0,
  0.10 -> 1 eye distance); sad: corners pulled down (`corner_lift` -0.02 -> 0, -0.08 -> 1) or
  inner brow ends raised (`inner_brow_raise` -0.04 -> 0, +0.02 -> 1); angry: brows lowered
  (`brow_height` 0.21 -> 0, 0.15 -> 1); other: lips apart (`mouth_open` >= 0.10) or eyes wide
  (`eye_open` >= 0.35); neutral: 1 minus the largest of the smiling, sad and angry supports.

The rules, in order:
1. An open mouth (`mouth_open` >= 0.10) that does not smile and shows neither the brow cue of
   anger nor a cue of sadness is speech, not an emotion: fer's angry, sad and other
   probabilities are counted as neutral (fer reads a talking mouth as anger or fear).
2. A label needs its geometric cue: angry needs support >= 0.5 (lowered brows), sad needs
   support >= 0.5, smiling needs support >= 0.5 or fer >= 0.6 with the corners not turned down.
3. Each allowed label's confidence is the mean of fer's probability and its geometric support;
   the highest wins.
4. `unsure` when the winner's confidence is below 0.5, or when fer gave another label >= 0.5
   (the two instruments disagree). Its confidence is the best candidate's.

Turned heads: past 45 degrees of yaw the 68-point fit puts the far side's points on the
visible contour, and the cues, measured in eye distances that shrink to cos(yaw), become
unstable (t1.jpg's standing man at yaw 57 has `corner_lift` -0.080, his mirror image -0.044).
The geometry's weight falls from 1 at 45 degrees to 0 at 60: each confidence is
(fer + weight x support) / (1 + weight), and below a weight of 0.5 (past 52.5 degrees) a label
no longer needs its geometric cue, so near-profile faces are read mostly by fer, and say
`unsure` when fer is unsure.

Without 68 landmarks (five-point backends) fer decides alone, with `unsure` below 0.5.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

import likeness
from likeness.faces.types import Face
from likeness.metrics.face_geometry import FaceGeometry, measure
from likeness.metrics.quiet import native_stderr_silenced

MODEL_FILE = (
    Path(likeness.__file__).parent / "data" / "models" / "fer_emotion_model_quantized.tflite"
)
# fer's output order, in this project's words.
LABELS = ("angry", "disgusted", "fearful", "smiling", "sad", "surprised", "neutral")
# What `Expression.label` can be.
EXPRESSIONS = ("neutral", "smiling", "angry", "sad", "other")
UNSURE = "unsure"
PAD = 0.1

# Geometric thresholds (eye distances, see the module doc); a support is 0 at the first value
# and 1 at the second.
SMILE_RAMP = (0.04, 0.10)
FROWN_RAMP = (0.02, 0.08)  # on -corner_lift
INNER_BROW_RAMP = (-0.04, 0.02)
LOWERED_BROW_RAMP = (0.21, 0.15)  # on brow_height, lower is more
MOUTH_OPEN = 0.10
EYES_WIDE = 0.35
# Rules.
CUE_NEEDED = 0.5
FAINT_SMILE_FER = 0.6
FAINT_SMILE_FLOOR = -0.03
MIN_CONFIDENCE = 0.5
FER_DISAGREES = 0.5
# Yaw (degrees) where the geometry's weight starts to fall, and where it reaches 0.
RELIABLE_YAW, UNRELIABLE_YAW = 45.0, 60.0


@dataclass(frozen=True)
class Expression:
    """One face's expression reading.

    `label` is one of `EXPRESSIONS` or `unsure`; `probability` is the reading's confidence
    (0-1: the mean of fer's probability and the geometric support, see the module doc);
    `probabilities` are fer's own seven; `geometry` the landmark measurements (None without
    68 landmarks); `reason` says which rule decided.
    """

    label: str
    probability: float
    probabilities: dict[str, float]
    geometry: dict[str, float] | None = None
    reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "probability": self.probability,
            "probabilities": dict(self.probabilities),
            "geometry": None if self.geometry is None else dict(self.geometry),
            "reason": self.reason,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Expression:
        geometry = data.get("geometry")
        return cls(
            label=data["label"],
            probability=float(data["probability"]),
            probabilities=dict(data["probabilities"]),
            geometry=None if geometry is None else dict(geometry),
            reason=data.get("reason", ""),
        )


@dataclass
class ExpressionClassifier:
    model_file: Path = MODEL_FILE
    name: str = field(default="fer-mini-xception", init=False)
    version: str = field(default="2-geometry2", init=False)
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

    def classify(self, grey: np.ndarray, face: Face) -> Expression:
        """The expression of one face of a grey image (0-255); see the module doc."""
        probs = self.probabilities(grey, face)
        table = {label: round(float(p), 4) for label, p in zip(LABELS, probs, strict=True)}
        geometry = None
        if len(face.landmarks) == 68:
            geometry = measure(face.points, face.pose.yaw, face.pose.pitch)
        label, confidence, reason = decide(table, geometry, geometry_weight(face.pose.yaw))
        return Expression(
            label,
            round(confidence, 4),
            table,
            None if geometry is None else geometry.to_dict(),
            reason,
        )


def merged(probabilities: dict[str, float]) -> dict[str, float]:
    """fer's seven probabilities as the five `EXPRESSIONS` (surprise, fear, disgust: other)."""
    p = {k: float(v) for k, v in probabilities.items()}
    return {
        "neutral": p.get("neutral", 0.0),
        "smiling": p.get("smiling", 0.0),
        "angry": p.get("angry", 0.0),
        "sad": p.get("sad", 0.0),
        "other": p.get("surprised", 0.0) + p.get("fearful", 0.0) + p.get("disgusted", 0.0),
    }


def supports(g: FaceGeometry) -> dict[str, float]:
    """Geometric support (0-1) of each of the five `EXPRESSIONS`."""
    smiling = _ramp(g.corner_lift, *SMILE_RAMP)
    sad = max(_ramp(-g.corner_lift, *FROWN_RAMP), _ramp(g.inner_brow_raise, *INNER_BROW_RAMP))
    angry = _ramp(g.brow_height, *LOWERED_BROW_RAMP)
    other = 1.0 if g.mouth_open >= MOUTH_OPEN or g.eye_open >= EYES_WIDE else 0.0
    return {
        "neutral": 1.0 - max(smiling, sad, angry),
        "smiling": smiling,
        "angry": angry,
        "sad": sad,
        "other": other,
    }


def geometry_weight(yaw: float) -> float:
    """How much the landmark geometry counts for a head turned `yaw` degrees: 1 up to 45,
    0 from 60 (see the module doc); 1 when the yaw is unknown."""
    if not math.isfinite(yaw):
        return 1.0
    return 1.0 - _ramp(abs(yaw), RELIABLE_YAW, UNRELIABLE_YAW)


def decide(
    probabilities: dict[str, float], geometry: FaceGeometry | None, weight: float = 1.0
) -> tuple[str, float, str]:
    """(label, confidence, reason) from fer's probabilities (keys of `LABELS`) and the face's
    geometry, counted with `weight` (`geometry_weight` of the head's yaw); the rules are in the
    module doc.

    Example:
        >>> decide({"smiling": 0.9, "neutral": 0.1}, None)
        ('smiling', 0.9, 'fer alone')
    """
    p = merged(probabilities)
    fer_top = max(p, key=p.__getitem__)
    if geometry is None:
        if p[fer_top] < MIN_CONFIDENCE:
            return UNSURE, p[fer_top], f"fer alone: {fer_top} {p[fer_top]:.2f} < {MIN_CONFIDENCE}"
        return fer_top, p[fer_top], "fer alone"
    s = supports(geometry)
    reasons = []
    # 1. Speech: an open mouth with no emotion cue is not an emotion.
    cues = max(s["angry"], s["sad"], s["smiling"])
    if geometry.mouth_open >= MOUTH_OPEN and cues < CUE_NEEDED:
        moved = p["angry"] + p["sad"] + p["other"]
        p = {**p, "neutral": p["neutral"] + moved, "angry": 0.0, "sad": 0.0, "other": 0.0}
        fer_top = max(p, key=p.__getitem__)
        reasons.append(f"open mouth without an emotion cue: fer's {moved:.2f} counted as neutral")
    # 2. Each label needs its geometric cue (unless the head is turned too far to trust it).
    cued = weight >= 0.5
    allowed = {
        "neutral": True,
        "smiling": not cued
        or s["smiling"] >= CUE_NEEDED
        or (p["smiling"] >= FAINT_SMILE_FER and geometry.corner_lift > FAINT_SMILE_FLOOR),
        "angry": not cued or s["angry"] >= CUE_NEEDED,
        "sad": not cued or s["sad"] >= CUE_NEEDED,
        "other": not cued or s["other"] >= CUE_NEEDED,
    }
    if weight < 1.0:
        reasons.append(f"head turned: geometry counts {weight:.2f}")
    # 3. Confidence: the weighted mean of the two instruments; the highest allowed label wins.
    confidence = {k: (p[k] + weight * s[k]) / (1 + weight) for k in EXPRESSIONS if allowed[k]}
    label = max(confidence, key=confidence.__getitem__)
    best = confidence[label]
    # 4. Unsure when weak or when fer confidently says something else.
    if best < MIN_CONFIDENCE:
        reasons.append(f"{label} confidence {best:.2f} < {MIN_CONFIDENCE}")
        return UNSURE, best, "; ".join(reasons)
    if fer_top != label and p[fer_top] >= FER_DISAGREES:
        why = "its cue is missing" if not allowed[fer_top] else "the geometry disagrees"
        reasons.append(f"fer says {fer_top} {p[fer_top]:.2f} but {why}; geometry says {label}")
        return UNSURE, best, "; ".join(reasons)
    reasons.append(f"{label}: fer {p[label]:.2f}, geometry {s[label]:.2f}")
    return label, best, "; ".join(reasons)


def _ramp(value: float, zero: float, one: float) -> float:
    """0 at `zero`, 1 at `one`, linear between (either direction), clipped."""
    if not math.isfinite(value):
        return 0.0
    return float(min(1.0, max(0.0, (value - zero) / (one - zero))))


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
