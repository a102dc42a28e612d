"""The job queue: every user's long work, persisted in the server database.

A job is queued by a request (after its inputs, ids and quotas were checked), claimed by a
worker, and run by the runner of its kind (`likeness.serve.work`), which reports progress
into the row. The web process only reads rows, so pages answer while jobs run. A restart
puts rows left `running` back to `queued`; runners resume their work (generation cells,
model cards and training runs are resumable jobs of the workspace, see `likeness.jobs`).

Every read a request makes is scoped by user: `get_job(conn, user_id, job_id)` is None for
another user's job, exactly as for one that never existed.

Example::

    job = enqueue(conn, user.id, "generate", {"recipe": recipe.to_dict(), "n": 4}, total=4)
    get_job(conn, user.id, job.id).state    # queued, running, done, failed or cancelled
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from typing import Any

from likeness.store.db import transaction, utc_now

STATES = ("queued", "running", "done", "failed", "cancelled")
FINISHED = ("done", "failed", "cancelled")


@dataclass(frozen=True)
class QueuedJob:
    id: int
    user_id: int
    kind: str
    params: dict[str, Any]
    state: str
    done: int
    total: int | None
    message: str | None
    error: str | None
    result: dict[str, Any]
    cancel: bool
    attempts: int
    created_at: str
    started_at: str | None
    heartbeat_at: str | None
    finished_at: str | None

    @property
    def finished(self) -> bool:
        return self.state in FINISHED

    def to_dict(self, with_params: bool = True) -> dict[str, Any]:
        """The JSON shape of a job (the user id stays out: a page never needs it)."""
        data = {k: v for k, v in self.__dict__.items() if k != "user_id"}
        if not with_params:
            data.pop("params")
        return data


def _job(row: sqlite3.Row) -> QueuedJob:
    return QueuedJob(
        id=row["id"],
        user_id=row["user_id"],
        kind=row["kind"],
        params=json.loads(row["params"]),
        state=row["state"],
        done=row["done"],
        total=row["total"],
        message=row["message"],
        error=row["error"],
        result=json.loads(row["result"]),
        cancel=bool(row["cancel"]),
        attempts=row["attempts"],
        created_at=row["created_at"],
        started_at=row["started_at"],
        heartbeat_at=row["heartbeat_at"],
        finished_at=row["finished_at"],
    )


def enqueue(
    conn: sqlite3.Connection,
    user_id: int,
    kind: str,
    params: dict[str, Any],
    *,
    total: int | None = None,
) -> QueuedJob:
    with transaction(conn):
        cur = conn.execute(
            "INSERT INTO queue (user_id, kind, params, state, total, created_at) "
            "VALUES (?, ?, ?, 'queued', ?, ?)",
            (user_id, kind, json.dumps(params, sort_keys=True, default=str), total, utc_now()),
        )
    job = _get(conn, int(cur.lastrowid or 0))
    assert job is not None
    return job


def _get(conn: sqlite3.Connection, job_id: int) -> QueuedJob | None:
    row = conn.execute("SELECT * FROM queue WHERE id = ?", (job_id,)).fetchone()
    return _job(row) if row else None


def get_job(conn: sqlite3.Connection, user_id: int, job_id: int) -> QueuedJob | None:
    """The job when it is `user_id`'s; None otherwise (another user's or no such job)."""
    row = conn.execute(
        "SELECT * FROM queue WHERE id = ? AND user_id = ?", (job_id, user_id)
    ).fetchone()
    return _job(row) if row else None


def list_jobs(conn: sqlite3.Connection, user_id: int, limit: int = 50) -> list[QueuedJob]:
    """The user's jobs, newest first."""
    rows = conn.execute(
        "SELECT * FROM queue WHERE user_id = ? ORDER BY id DESC LIMIT ?", (user_id, limit)
    )
    return [_job(r) for r in rows]


