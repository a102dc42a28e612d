"""Generation provenance in the workspace database (tables of migration 0002).

``record_generation`` runs inside the ingest transaction (``Ingester.ingest_bytes(...,
on_stored=...)``) so an image and its provenance are stored together or not at all.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Mapping
from typing import Any

from likeness.store.db import utc_now


def record_generation(
    conn: sqlite3.Connection, image_sha: str, provenance: Mapping[str, Any], job_id: int | None
) -> None:
    """Insert the provenance of one stored image (no transaction of its own)."""
    engine = provenance["engine"]
    model = provenance.get("model") or {}
    conn.execute(
        "INSERT OR REPLACE INTO generations (image_sha, job_id, engine, engine_version, "
        "recipe_hash, seed, model, model_sha256, prompt, provenance, created_at) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            image_sha,
            job_id,
            engine["name"],
            str(engine["version"]),
            provenance["recipe_hash"],
            str(provenance["seed"]),
            model.get("path") or model.get("name") or "",
            model.get("sha256"),
            provenance.get("prompt", ""),
            json.dumps(provenance, sort_keys=True),
            utc_now(),
        ),
    )
    conn.execute("DELETE FROM generation_loras WHERE image_sha = ?", (image_sha,))
    for position, lora in enumerate(provenance.get("loras") or []):
        conn.execute(
            "INSERT INTO generation_loras (image_sha, position, path, sha256, strength) "
            "VALUES (?, ?, ?, ?, ?)",
            (image_sha, position, lora["path"], lora.get("sha256"), float(lora["strength"])),
        )


def get_generation(conn: sqlite3.Connection, image_sha: str) -> dict[str, Any] | None:
    """The provenance dict stored for ``image_sha``, or None for a non-generated image."""
    row = conn.execute(
        "SELECT provenance FROM generations WHERE image_sha = ?", (image_sha,)
    ).fetchone()
    return json.loads(row[0]) if row else None


def generations_of_job(conn: sqlite3.Connection, job_id: int) -> list[str]:
    """Image hashes made by one generate job, in seed order (image ``i`` has seed
    ``seed + i`` modulo 2**64, so a run that starts near 2**64 - 1 wraps to 0 and goes on)."""
    rows = conn.execute(
        "SELECT image_sha, seed FROM generations WHERE job_id = ?", (job_id,)
    ).fetchall()
    first = first_seed_of_run([int(r[1]) for r in rows])
    return [r[0] for r in sorted(rows, key=lambda r: (int(r[1]) - first) % SEED_SPACE)]


SEED_SPACE = 2**64


def first_seed_of_run(seeds: list[int]) -> int:
    """The seed a run of consecutive seeds (modulo 2**64) starts from: the one after the
    largest gap between them, going round the circle of seeds."""
    ordered = sorted(set(seeds))
    if not ordered:
        return 0
    gaps = [(ordered[0] + SEED_SPACE - ordered[-1], 0)]
    gaps += [(b - a, i + 1) for i, (a, b) in enumerate(zip(ordered, ordered[1:], strict=False))]
    return ordered[max(gaps)[1]]


def job_seeds(conn: sqlite3.Connection, job_id: int) -> list[int]:
    """Seeds of the images one generate job has stored (a seed repeats when a ComfyUI batch
    shares it)."""
    rows = conn.execute("SELECT seed FROM generations WHERE job_id = ?", (job_id,)).fetchall()
    return [int(r[0]) for r in rows]


def job_outputs(conn: sqlite3.Connection, job_id: int) -> list[dict[str, Any]]:
    """The images one job made, oldest first: sha256, seed, engine and the worker that made
    each (its ``worker`` provenance entry: name, host, GPU or server URL; None when the job
    ran in one process)."""
    rows = conn.execute(
        "SELECT image_sha, seed, engine, json_extract(provenance, '$.worker') AS worker "
        "FROM generations WHERE job_id = ? ORDER BY created_at, rowid",
        (job_id,),
    ).fetchall()
    return [
        {
            "image_sha": r["image_sha"],
            "seed": int(r["seed"]),
            "engine": r["engine"],
            "worker": json.loads(r["worker"]) if r["worker"] else None,
        }
        for r in rows
    ]
