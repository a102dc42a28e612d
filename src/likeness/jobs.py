"""Persistent jobs: long work recorded in the database with its progress.

A job is identified by its kind and a key that the command derives from what it was asked to do
(for `add`, the inputs and origin; for a sweep, its spec). Starting a job whose kind and key match
an unfinished one resumes that record instead of making a new one, so `kill -9` followed by the
same command continues the same job. The work itself must be idempotent per item (content
addressing makes that natural); the job record only tells people and commands where things stand.

A job whose process died is seen as `stale`: its heartbeat stopped while its state says running.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from likeness.store.db import transaction, utc_now

HEARTBEAT_STALE_SECONDS = 60.0
_HEARTBEAT_EVERY_SECONDS = 2.0


@dataclass(frozen=True)
class JobInfo:
    """One row of `likeness jobs` (also its `--json` shape)."""

    id: int
    kind: str
    key: str
    state: str
    """running, done, failed, or stale (running but no heartbeat for a minute)."""
    total: int | None
    done: int
    message: str | None
    error: str | None
    params: dict[str, Any]
    started_at: str
    heartbeat_at: str
    finished_at: str | None
    attempts: int

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def job_key(*parts: Any) -> str:
    """A short stable key from what a command was asked to do."""
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


class Job:
    """A running job; update it as work advances. Writes are rate-limited heartbeats."""

    def __init__(self, conn: sqlite3.Connection, job_id: int, total: int | None, done: int):
        self.conn = conn
        self.id = job_id
        self.total = total
        self.done = done
        self.resumed = done > 0
        self._last_write = 0.0

    def set_total(self, total: int) -> None:
        self.total = total
        self._write(force=True)

    def advance(self, n: int = 1, message: str | None = None) -> None:
        self.done += n
        self._write(message=message)

    def set_progress(self, done: int, message: str | None = None) -> None:
        self.done = done
        self._write(message=message)

    def heartbeat(self, message: str | None = None) -> None:
        self._write(message=message)

    def finish(self, message: str | None = None) -> None:
        now = utc_now()
        with transaction(self.conn):
            self.conn.execute(
                "UPDATE jobs SET state = 'done', done = ?, total = ?, heartbeat_at = ?, "
                "finished_at = ?, message = COALESCE(?, message), error = NULL WHERE id = ?",
                (self.done, self.total, now, now, message, self.id),
            )

    def fail(self, error: str) -> None:
        now = utc_now()
        with transaction(self.conn):
            self.conn.execute(
                "UPDATE jobs SET state = 'failed', done = ?, heartbeat_at = ?, finished_at = ?, "
                "error = ? WHERE id = ?",
                (self.done, now, now, error, self.id),
            )

    def _write(self, message: str | None = None, force: bool = False) -> None:
        now = datetime.now(UTC).timestamp()
        if not force and now - self._last_write < _HEARTBEAT_EVERY_SECONDS:
            return
        self._last_write = now
        with transaction(self.conn):
            self.conn.execute(
                "UPDATE jobs SET done = ?, total = ?, heartbeat_at = ?, "
                "message = COALESCE(?, message) WHERE id = ?",
                (self.done, self.total, utc_now(), message, self.id),
            )


def start_job(
    conn: sqlite3.Connection,
    kind: str,
    key: str,
    total: int | None = None,
    params: dict[str, Any] | None = None,
) -> Job:
    """Start a job, or resume the unfinished one with the same kind and key."""
    now = utc_now()
    with transaction(conn):
        row = conn.execute(
            "SELECT id, done FROM jobs WHERE kind = ? AND key = ? AND state != 'done'",
            (kind, key),
        ).fetchone()
        if row:
            conn.execute(
                "UPDATE jobs SET state = 'running', error = NULL, finished_at = NULL, pid = ?, "
                "heartbeat_at = ?, total = COALESCE(?, total), attempts = attempts + 1 "
                "WHERE id = ?",
                (os.getpid(), now, total, row["id"]),
            )
            return Job(conn, row["id"], total, row["done"])
        cur = conn.execute(
            "INSERT INTO jobs (kind, key, state, params, total, done, pid, started_at, "
            "heartbeat_at) VALUES (?, ?, 'running', ?, ?, 0, ?, ?, ?)",
            (
                kind,
                key,
                json.dumps(params or {}, sort_keys=True, default=str),
                total,
                os.getpid(),
                now,
                now,
            ),
        )
        return Job(conn, cur.lastrowid, total, 0)


def _state(row: sqlite3.Row, now: datetime) -> str:
    if row["state"] != "running":
        return row["state"]
    beat = datetime.fromisoformat(row["heartbeat_at"])
    return "stale" if (now - beat).total_seconds() > HEARTBEAT_STALE_SECONDS else "running"


def list_jobs(
    conn: sqlite3.Connection, *, kind: str | None = None, limit: int = 50
) -> list[JobInfo]:
    """Newest first."""
    sql = "SELECT * FROM jobs"
    params: list[Any] = []
    if kind:
        sql += " WHERE kind = ?"
        params.append(kind)
    sql += " ORDER BY id DESC LIMIT ?"
    params.append(limit)
    now = datetime.now(UTC)
    return [_info(r, now) for r in conn.execute(sql, params).fetchall()]


def get_job(conn: sqlite3.Connection, job_id: int) -> JobInfo | None:
    """One job by id (None when there is none)."""
    row = conn.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
    return _info(row, datetime.now(UTC)) if row else None


def _info(r: sqlite3.Row, now: datetime) -> JobInfo:
    return JobInfo(
        id=r["id"],
        kind=r["kind"],
        key=r["key"],
        state=_state(r, now),
        total=r["total"],
        done=r["done"],
        message=r["message"],
        error=r["error"],
        params=json.loads(r["params"]),
        started_at=r["started_at"],
        heartbeat_at=r["heartbeat_at"],
        finished_at=r["finished_at"],
        attempts=r["attempts"],
    )