def request_cancel(conn: sqlite3.Connection, user_id: int, job_id: int) -> QueuedJob | None:
    """Cancel a queued job at once; ask a running one to stop after its current item."""
    now = utc_now()
    with transaction(conn):
        conn.execute(
            "UPDATE queue SET state = 'cancelled', finished_at = ?, message = 'cancelled' "
            "WHERE id = ? AND user_id = ? AND state = 'queued'",
            (now, job_id, user_id),
        )
        conn.execute(
            "UPDATE queue SET cancel = 1 WHERE id = ? AND user_id = ? AND state = 'running'",
            (job_id, user_id),
        )
    return get_job(conn, user_id, job_id)


# -- the worker side ---------------------------------------------------------------------------
def requeue_interrupted(conn: sqlite3.Connection) -> int:
    """Put jobs left `running` by a stopped server back in the queue; how many."""
    with transaction(conn):
        cur = conn.execute(
            "UPDATE queue SET state = 'queued', worker = NULL, "
            "message = 'interrupted by a restart; resumes' WHERE state = 'running'"
        )
    return cur.rowcount


def requeue(conn: sqlite3.Connection, job_id: int) -> None:
    """Put one running job back in the queue (its worker is stopping)."""
    with transaction(conn):
        conn.execute(
            "UPDATE queue SET state = 'queued', worker = NULL, "
            "message = 'interrupted by a stop; resumes' WHERE id = ? AND state = 'running'",
            (job_id,),
        )


def claim_next(conn: sqlite3.Connection, worker: str) -> QueuedJob | None:
    """The next job to run, marked running for `worker`: the oldest queued job of a user who
    has nothing running (so one user's batch does not hold everyone up), else the oldest."""
    now = utc_now()
    with transaction(conn):
        row = conn.execute(
            "SELECT q.id FROM queue q WHERE q.state = 'queued' ORDER BY "
            "EXISTS (SELECT 1 FROM queue r WHERE r.user_id = q.user_id AND r.state = 'running'), "
            "q.id LIMIT 1"
        ).fetchone()
        if row is None:
            return None
        conn.execute(
            "UPDATE queue SET state = 'running', worker = ?, attempts = attempts + 1, "
            "started_at = COALESCE(started_at, ?), heartbeat_at = ? WHERE id = ?",
            (worker, now, now, row[0]),
        )
    return _get(conn, row[0])


def report(
    conn: sqlite3.Connection,
    job_id: int,
    *,
    done: int | None = None,
    total: int | None = None,
    message: str | None = None,
) -> bool:
    """Record progress; returns True when the user asked to cancel."""
    with transaction(conn):
        conn.execute(
            "UPDATE queue SET done = COALESCE(?, done), total = COALESCE(?, total), "
            "message = COALESCE(?, message), heartbeat_at = ? WHERE id = ?",
            (done, total, message, utc_now(), job_id),
        )
        row = conn.execute("SELECT cancel FROM queue WHERE id = ?", (job_id,)).fetchone()
    return bool(row and row[0])


def set_params(conn: sqlite3.Connection, job_id: int, params: dict[str, Any]) -> None:
    """Replace the params (a runner records choices made once, e.g. a random base seed)."""
    with transaction(conn):
        conn.execute(
            "UPDATE queue SET params = ? WHERE id = ?",
            (json.dumps(params, sort_keys=True, default=str), job_id),
        )


def finish(
    conn: sqlite3.Connection,
    job_id: int,
    state: str,
    *,
    result: dict[str, Any] | None = None,
    message: str | None = None,
    error: str | None = None,
) -> None:
    if state not in FINISHED:
        raise ValueError(f"state: {state!r} is not one of {', '.join(FINISHED)}")
    now = utc_now()
    with transaction(conn):
        conn.execute(
            "UPDATE queue SET state = ?, result = ?, message = COALESCE(?, message), error = ?, "
            "finished_at = ?, heartbeat_at = ? WHERE id = ?",
            (
                state,
                json.dumps(result or {}, sort_keys=True, default=str),
                message,
                error,
                now,
                now,
                job_id,
            ),
        )
