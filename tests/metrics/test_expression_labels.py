"""The labelled sample faces (src/likeness/data/samples/faces/labels.csv, labelled by eye):
each reads its label (or one the CSV also accepts), and level heads read level pitch. The
held-out faces (heldout.csv) are checked the same way but never used to set thresholds."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from metrics_samples import SAMPLES

from likeness.faces import DlibAnalyzer, Face
from likeness.metrics import quality
from likeness.metrics.expression import EXPRESSIONS, UNSURE, Expression, ExpressionClassifier

LEVEL_PITCH = 5.0


@dataclass(frozen=True)
class Label:
    source: str
    box: tuple[float, ...] | None
    expression: str
    accepted: frozenset[str]
    level: str


def read_labels(name: str) -> list[Label]:
    with open(SAMPLES / name, newline="") as handle:
        rows = list(csv.DictReader(handle))
    return [
        Label(
            source=row.get("file") or row["source"],
            box=tuple(float(v) for v in row["face_box"].split()) or None,
            expression=row["expression"],
            accepted=frozenset({row["expression"], *row["also_accepted"].split()}),
            level=row["level_pitch"],
        )
        for row in rows
    ]


def load(source: str) -> np.ndarray:
    from PIL import Image

    if source == "astronaut":
        from skimage import data

        return data.astronaut()
    if source.startswith("matplotlib:"):
        cbook = pytest.importorskip("matplotlib.cbook")
        return np.asarray(Image.open(cbook.get_sample_data(source.split(":", 1)[1])).convert("RGB"))
    return np.asarray(Image.open(SAMPLES / source).convert("RGB"))


def pick(faces: list[Face], box: tuple[float, ...] | None) -> Face:
    """The labelled face: the one nearest the labelled box, or the largest."""
    if box is None:
        return max(faces, key=lambda f: f.box.area)
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    return min(faces, key=lambda f: abs(f.box.center[0] - cx) + abs(f.box.center[1] - cy))


@pytest.fixture(scope="module")
def readings() -> dict[str, list[tuple[Label, Face, Expression]]]:
    analyzer, classifier = DlibAnalyzer(), ExpressionClassifier()
    out: dict[str, list[tuple[Label, Face, Expression]]] = {}
    images: dict[str, tuple[np.ndarray, list[Face]]] = {}
    for table in ("labels.csv", "heldout.csv", "labels.csv:mirrored"):
        out[table] = []
        mirrored = table.endswith(":mirrored")
        for label in read_labels(table.split(":")[0]):
            key = label.source + (":mirrored" if mirrored else "")
            if key not in images:
                rgb = load(label.source)
                rgb = np.ascontiguousarray(rgb[:, ::-1]) if mirrored else rgb
                images[key] = (rgb, analyzer.analyze(rgb))
            rgb, faces = images[key]
            box = label.box
            if mirrored and box is not None:
                width = rgb.shape[1]
                box = (width - box[2], box[1], width - box[0], box[3])
            face = pick(faces, box)
            out[table].append((label, face, classifier.classify(quality.grey(rgb), face)))
    return out


def test_the_labels_cover_every_sample_face():
    labels = read_labels("labels.csv")
    photos = {p.name for p in Path(SAMPLES).iterdir() if p.suffix in (".jpg", ".png")}
    assert photos <= {label.source for label in labels}
    assert sum(label.source == "t1.jpg" for label in labels) == 6
    for label in labels:
        assert label.expression in EXPRESSIONS
        assert label.accepted <= {*EXPRESSIONS, UNSURE}
        assert label.level in ("yes", "no", "unclear")


@pytest.mark.parametrize("table", ["labels.csv", "heldout.csv", "labels.csv:mirrored"])
def test_each_labelled_face_reads_its_label(readings, table):
    wrong = [
        (label.source, label.box, label.expression, expr.label, expr.reason)
        for label, _, expr in readings[table]
        if expr.label not in label.accepted
    ]
    assert not wrong
    for _, _, expr in readings[table]:
        assert 0.0 <= expr.probability <= 1.0 and expr.geometry is not None and expr.reason


def test_the_speaking_face_is_not_angry_and_the_clear_smiles_are_sure(readings):
    by_source = {label.source: expr for label, _, expr in readings["labels.csv"] if not label.box}
    assert by_source["obama2.jpg"].label == "neutral"  # fer alone reads this talking face angry
    assert by_source["obama2.jpg"].probabilities["angry"] > 0.5
    for name in ("obama.jpg", "astronaut"):
        assert by_source[name].label == "smiling" and by_source[name].probability > 0.9


@pytest.mark.parametrize("table", ["labels.csv", "heldout.csv", "labels.csv:mirrored"])
def test_level_heads_read_level_pitch(readings, table):
    level = [
        (label.source, face.pose.pitch)
        for label, face, _ in readings[table]
        if label.level == "yes"
    ]
    assert level
    assert all(abs(pitch) < LEVEL_PITCH for _, pitch in level), level
