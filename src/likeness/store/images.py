"""Rows of the `images` table: what was stored, from where, and whether it is excluded."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from typing import Literal

Origin = Literal["source", "enriched", "synthetic"]
ORIGINS: tuple[Origin, ...] = ("source", "enriched", "synthetic")


@dataclass(frozen=True)
class ImageRecord:
    sha256: str
    origin: Origin
    original_name: str
    source_path: str | None
    size_bytes: int
    format: str
    width: int
    height: int
    mode: str
    captured_at: str | None
    ingested_at: str
    phash: str
    dhash: str
    sharpness: float
    excluded: bool = False
    excluded_reason: str | None = None
    duplicate_of: str | None = None

    @property
    def pixels(self) -> int:
        return self.width * self.height


_COLUMNS = [
    "sha256",
    "origin",
    "original_name",
    "source_path",
    "size_bytes",
    "format",
    "width",
    "height",
    "mode",
    "captured_at",
    "ingested_at",
    "phash",
    "dhash",
    "sharpness",
    "excluded",
    "excluded_reason",
    "duplicate_of",
]


def _record(row: sqlite3.Row) -> ImageRecord:
    values = dict(row)
    values["excluded"] = bool(values["excluded"])
    return ImageRecord(**values)


def insert_image(conn: sqlite3.Connection, record: ImageRecord) -> bool:
    """Insert unless the content is already stored; True when a row was added."""
    placeholders = ", ".join("?" for _ in _COLUMNS)
    values = [getattr(record, c) for c in _COLUMNS]
    values[_COLUMNS.index("excluded")] = int(record.excluded)
    cur = conn.execute(
        f"INSERT OR IGNORE INTO images ({', '.join(_COLUMNS)}) VALUES ({placeholders})", values
    )
    return cur.rowcount == 1


def record_path(conn: sqlite3.Connection, sha256: str, path: str, seen_at: str) -> None:
    conn.execute(
        "INSERT OR IGNORE INTO image_paths (sha256, path, seen_at) VALUES (?, ?, ?)",
        (sha256, path, seen_at),
    )


def get_image(conn: sqlite3.Connection, sha256: str) -> ImageRecord | None:
    row = conn.execute("SELECT * FROM images WHERE sha256 = ?", (sha256,)).fetchone()
    return _record(row) if row else None


def find_by_prefix(conn: sqlite3.Connection, prefix: str) -> list[ImageRecord]:
    rows = conn.execute(
        "SELECT * FROM images WHERE sha256 LIKE ? ORDER BY sha256", (prefix.lower() + "%",)
    ).fetchall()
    return [_record(r) for r in rows]


def list_images(
    conn: sqlite3.Connection,
    *,
    origins: list[str] | None = None,
    include_excluded: bool = False,
) -> list[ImageRecord]:
    """Images in ingest order, optionally only some origins; excluded ones left out by default."""
    sql = "SELECT * FROM images WHERE 1 = 1"
    params: list[object] = []
    if origins:
        sql += f" AND origin IN ({', '.join('?' for _ in origins)})"
        params += origins
    if not include_excluded:
        sql += " AND excluded = 0"
    sql += " ORDER BY ingested_at, sha256"
    return [_record(r) for r in conn.execute(sql, params).fetchall()]


def set_excluded(
    conn: sqlite3.Connection, sha256: str, reason: str, duplicate_of: str | None = None
) -> None:
    conn.execute(
        "UPDATE images SET excluded = 1, excluded_reason = ?, duplicate_of = ? WHERE sha256 = ?",
        (reason, duplicate_of, sha256),
    )


def clear_excluded(conn: sqlite3.Connection, sha256: str) -> None:
    conn.execute(
        "UPDATE images SET excluded = 0, excluded_reason = NULL, duplicate_of = NULL "
        "WHERE sha256 = ?",
        (sha256,),
    )


def count_images(conn: sqlite3.Connection) -> int:
    return conn.execute("SELECT COUNT(*) FROM images").fetchone()[0]
