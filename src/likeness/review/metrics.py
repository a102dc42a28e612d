"""The numbers shown on each candidate, read from the analyses cache.

Review measures nothing itself: it shows whatever the analyzers stored in `analyses` (match,
angle, expression, body pose, flags, quality metrics...), and blanks where nothing is stored.
For each image the newest result of each analyzer is read; top-level scalar values become
metrics under their key, scalars one level down (e.g. `identity.match`) under their own key
when the top level does not already use it, and every `flags` list of strings is gathered.
Per-face arrays (landmarks, descriptors) are skipped.

The index is built once and then refreshed incrementally from new `analyses` rows (by rowid),
so a queue of 5,000 images does not re-parse 5,000 JSON documents per page.
"""

from __future__ import annotations

import json
import math
import sqlite3
import threading
from dataclasses import dataclass, field, replace
from typing import Any

Value = float | str | bool

# Metrics whose larger value is better; sorting by them puts the best first by default.
HIGHER_IS_BETTER = {"match", "sharpness", "score", "brisque_quality"}
# How known metrics are shown; any other number is shown with 3 significant digits.
DISPLAY_ORDER = (
    "match",
    "pass",
    "distance",
    "angle",
    "yaw",
    "pitch",
    "roll",
    "expression",
    "expression_p",
    "body_pose",
    "centroid_distance",
    "sharpness",
    "grain",
    "plastic",
    "plastic_relative",
    "skin_texture",
    "clipping",
    "face_px",
    "brisque",
    "faces",
)
LABELS = {
    "match": "match (0-10)",
    "expression_p": "expression prob.",
    "body_pose_p": "body pose prob.",
    "centroid_distance": "centroid distance",
    "face_px": "face width (px)",
    "clipping": "clipping (%)",
    "plastic": "plastic skin",
    "plastic_relative": "plastic vs refs",
}
_REFERENCE_KEYS = ("nearest_reference", "nearest_ref", "reference_sha", "nearest_sha")


@dataclass(frozen=True)
class ImageMetrics:
    values: dict[str, Value] = field(default_factory=dict)
    flags: tuple[str, ...] = ()
    box: tuple[float, float, float, float] | None = None
    """The subject face box (x0, y0, x1, y1) when an analyzer stored one."""
    embedding: tuple[float, ...] | None = field(default=None, repr=False)
    """The subject face's identity embedding, when an analyzer stored one."""

    def number(self, key: str) -> float | None:
        value = self.values.get(key)
        if isinstance(value, bool) or not isinstance(value, int | float):
            return None
        return float(value) if math.isfinite(value) else None

    def text(self, key: str) -> str | None:
        value = self.values.get(key)
        return value if isinstance(value, str) else None

    @property
    def nearest_reference(self) -> str | None:
        for key in _REFERENCE_KEYS:
            value = self.text(key)
            if value and len(value) == 64:
                return value
        return None

    def display(self) -> list[tuple[str, str]]:
        """(name, formatted value) in a stable order: known metrics first, then the rest."""
        shown = {k: v for k, v in self.values.items() if k not in _REFERENCE_KEYS}
        keys = [k for k in DISPLAY_ORDER if k in shown]
        keys += sorted(k for k in shown if k not in DISPLAY_ORDER)
        return [(LABELS.get(k, k.replace("_", " ")), format_value(k, self.values[k])) for k in keys]


EMPTY = ImageMetrics()


def format_value(key: str, value: Value) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, str):
        return value
    if key in ("yaw", "pitch", "roll"):
        return f"{value:+.0f}°"
    if key == "match":
        return f"{value:.1f}"
    if key.endswith("_p") or key in ("probability", "expression_prob"):
        return f"{value:.0%}" if 0 <= value <= 1 else f"{value:.3g}"
    if isinstance(value, int):
        return str(value)
    return f"{value:.3g}" if abs(value) < 1000 else f"{value:.0f}"


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _box(value: Any) -> tuple[float, float, float, float] | None:
    if isinstance(value, list) and len(value) == 4 and all(map(_number, value)):
        return (float(value[0]), float(value[1]), float(value[2]), float(value[3]))
    return None


# Bookkeeping that analyzers store but a reviewer does not need to see.
_SKIP_KEYS = {"sha256", "phash", "dhash", "width", "height", "subject", "schema"}
# Nested records whose `label` (and `probability`) are the metric: {"expression": {"label": ...}}.
_LABELLED = {"expression": ("expression", "expression_p"), "body": ("body_pose", "body_pose_p")}


def _scalar(value: Any) -> bool:
    return isinstance(value, bool | int | float) or (isinstance(value, str) and len(value) <= 200)


