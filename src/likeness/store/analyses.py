"""The analysis cache: results keyed by (image sha256, analyzer name, analyzer version).

Bumping an analyzer's version is how its old results stop being used; they are never rewritten.
"""

from __future__ import annotations

import json
import sqlite3
from typing import Any

from likeness.store.db import utc_now


def get_analysis(
    conn: sqlite3.Connection, image_sha: str, analyzer: str, version: str
) -> dict[str, Any] | None:
    row = conn.execute(
        "SELECT result FROM analyses WHERE image_sha = ? AND analyzer = ? AND version = ?",
        (image_sha, analyzer, version),
    ).fetchone()
    return _load(row[0]) if row else None


def get_analyses(
    conn: sqlite3.Connection, image_shas: list[str], analyzer: str, version: str
) -> dict[str, dict[str, Any]]:
    """Cached results for many images at once (sha -> result), skipping the uncached and the
    damaged ones."""
    found: dict[str, dict[str, Any]] = {}
    for start in range(0, len(image_shas), 500):
        chunk = image_shas[start : start + 500]
        rows = conn.execute(
            f"SELECT image_sha, result FROM analyses WHERE analyzer = ? AND version = ? "
            f"AND image_sha IN ({', '.join('?' for _ in chunk)})",
            (analyzer, version, *chunk),
        ).fetchall()
        for sha, text in rows:
            result = _load(text)
            if result is not None:
                found[sha] = result
    return found


def _load(text: str) -> dict[str, Any] | None:
    """A stored result, or None for a damaged row (it is then computed again and replaced)."""
    try:
        result = json.loads(text)
    except (TypeError, ValueError):
        return None
    return result if isinstance(result, dict) else None


def put_analysis(
    conn: sqlite3.Connection, image_sha: str, analyzer: str, version: str, result: dict[str, Any]
) -> None:
    conn.execute(
        "INSERT OR REPLACE INTO analyses (image_sha, analyzer, version, result, created_at) "
        "VALUES (?, ?, ?, ?, ?)",
        (image_sha, analyzer, version, json.dumps(result, sort_keys=True), utc_now()),
    )
