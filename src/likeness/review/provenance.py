"""Where a generated image came from (recipe, seed, model, run), read for display only.

Two sources, in order: a provenance table of the workspace database (any table with an image
column `image_sha` or `sha256` and a JSON column `provenance`; its `run_id`/`run`/`job_id`
column, when present, names the run; the `generations` table that `likeness generate`
fills is one), then the image's own PNG text chunks (our JSON chunk, or
the A1111-style `parameters` text that ComfyUI and A1111 write). Images ingested from photos
have neither, and get None.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from typing import Any

from likeness.store.blobs import BlobNotFound, BlobStore

_IMAGE_COLUMNS = ("image_sha", "sha256")
_RUN_COLUMNS = ("run_id", "run", "job_id", "batch_id")
_OWN_TABLES = {"images", "reviews", "review_history", "analyses"}


@dataclass(frozen=True)
class ProvenanceTable:
    name: str
    image_column: str
    run_column: str | None


def find_table(conn: sqlite3.Connection) -> ProvenanceTable | None:
    """The table holding generation provenance, if this workspace has one."""
    names = [
        r[0]
        for r in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' "
            "ORDER BY name"
        )
    ]
    names.sort(key=lambda n: n != "generations")  # the engines' table, when there are several
    for name in names:
        if name in _OWN_TABLES:
            continue
        columns = {r[1] for r in conn.execute(f'PRAGMA table_info("{name}")')}
        image = next((c for c in _IMAGE_COLUMNS if c in columns), None)
        if image and "provenance" in columns:
            run = next((c for c in _RUN_COLUMNS if c in columns), None)
            return ProvenanceTable(name, image, run)
    return None


def runs(conn: sqlite3.Connection, table: ProvenanceTable | None) -> dict[str, str]:
    """sha256 -> run label, for generated images whose provenance names a run. A job id is
    shown as the job's kind and number (`generate #3`), as `likeness jobs` lists it."""
    if table is None:
        return {}
    image, name = table.image_column, table.name
    if table.run_column == "job_id" and _has_table(conn, "jobs"):
        rows = conn.execute(
            f'SELECT g."{image}", j.kind, j.id FROM "{name}" g JOIN jobs j ON j.id = g.job_id'
        ).fetchall()
        return {r[0]: f"{r[1]} #{r[2]}" for r in rows}
    if table.run_column:
        rows = conn.execute(
            f'SELECT "{image}", "{table.run_column}" FROM "{name}" '
            f'WHERE "{table.run_column}" IS NOT NULL'
        ).fetchall()
        return {r[0]: str(r[1]) for r in rows}
    rows = conn.execute(
        f'SELECT "{image}", json_extract(provenance, \'$.run\') FROM "{name}" '
        "WHERE json_valid(provenance) AND json_extract(provenance, '$.run') IS NOT NULL"
    ).fetchall()
    return {r[0]: str(r[1]) for r in rows}


def _has_table(conn: sqlite3.Connection, name: str) -> bool:
    return bool(
        conn.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (name,)
        ).fetchone()
    )


def provenance_of(conn: sqlite3.Connection, blobs: BlobStore, sha: str) -> dict[str, Any] | None:
    """The provenance of one image as a dict, or None when nothing records it.

    Example: summary(provenance_of(conn, blobs, sha)) -> {"model": ..., "seed": "42", ...}
    """
    table = find_table(conn)
    if table is not None:
        row = conn.execute(
            f'SELECT * FROM "{table.name}" WHERE "{table.image_column}" = ? LIMIT 1', (sha,)
        ).fetchone()
        if row is not None:
            try:
                data = json.loads(row["provenance"])
            except (TypeError, ValueError):
                data = {"provenance": row["provenance"]}
            if table.run_column and row[table.run_column] is not None and isinstance(data, dict):
                data.setdefault("run", runs(conn, table).get(sha, row[table.run_column]))
            return data if isinstance(data, dict) else {"provenance": data}
    return png_provenance(blobs, sha)


def png_provenance(blobs: BlobStore, sha: str) -> dict[str, Any] | None:
    """Provenance from PNG text chunks: a JSON chunk whose key mentions likeness or
    provenance, else the A1111 `parameters` text."""
    from PIL import Image

    try:
        path = blobs.path(sha)
        with Image.open(path) as img:
            if img.format != "PNG":
                return None
            info = dict(getattr(img, "text", {}) or {})
    except (BlobNotFound, OSError, ValueError):
        return None
    for key, value in info.items():
        if "likeness" in key.lower() or "provenance" in key.lower():
            try:
                data = json.loads(value)
            except ValueError:
                continue
            if isinstance(data, dict):
                return data
    if "parameters" in info:
        return {"parameters": info["parameters"]}
    return None


def summary(prov: dict[str, Any] | None) -> dict[str, str]:
    """The few provenance fields a reviewer looks at, as display strings."""
    if not prov:
        return {}
    out: dict[str, str] = {}
    recipe = prov.get("recipe") if isinstance(prov.get("recipe"), dict) else {}
    model = prov.get("model")
    if isinstance(model, dict):
        out["model"] = str(model.get("name") or model.get("path") or "")
    elif model:
        out["model"] = str(model)
    loras = prov.get("loras")
    if isinstance(loras, list) and loras:
        out["loras"] = ", ".join(
            f"{item.get('name', '?')}@{item.get('strength', '?')}"
            for item in loras
            if isinstance(item, dict)
        )
    for key in ("seed", "run", "recipe_hash", "prompt", "negative", "parameters"):
        if prov.get(key) not in (None, ""):
            out[key] = str(prov[key])
    for key in ("sampler", "scheduler", "steps", "cfg", "cfg_scale", "guidance"):
        if recipe.get(key) not in (None, ""):
            out[key] = str(recipe[key])
    engine = prov.get("engine")
    if isinstance(engine, dict) and engine.get("name"):
        out["engine"] = f"{engine.get('name')} {engine.get('version', '')}".strip()
    return {k: v for k, v in out.items() if v}
