"""A small review workspace: the sample face photos as sources, generated images as synthetic
candidates, and analyzer results (match, angle, flags...) for most of them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from likeness.curate.ingest import Ingester
from likeness.data import FACES
from likeness.store.analyses import put_analysis
from likeness.store.db import transaction
from likeness.workspace import Workspace

LOCAL = "http://127.0.0.1:8765"
ANGLES = ["front", "half_left", "profile_left", "half_right", "profile_right"]
EXPRESSIONS = ["neutral", "smiling", "angry", "sad"]


def candidate_png(path: Path, seed: int, size: int = 96) -> Path:
    """A distinct synthetic image (smooth random colour field; perceptual hashes differ)."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, size=(6, 6, 3), dtype=np.uint8)
    Image.fromarray(small).resize((size, int(size * 1.4)), Image.Resampling.BICUBIC).save(path)
    return path


@dataclass
class ReviewWorkspace:
    root: Path
    sources: list[str]
    candidates: list[str]
    """Synthetic images, in ingest order."""
    scored: dict[str, float]
    """sha -> match of the scored candidates."""


def build_review_workspace(root: Path, n_candidates: int = 12) -> ReviewWorkspace:
    ws = Workspace.create(root, name="Mara Test", class_word="woman")
    try:
        sources = [
            r.sha256
            for r in (
                Ingester(ws, "source").ingest_file(FACES / name)
                for name in ("obama.jpg", "obama2.jpg", "biden.jpg")
            )
            if r.sha256
        ]
        gen = root.parent / "gen"
        gen.mkdir(exist_ok=True)
        ingester = Ingester(ws, "synthetic")
        candidates = []
        for i in range(n_candidates):
            result = ingester.ingest_file(candidate_png(gen / f"cand_{i:03d}.png", seed=1000 + i))
            assert result.status in ("stored", "near_duplicate"), result
            candidates.append(result.sha256)
        scored: dict[str, float] = {}
        with transaction(ws.db):
            for i, sha in enumerate(candidates):
                if i % 4 == 3:
                    continue  # some candidates are not scored yet
                match = round(3.0 + (i * 7 % 11) * 0.6, 2)
                scored[sha] = match
                flags = ["face_too_small"] if i % 5 == 1 else []
                if i % 6 == 2:
                    flags.append("multiple_faces")
                put_analysis(
                    ws.db,
                    sha,
                    "score",
                    "1",
                    {
                        "match": match,
                        "distance": round(0.9 - match / 15, 3),
                        "yaw": (i * 13 % 70) - 35.0,
                        "angle": ANGLES[i % 5],
                        "expression": EXPRESSIONS[i % 4],
                        "body_pose": "not_visible",
                        "grain": 1.5 + i / 10,
                        "flags": flags,
                        "pass": match >= 7.0,
                        "nearest_reference": sources[i % len(sources)],
                    },
                )
        return ReviewWorkspace(ws.root, sources, candidates, scored)
    finally:
        ws.close()
