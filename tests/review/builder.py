"""A small review workspace: the sample face photos as sources, generated images as synthetic
candidates, and analyzer results (match, angle, flags...) for most of them."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from likeness.curate.ingest import Ingester
from likeness.data import FACES
from likeness.jobs import start_job
from likeness.store.analyses import put_analysis
from likeness.store.db import transaction, utc_now
from likeness.workspace import Workspace

LOCAL = "http://127.0.0.1:8765"
ANGLES = ["front", "half_left", "profile_left", "half_right", "profile_right"]
YAWS = {
    "front": -3.0,
    "half_left": 33.0,
    "profile_left": 66.0,
    "half_right": -38.0,
    "profile_right": -71.0,
}
EXPRESSIONS = ["neutral", "smiling", "angry", "sad"]
# Subject face boxes and yaw of the sample photos, as measured by the dlib face backend.
SOURCE_FACES = {
    "obama.jpg": ([357.09, 143.9, 634.23, 421.05], -0.3),
    "obama2.jpg": ([151.88, 281.25, 444.38, 573.75], 34.1),
    "biden.jpg": ([433.91, 227.29, 743.85, 540.67], -21.8),
}


def candidate_png(path: Path, seed: int, width: int = 200) -> Path:
    """A distinct candidate made from a sample photo: a random portrait crop, sometimes
    mirrored, with a colour shift (so it looks like a generation and hashes differently)."""
    rng = np.random.default_rng(seed)
    names = sorted(p.name for p in FACES.iterdir() if p.suffix in (".jpg", ".png"))
    with Image.open(FACES / names[seed % len(names)]) as photo:
        photo.draft("RGB", (photo.width // 2, photo.height // 2))  # JPEG: decode at half size
        img = photo.convert("RGB")
    w, h = img.size
    cw = int(w * rng.uniform(0.55, 0.9))
    ch = min(h, int(cw * 1.4))
    x0 = int(rng.integers(0, max(1, w - cw)))
    y0 = int(rng.integers(0, max(1, h - ch)))
    img = img.crop((x0, y0, x0 + cw, y0 + ch)).resize((width, int(width * ch / cw)))
    if rng.random() < 0.5:
        img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    shift = rng.uniform(0.8, 1.2, size=3)
    pixels = np.clip(np.asarray(img, dtype=np.float32) * shift, 0, 255).astype(np.uint8)
    Image.fromarray(pixels).save(path)
    return path


@dataclass
class ReviewWorkspace:
    root: Path
    sources: list[str]
    candidates: list[str]
    """Synthetic images, in ingest order."""
    scored: dict[str, float]
    """sha -> match of the scored candidates."""
    runs: dict[str, str]
    """sha -> run label (`generate #N`) of the candidates with generation provenance."""


def record_generations(ws: Workspace, shas: list[str]) -> dict[str, str]:
    """Generation provenance as `likeness generate` stores it, in two jobs (runs)."""
    runs: dict[str, str] = {}
    half = len(shas) // 2
    for batch, part in enumerate((shas[:half], shas[half:])):
        job = start_job(ws.db, "generate", f"test-run-{batch}", total=len(part))
        with transaction(ws.db):
            for i, sha in enumerate(part):
                seed = 1000 * batch + i
                provenance = {
                    "schema": 1,
                    "seed": seed,
                    "prompt": "zkx123, photo of a woman, raw photo, visible skin pores",
                    "negative": "blurry",
                    "recipe": {
                        "sampler": "dpmpp_2m",
                        "scheduler": "karras",
                        "steps": 30,
                        "cfg": 4.0,
                    },
                    "recipe_hash": f"{batch:02d}" * 8,
                    "model": {"name": "bigLove_xl.safetensors", "sha256": None},
                    "loras": [{"name": "zkx123_v1.safetensors", "strength": 0.7}],
                    "engine": {"name": "diffusers", "version": "0.42.1"},
                }
                ws.db.execute(
                    "INSERT INTO generations (image_sha, job_id, engine, engine_version, "
                    "recipe_hash, seed, model, prompt, provenance, created_at) "
                    "VALUES (?, ?, 'diffusers', '0.42.1', ?, ?, 'bigLove_xl.safetensors', ?, ?, ?)",
                    (
                        sha,
                        job.id,
                        provenance["recipe_hash"],
                        str(seed),
                        provenance["prompt"],
                        json.dumps(provenance),
                        utc_now(),
                    ),
                )
                runs[sha] = f"generate #{job.id}"
        job.finish()
    return runs


def build_review_workspace(root: Path, n_candidates: int = 12) -> ReviewWorkspace:
    ws = Workspace.create(root, name="Mara Test", class_word="woman")
    try:
        sources = []
        for name, (box, yaw) in SOURCE_FACES.items():
            sha = Ingester(ws, "source").ingest_file(FACES / name).sha256
            sources.append(sha)
            with transaction(ws.db):
                face = {"box": box, "yaw": yaw, "pitch": 0.0, "roll": 0.0}
                put_analysis(ws.db, sha, "faces", "1", {"faces": [face], "subject": 0})
        gen = root.parent / "gen"
        gen.mkdir(exist_ok=True)
        ingester = Ingester(ws, "synthetic")
        candidates = []
        for i in range(n_candidates):
            result = ingester.ingest_file(candidate_png(gen / f"cand_{i:03d}.png", seed=1000 + i))
            assert result.status in ("stored", "near_duplicate"), result
            candidates.append(result.sha256)
        runs = record_generations(ws, candidates[:8])
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
                        "yaw": YAWS[ANGLES[i % 5]] + (i % 3) * 4.0,
                        "angle": ANGLES[i % 5],
                        "expression": EXPRESSIONS[i % 4],
                        "body_pose": "not_visible",
                        "grain": 1.5 + i / 10,
                        "flags": flags,
                        "pass": match >= 7.0,
                        "nearest_reference": sources[i % len(sources)],
                    },
                )
        return ReviewWorkspace(ws.root, sources, candidates, scored, runs)
    finally:
        ws.close()