def extract(result: dict[str, Any]) -> ImageMetrics:
    """Metrics, flags, subject box and subject embedding out of one analyzer result.

    Understands flat results ({"match": 7.9, "angle": "front", "flags": [...]}) and the face
    analysis shape ({"faces": [{box, descriptor, yaw, ...}], "subject": 0, "expression":
    {"label", "probability"}, "body": {"label"}, "quality": {...}, "flags": [...]}).
    """
    values: dict[str, Value] = {}
    flags: list[str] = []
    box = _box(result.get("box"))
    nested: list[tuple[str, dict[str, Any]]] = []
    for key, value in result.items():
        if key in _SKIP_KEYS:
            continue
        if _scalar(value):
            values[key] = value
        elif key == "flags" and isinstance(value, list):
            flags += [v for v in value if isinstance(v, str)]
        elif isinstance(value, dict):
            nested.append((key, value))
    for parent, inner in nested:
        if parent in _LABELLED and "label" in inner:
            name, probability = _LABELLED[parent]
            if _scalar(inner["label"]) and inner["label"] is not None:
                values.setdefault(name, inner["label"])
            if isinstance(inner.get("probability"), int | float):
                values.setdefault(probability, inner["probability"])
            continue
        for key, value in inner.items():
            if _scalar(value):
                values[key if key not in values else f"{parent}.{key}"] = value
            elif key == "flags" and isinstance(value, list):
                flags += [v for v in value if isinstance(v, str)]
            elif key == "box" and box is None and parent in ("subject", "face"):
                box = _box(value)
    embedding = None
    faces, subject = result.get("faces"), result.get("subject")
    if isinstance(faces, list):
        values.setdefault("faces", len(faces))
        if (
            isinstance(subject, int)
            and 0 <= subject < len(faces)
            and isinstance(faces[subject], dict)
        ):
            face = faces[subject]
            box = box or _box(face.get("box"))
            for key in ("yaw", "pitch", "roll"):
                if isinstance(face.get(key), int | float):
                    values.setdefault(key, face[key])
            descriptor = face.get("descriptor")
            if isinstance(descriptor, list) and descriptor and all(map(_number, descriptor)):
                embedding = tuple(float(v) for v in descriptor)
    return ImageMetrics(values, tuple(dict.fromkeys(flags)), box, embedding)


def merge(parts: list[ImageMetrics]) -> ImageMetrics:
    """Later parts win on the same key; flags are united."""
    values: dict[str, Value] = {}
    flags: list[str] = []
    box = embedding = None
    for part in parts:
        values.update(part.values)
        flags += part.flags
        box = part.box or box
        embedding = part.embedding or embedding
    return ImageMetrics(values, tuple(dict.fromkeys(flags)), box, embedding)


class MetricsIndex:
    """sha256 -> ImageMetrics over the whole workspace, kept in step with `analyses`.

    `distance_threshold` is the identity backend's same-person distance, used to derive match
    numbers from stored embeddings against the `source` photos (see `review.identity`);
    `pass_match` the match an identity must reach to pass (the workspace's setting).

    Example: index = MetricsIndex(); index.refresh(conn); index.get(sha).number("match")
    """

    def __init__(self, distance_threshold: float = 0.6, pass_match: float = 5.0) -> None:
        self._lock = threading.Lock()
        self.distance_threshold = distance_threshold
        self.pass_match = pass_match
        self._reset()

    def _reset(self) -> None:
        self._last_rowid = 0
        self._count = 0
        # sha -> analyzer -> (created_at, metrics)
        self._parts: dict[str, dict[str, tuple[str, ImageMetrics]]] = {}
        self._base: dict[str, ImageMetrics] = {}
        self._merged: dict[str, ImageMetrics] = {}
        self._references: list[str] = []
        self._keys: dict[str, bool] = {}

    def refresh(self, conn: sqlite3.Connection) -> None:
        """Read analyses added since the last refresh (everything again if rows were removed),
        and derive the reference-dependent numbers again when anything changed."""
        with self._lock:
            count, top = conn.execute(
                "SELECT COUNT(*), COALESCE(MAX(rowid), 0) FROM analyses"
            ).fetchone()
            references = [
                r[0]
                for r in conn.execute(
                    "SELECT sha256 FROM images WHERE origin = 'source' AND excluded = 0 "
                    "ORDER BY sha256"
                )
            ]
            if top < self._last_rowid or count < self._count:
                self._reset()  # rows were deleted or the table rebuilt: start over
            if (top, count) == (self._last_rowid, self._count) and references == self._references:
                return
            rows = conn.execute(
                "SELECT rowid, image_sha, analyzer, created_at, result FROM analyses "
                "WHERE rowid > ? ORDER BY rowid",
                (self._last_rowid,),
            ).fetchall()
            for rowid, sha, analyzer, created_at, result in rows:
                self._last_rowid = max(self._last_rowid, rowid)
                try:
                    data = json.loads(result)
                except ValueError:
                    continue
                if not isinstance(data, dict):
                    continue
                per = self._parts.setdefault(sha, {})
                old = per.get(analyzer)
                if old is None or old[0] <= created_at:
                    per[analyzer] = (created_at, extract(data))
                    ordered = sorted(per.values(), key=lambda p: p[0])
                    self._base[sha] = merge([m for _, m in ordered])
            self._count = count
            self._references = references
            self._derive()

    def _derive(self) -> None:
        from likeness.review.identity import derive

        derived = derive(self._base, self._references, self.distance_threshold, self.pass_match)
        merged = {}
        keys: dict[str, bool] = {}
        for sha, base in self._base.items():
            extra = dict(derived.get(sha) or {})
            flags = extra.pop("flags", [])
            m = base
            if extra or flags:
                m = replace(base, values={**extra, **base.values}, flags=(*base.flags, *flags))
            merged[sha] = m
            for key, value in m.values.items():
                numeric = isinstance(value, int | float) and not isinstance(value, bool)
                keys[key] = keys.get(key, False) or numeric
        self._merged, self._keys = merged, keys

    def get(self, sha: str) -> ImageMetrics:
        return self._merged.get(sha, EMPTY)

    def numeric_keys(self) -> list[str]:
        """Every metric that holds a number somewhere, known ones first (for the sort menu)."""
        keys = [k for k, numeric in self._keys.items() if numeric]
        return [k for k in DISPLAY_ORDER if k in keys] + sorted(
            k for k in keys if k not in DISPLAY_ORDER
        )

    def all_flags(self) -> list[str]:
        return sorted({f for m in self._merged.values() for f in m.flags})
