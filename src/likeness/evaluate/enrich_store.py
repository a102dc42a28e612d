"""Rows of the `enrich_edits` table (migration 0008): every edit enrichment asked for.

Plain functions over a `sqlite3.Connection`. :func:`put_edit` has no transaction of its own:
a kept edit's row is written inside the ingest transaction of its image, so the image and its
provenance are stored together or not at all.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from likeness.store.db import utc_now

VERDICTS = ("kept", "rejected", "failed")


@dataclass(frozen=True)
class EditRow:
    key: str
    job_id: int | None
    source_sha: str
    angle: str | None
    expression: str | None
    instruction: str
    engine: str
    model: str
    seed: int | None
    verdict: str
    reasons: tuple[str, ...]
    result_sha: str | None
    """The edit's bytes in the blob store (kept or not); None when the engine failed."""
    image_sha: str | None
    """The stored image (origin enriched) of a kept edit."""
    score: dict[str, Any] | None
    provenance: dict[str, Any]
    created_at: str = ""

    @property
    def final(self) -> bool:
        """Kept or rejected: the edit is never made again. A failed one is retried."""
        return self.verdict in ("kept", "rejected")


def _row(row: sqlite3.Row) -> EditRow:
    return EditRow(
        key=row["edit_key"],
        job_id=row["job_id"],
        source_sha=row["source_sha"],
        angle=row["angle"],
        expression=row["expression"],
        instruction=row["instruction"],
        engine=row["engine"],
        model=row["model"],
        seed=int(row["seed"]) if row["seed"] is not None else None,
        verdict=row["verdict"],
        reasons=tuple(json.loads(row["reasons"])),
        result_sha=row["result_sha"],
        image_sha=row["image_sha"],
        score=json.loads(row["score"]) if row["score"] else None,
        provenance=json.loads(row["provenance"]),
        created_at=row["created_at"],
    )


def get_edits(conn: sqlite3.Connection, keys: Sequence[str]) -> dict[str, EditRow]:
    found: dict[str, EditRow] = {}
    for start in range(0, len(keys), 500):
        chunk = list(keys[start : start + 500])
        rows = conn.execute(
            f"SELECT * FROM enrich_edits WHERE edit_key IN ({', '.join('?' for _ in chunk)})",
            chunk,
        ).fetchall()
        found.update({r["edit_key"]: _row(r) for r in rows})
    return found


def put_edit(conn: sqlite3.Connection, row: EditRow) -> None:
    """Insert an edit's row, or replace a failed one (no transaction of its own). A kept or
    rejected row is final and stays as it is."""
    if row.verdict not in VERDICTS:
        raise ValueError(f"verdict: {row.verdict!r} is not one of {', '.join(VERDICTS)}")
    conn.execute(
        "INSERT INTO enrich_edits (edit_key, job_id, source_sha, angle, expression, instruction, "
        "engine, model, seed, verdict, reasons, result_sha, image_sha, score, provenance, "
        "created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
        "ON CONFLICT(edit_key) DO UPDATE SET job_id = excluded.job_id, seed = excluded.seed, "
        "verdict = excluded.verdict, reasons = excluded.reasons, "
        "result_sha = excluded.result_sha, image_sha = excluded.image_sha, "
        "score = excluded.score, provenance = excluded.provenance, "
        "created_at = excluded.created_at WHERE enrich_edits.verdict = 'failed'",
        (
            row.key,
            row.job_id,
            row.source_sha,
            row.angle,
            row.expression,
            row.instruction,
            row.engine,
            row.model,
            None if row.seed is None else str(row.seed),
            row.verdict,
            json.dumps(list(row.reasons)),
            row.result_sha,
            row.image_sha,
            json.dumps(row.score, sort_keys=True) if row.score is not None else None,
            json.dumps(row.provenance, sort_keys=True, default=str),
            utc_now(),
        ),
    )


def kept_from_sources(conn: sqlite3.Connection, sources: Sequence[str]) -> list[str]:
    """Stored images (not excluded) kept from edits of ``sources``, oldest first."""
    found: list[str] = []
    for start in range(0, len(sources), 500):
        chunk = list(sources[start : start + 500])
        rows = conn.execute(
            "SELECT e.image_sha FROM enrich_edits e JOIN images i ON i.sha256 = e.image_sha "
            f"WHERE e.verdict = 'kept' AND i.excluded = 0 AND e.source_sha IN "
            f"({', '.join('?' for _ in chunk)}) ORDER BY e.created_at, e.edit_key",
            chunk,
        ).fetchall()
        found += [r[0] for r in rows]
    return found


def edits_making(conn: sqlite3.Connection, image_shas: Sequence[str]) -> dict[str, EditRow]:
    """image sha -> the kept edit that made it, for the images among ``image_shas`` that
    enrichment made."""
    found: dict[str, EditRow] = {}
    for start in range(0, len(image_shas), 500):
        chunk = list(image_shas[start : start + 500])
        rows = conn.execute(
            "SELECT * FROM enrich_edits WHERE verdict = 'kept' AND image_sha IN "
            f"({', '.join('?' for _ in chunk)})",
            chunk,
        ).fetchall()
        found.update({r["image_sha"]: _row(r) for r in rows})
    return found
