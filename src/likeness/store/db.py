"""Open the workspace database: SQLite in WAL mode, schema brought forward by numbered migrations.

Migrations are the files `migrations/NNNN_name.sql`, applied in number order, each in its own
transaction together with `PRAGMA user_version = NNNN`, so a crash mid-migration leaves the
previous schema intact.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path

_MIGRATION_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")


class SchemaTooNew(RuntimeError):
    """The database was written by a newer Likeness than the one running."""


def utc_now() -> str:
    """A sortable UTC timestamp, the one format stored in every table."""
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def connect(path: Path | str, *, migrate: bool = True) -> sqlite3.Connection:
    """Open (and if needed create) a database with the project's connection settings.

    Autocommit mode: every write goes through `transaction()`, so what is committed is explicit.
    """
    conn = sqlite3.connect(str(path), timeout=30.0, isolation_level=None, check_same_thread=False)
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA busy_timeout = 30000")
    if str(path) != ":memory:":
        conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = NORMAL")
    conn.execute("PRAGMA foreign_keys = ON")
    if migrate:
        apply_migrations(conn)
    return conn


@contextmanager
def transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """`BEGIN IMMEDIATE` ... `COMMIT`, rolled back on any exception.

    IMMEDIATE takes the write lock up front, so two writers queue on busy_timeout instead of
    failing half-way with SQLITE_BUSY on lock upgrade.
    """
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def migrations() -> list[tuple[int, str, str]]:
    """(number, file name, SQL) of every shipped migration, in order."""
    found = []
    for entry in resources.files("likeness.store.migrations").iterdir():
        match = _MIGRATION_NAME.match(entry.name)
        if match:
            found.append((int(match.group(1)), entry.name, entry.read_text(encoding="utf-8")))
    found.sort()
    numbers = [n for n, _, _ in found]
    if len(set(numbers)) != len(numbers):
        raise RuntimeError(f"two migrations share a number: {[name for _, name, _ in found]}")
    return found


def schema_version(conn: sqlite3.Connection) -> int:
    return conn.execute("PRAGMA user_version").fetchone()[0]


def apply_migrations(
    conn: sqlite3.Connection, known: list[tuple[int, str, str]] | None = None
) -> list[str]:
    """Apply every shipped migration this database has not had; return their names.

    Applied numbers are recorded in `schema_migrations`, so a migration numbered below one
    already applied (two features landing in either order) is still applied.
    """
    known = migrations() if known is None else known
    conn.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations "
        "(number INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL)"
    )
    current = schema_version(conn)
    numbers = {n for n, _, _ in known}
    done = {r[0] for r in conn.execute("SELECT number FROM schema_migrations")}
    if not done and current:  # written before applied numbers were recorded
        done = {n for n in numbers if n <= current}
    newer = sorted(done - numbers) or ([current] if current > max(numbers, default=0) else [])
    if newer:
        raise SchemaTooNew(
            f"database schema {newer[-1]} is newer than this Likeness knows "
            f"({max(numbers, default=0)}): upgrade likeness"
        )
    applied = []
    for number, name, sql in known:
        if number in done:
            continue
        version = max(number, current)
        conn.executescript(
            f"BEGIN IMMEDIATE;\n{sql}\n"
            f"INSERT OR REPLACE INTO schema_migrations VALUES ({number}, '{name}', '{utc_now()}');\n"
            f"PRAGMA user_version = {version};\nCOMMIT;"
        )
        current = version
        applied.append(name)
    return applied


def integrity_check(conn: sqlite3.Connection) -> str:
    return conn.execute("PRAGMA integrity_check").fetchone()[0]
