"""The server database, `<root>/server.db`: SQLite in WAL mode like every workspace database,
with its own numbered migrations (`likeness/serve/migrations`).

The web process keeps one connection per thread (`ServerDb.conn()`); workers and commands
open their own.
"""

from __future__ import annotations

import re
import sqlite3
import threading
from importlib import resources
from pathlib import Path

from likeness.store.db import apply_migrations, connect

SERVER_DB = "server.db"
_MIGRATION_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")


def server_migrations() -> list[tuple[int, str, str]]:
    """(number, file name, SQL) of the server schema's migrations, in order."""
    # Copied from likeness.store.db.migrations (another package's files).
    found = []
    for entry in resources.files("likeness.serve.migrations").iterdir():
        match = _MIGRATION_NAME.match(entry.name)
        if match:
            found.append((int(match.group(1)), entry.name, entry.read_text(encoding="utf-8")))
    found.sort()
    return found


def open_server_db(root: Path) -> sqlite3.Connection:
    """A connection to the server database at `root`, created and migrated when needed."""
    conn = connect(Path(root) / SERVER_DB, migrate=False)
    apply_migrations(conn, server_migrations())
    return conn


class ServerDb:
    """Per-thread connections to one server database (the web process serves requests on a
    thread pool; a SQLite connection is used by one thread at a time)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        open_server_db(self.root).close()  # create and migrate once, up front
        self._local = threading.local()
        self._all: list[sqlite3.Connection] = []
        self._lock = threading.Lock()

    def conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = connect(self.root / SERVER_DB, migrate=False)
            self._local.conn = conn
            with self._lock:
                self._all.append(conn)
        return conn

    def close(self) -> None:
        with self._lock:
            for conn in self._all:
                conn.close()
            self._all.clear()
        self._local = threading.local()
