"""Accounts of the server: one per person, each with its own workspace folder.

A token is 32 random bytes (URL-safe base64), shown once when the account is made; the
database keeps only its sha256. A token of that entropy needs no slow hash (no dictionary
can reach it), and checking it costs one sha256 and a constant-time comparison.

Example::

    conn = open_server_db(root)
    user, token = add_user(conn, root, "ana", character="Mara")   # print token once
    verify_token(conn, "ana", token)                              # -> the User, or None
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import shutil
import sqlite3
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from likeness.store.db import transaction, utc_now
from likeness.workspace import Workspace

USERS_DIR = "users"
REMOVED_DIR = "removed"
_NAME = re.compile(r"^[a-z][a-z0-9_-]{1,31}$")
# Compared against when the name is unknown, so an unknown name costs what a known one does.
_NOBODY = hashlib.sha256(b"no such user").hexdigest()


class AccountError(ValueError):
    """No such account, a name taken or malformed, a quota that cannot be set."""


@dataclass(frozen=True)
class Quota:
    """A user's own limits; None means the server's [quota] default."""

    images: int | None = None
    train_runs: int | None = None
    disk_bytes: int | None = None
    queued_jobs: int | None = None


@dataclass(frozen=True)
class User:
    id: int
    name: str
    folder: str
    """The workspace folder, relative to the server root."""
    disabled: bool
    quota: Quota
    created_at: str
    token_set_at: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "folder": self.folder,
            "disabled": self.disabled,
            "quota": self.quota.__dict__,
            "created_at": self.created_at,
            "token_set_at": self.token_set_at,
        }


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def new_token() -> str:
    """32 random bytes, URL-safe (43 characters)."""
    return secrets.token_urlsafe(32)


def check_user_name(name: str) -> None:
    if not _NAME.match(name):
        raise AccountError(
            f"user name {name!r} must be 2-32 lowercase letters, digits, '_' or '-', "
            "starting with a letter (it names the user's folder)"
        )


def _user(row: sqlite3.Row) -> User:
    return User(
        id=row["id"],
        name=row["name"],
        folder=row["folder"],
        disabled=bool(row["disabled"]),
        quota=Quota(
            images=row["quota_images"],
            train_runs=row["quota_train_runs"],
            disk_bytes=row["quota_disk_bytes"],
            queued_jobs=row["quota_queued_jobs"],
        ),
        created_at=row["created_at"],
        token_set_at=row["token_set_at"],
    )


def add_user(
    conn: sqlite3.Connection,
    root: Path,
    name: str,
    *,
    character: str | None = None,
    class_word: str = "person",
) -> tuple[User, str]:
    """Make an account and its workspace (`users/NAME`); returns the user and its token,
    which is shown now and never again."""
    check_user_name(name)
    if get_user(conn, name) is not None:
        raise AccountError(f"user {name!r} exists; pick another name or `user token {name}`")
    folder = Path(USERS_DIR) / name
    target = Path(root) / folder
    if target.exists() and any(target.iterdir()):
        raise AccountError(
            f"{target} exists and is not empty; move it away before making user {name!r}"
        )
    Workspace.create(target, name=character or name, class_word=class_word).close()
    token = new_token()
    now = utc_now()
    with transaction(conn):
        conn.execute(
            "INSERT INTO users (name, token_sha256, folder, created_at, token_set_at) "
            "VALUES (?, ?, ?, ?, ?)",
            (name, token_digest(token), folder.as_posix(), now, now),
        )
    user = get_user(conn, name)
    assert user is not None
    return user, token


def get_user(conn: sqlite3.Connection, name: str) -> User | None:
    row = conn.execute("SELECT * FROM users WHERE name = ?", (name,)).fetchone()
    return _user(row) if row else None


def get_user_by_id(conn: sqlite3.Connection, user_id: int) -> User | None:
    row = conn.execute("SELECT * FROM users WHERE id = ?", (user_id,)).fetchone()
    return _user(row) if row else None


def require_user(conn: sqlite3.Connection, name: str) -> User:
    user = get_user(conn, name)
    if user is None:
        known = ", ".join(u.name for u in list_users(conn)) or "none yet"
        raise AccountError(f"no user {name!r} (users: {known}); `likeness serve user add`")
    return user


def list_users(conn: sqlite3.Connection) -> list[User]:
    return [_user(r) for r in conn.execute("SELECT * FROM users ORDER BY name")]


def verify_token(conn: sqlite3.Connection, name: str, token: str) -> User | None:
    """The user when `token` is theirs and the account is enabled, else None. The digest is
    compared in constant time, and an unknown name is compared too."""
    row = conn.execute(
        "SELECT * FROM users WHERE name = ?", (name if _NAME.match(name or "") else "",)
    ).fetchone()
    expected = row["token_sha256"] if row else _NOBODY
    matches = hmac.compare_digest(token_digest(token or ""), expected)
    if row is None or not matches or row["disabled"]:
        return None
    return _user(row)


def set_token(conn: sqlite3.Connection, name: str) -> str:
    """A new token for `name` (the old one stops working, and so do its sessions)."""
    user = require_user(conn, name)
    token = new_token()
    with transaction(conn):
        conn.execute(
            "UPDATE users SET token_sha256 = ?, token_set_at = ? WHERE id = ?",
            (token_digest(token), utc_now(), user.id),
        )
        _revoke_all(conn, user.id)
    return token


def set_disabled(conn: sqlite3.Connection, name: str, disabled: bool) -> User:
    """Disable (every session ends at once) or enable an account; its data stays."""
    user = require_user(conn, name)
    with transaction(conn):
        conn.execute("UPDATE users SET disabled = ? WHERE id = ?", (int(disabled), user.id))
        if disabled:
            _revoke_all(conn, user.id)
            conn.execute(
                "UPDATE queue SET state = 'cancelled', finished_at = ?, message = "
                "'account disabled' WHERE user_id = ? AND state = 'queued'",
                (utc_now(), user.id),
            )
    return require_user(conn, name)


def remove_user(conn: sqlite3.Connection, root: Path, name: str) -> Path | None:
    """Delete the account (sessions and queued work go with it) and move its folder to
    `removed/NAME-<time>`, so a new account of the same name starts empty. Returns where the
    folder went (None when it was already gone)."""
    user = require_user(conn, name)
    if conn.execute(
        "SELECT 1 FROM queue WHERE user_id = ? AND state = 'running'", (user.id,)
    ).fetchone():
        raise AccountError(f"user {name!r} has a job running; disable the account, then retry")
    with transaction(conn):
        conn.execute("DELETE FROM users WHERE id = ?", (user.id,))
    source = Path(root) / user.folder
    if not source.exists():
        return None
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    target = Path(root) / REMOVED_DIR / f"{name}-{stamp}"
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(str(source), str(target))
    return target


def set_quota(conn: sqlite3.Connection, name: str, **limits: int | None) -> User:
    """Set some of a user's own limits (`images`, `train_runs`, `disk_bytes`, `queued_jobs`);
    a negative value clears one back to the server default."""
    user = require_user(conn, name)
    columns = {f"quota_{k}": v for k, v in limits.items() if v is not None}
    unknown = sorted(set(limits) - set(Quota.__dataclass_fields__))
    if unknown:
        raise AccountError(f"quota: unknown limit {unknown[0]!r}")
    if columns:
        sets = ", ".join(f"{c} = ?" for c in columns)
        values = [None if v < 0 else v for v in columns.values()]
        with transaction(conn):
            conn.execute(f"UPDATE users SET {sets} WHERE id = ?", (*values, user.id))
    return require_user(conn, name)


def _revoke_all(conn: sqlite3.Connection, user_id: int) -> None:
    conn.execute(
        "UPDATE sessions SET revoked_at = ? WHERE user_id = ? AND revoked_at IS NULL",
        (utc_now(), user_id),
    )
