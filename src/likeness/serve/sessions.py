"""Browser sessions: a random cookie value whose sha256 is the row's key, a CSRF token the
pages send back in a header, an expiry, and revocation (sign-out, a disabled account or a
new token end every session of the user at once).

Example::

    cookie, session = create_session(conn, user.id, hours=12)
    lookup_session(conn, cookie)   # -> Session (user, csrf), or None when ended
"""

from __future__ import annotations

import hashlib
import secrets
import sqlite3
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from likeness.store.db import transaction, utc_now


@dataclass(frozen=True)
class Session:
    id_sha256: str
    user_id: int
    user_name: str
    csrf: str
    expires_at: str


def _digest(value: str) -> str:
    return hashlib.sha256(value.encode("utf-8")).hexdigest()


def create_session(
    conn: sqlite3.Connection, user_id: int, *, hours: float, client: str | None = None
) -> tuple[str, Session]:
    """A new session for `user_id`: (the cookie value, the session)."""
    value = secrets.token_urlsafe(32)
    csrf = secrets.token_urlsafe(32)
    now = datetime.now(UTC)
    expires = (now + timedelta(hours=hours)).isoformat(timespec="milliseconds")
    with transaction(conn):
        conn.execute(
            "INSERT INTO sessions (id_sha256, user_id, csrf, created_at, expires_at, client) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (_digest(value), user_id, csrf, utc_now(), expires, client),
        )
        # Ended sessions of this user are of no more use: keep the table small.
        conn.execute(
            "DELETE FROM sessions WHERE user_id = ? AND (revoked_at IS NOT NULL OR expires_at < ?)",
            (user_id, utc_now()),
        )
    session = lookup_session(conn, value)
    assert session is not None
    return value, session


def lookup_session(conn: sqlite3.Connection, value: str | None) -> Session | None:
    """The live session whose cookie is `value`: not expired, not revoked, its account
    enabled. The lookup is by the sha256 of the value (an index hit, not a comparison that
    could leak timing about stored values)."""
    if not value or len(value) > 200:
        return None
    row = conn.execute(
        "SELECT s.id_sha256, s.user_id, u.name, s.csrf, s.expires_at FROM sessions s "
        "JOIN users u ON u.id = s.user_id "
        "WHERE s.id_sha256 = ? AND s.revoked_at IS NULL AND s.expires_at > ? AND u.disabled = 0",
        (_digest(value), utc_now()),
    ).fetchone()
    if row is None:
        return None
    return Session(row[0], row[1], row[2], row[3], row[4])


def revoke_session(conn: sqlite3.Connection, value: str | None) -> None:
    if not value:
        return
    with transaction(conn):
        conn.execute(
            "UPDATE sessions SET revoked_at = ? WHERE id_sha256 = ? AND revoked_at IS NULL",
            (utc_now(), _digest(value)),
        )


def live_sessions(conn: sqlite3.Connection, user_id: int) -> int:
    return conn.execute(
        "SELECT COUNT(*) FROM sessions WHERE user_id = ? AND revoked_at IS NULL AND expires_at > ?",
        (user_id, utc_now()),
    ).fetchone()[0]
