"""The audit trail of a workspace (table of migration 0010): who did what, when.

The server writes one row per change a signed-in person asks for (the route, the ids it
named, the status it answered) and one per step of the work it started. Rows are never
changed or deleted (the database refuses), and they live in the user's own workspace, so
the trail leaves with the folder.

Example::

    record(conn, actor="ana", action="POST /api/decide", target=sha, status=200,
           detail={"decision": "accepted"})
    [e.action for e in entries(conn, limit=20)]
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from likeness.store.db import transaction, utc_now


@dataclass(frozen=True)
class AuditEntry:
    id: int
    at: str
    actor: str
    action: str
    target: str | None
    status: int | None
    detail: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def record(
    conn: sqlite3.Connection,
    *,
    actor: str,
    action: str,
    target: str | None = None,
    status: int | None = None,
    detail: Mapping[str, Any] | None = None,
) -> int:
    """Append one entry; returns its id."""
    with transaction(conn):
        cur = conn.execute(
            "INSERT INTO audit (at, actor, action, target, status, detail) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (
                utc_now(),
                actor,
                action,
                target,
                status,
                json.dumps(dict(detail or {}), sort_keys=True, default=str),
            ),
        )
    return int(cur.lastrowid or 0)


def entries(
    conn: sqlite3.Connection, *, actor: str | None = None, limit: int = 100
) -> list[AuditEntry]:
    """Newest first."""
    sql = "SELECT * FROM audit"
    params: list[Any] = []
    if actor:
        sql += " WHERE actor = ?"
        params.append(actor)
    sql += " ORDER BY id DESC LIMIT ?"
    params.append(limit)
    return [
        AuditEntry(
            r["id"],
            r["at"],
            r["actor"],
            r["action"],
            r["target"],
            r["status"],
            json.loads(r["detail"]),
        )
        for r in conn.execute(sql, params)
    ]
