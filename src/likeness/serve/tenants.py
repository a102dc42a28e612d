"""A tenant: one signed-in user and the only workspace their requests can reach.

Every request resolves its tenant before anything else (see `auth.require_tenant`); routes
then look ids up in `tenant`'s database, blob store and folders only. The registry builds a
tenant once per user (opening the workspace brings its schema forward) and keeps what is
costly to rebuild: the review state with its metrics index and thumbnail cache.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from fastapi.templating import Jinja2Templates

from likeness.config import Settings
from likeness.review.deps import ReviewState
from likeness.review.metrics import MetricsIndex
from likeness.review.thumbs import ThumbnailCache
from likeness.serve.accounts import User
from likeness.serve.settings import QuotaSection
from likeness.store.blobs import BlobStore
from likeness.store.db import connect
from likeness.workspace import DB_FILE, Workspace

THUMB_CACHE_DIR = Path("cache") / "thumbs"
MODELS_DIR = "models"
"""A user's own model files (LoRAs trained or uploaded) inside their workspace."""
_USAGE_TTL_SECONDS = 5.0
MAX_IDLE_CONNECTIONS = 8
"""Idle connections kept per user (more are closed when given back)."""


@dataclass(frozen=True)
class Limits:
    """A user's effective quotas (0: no limit)."""

    images: int
    train_runs: int
    disk_bytes: int
    queued_jobs: int
    upload_files: int


@dataclass
class Tenant:
    """One user's side of the server: their workspace and what is cached for it."""

    user_id: int
    name: str
    root: Path
    settings: Settings
    blobs: BlobStore
    review: ReviewState
    limits: Limits
    _disk: tuple[float, int] = field(default=(0.0, -1), repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _idle: list[sqlite3.Connection] = field(default_factory=list, repr=False)
    _closed: bool = field(default=False, repr=False)

    @property
    def db_path(self) -> Path:
        return self.root / DB_FILE

    @property
    def models_dir(self) -> Path:
        return self.root / MODELS_DIR

    def connect(self) -> sqlite3.Connection:
        """A new connection to this user's database (the caller closes it)."""
        return connect(self.db_path, migrate=False)

    @contextmanager
    def lease(self) -> Iterator[sqlite3.Connection]:
        """A connection to the user's database for one request, alone: taken from the idle
        ones (opening one costs more than most requests) and given back after. A request's
        dependencies and route may run on different threads, so a connection belongs to a
        request, not to a thread."""
        with self._lock:
            conn = self._idle.pop() if self._idle else None
        if conn is None:
            conn = connect(self.db_path, migrate=False)
        try:
            yield conn
        finally:
            if conn.in_transaction:  # a request that failed inside a transaction
                conn.rollback()
            with self._lock:
                keep = not self._closed and len(self._idle) < MAX_IDLE_CONNECTIONS
                if keep:
                    self._idle.append(conn)
            if not keep:
                conn.close()

    def close(self) -> None:
        """Close the idle connections; those in use close when given back."""
        with self._lock:
            idle, self._idle = self._idle, []
            self._closed = True
        for conn in idle:
            conn.close()

    def workspace(self, conn: sqlite3.Connection) -> Workspace:
        """The workspace object over an open connection (closing it is the caller's)."""
        return Workspace(root=self.root, settings=self.settings, db=conn, blobs=self.blobs)

    def disk_bytes(self) -> int:
        """Bytes in the user's folder (measured at most every few seconds)."""
        with self._lock:
            at, size = self._disk
            if size >= 0 and time.monotonic() - at < _USAGE_TTL_SECONDS:
                return size
        size = folder_bytes(self.root)
        with self._lock:
            self._disk = (time.monotonic(), size)
        return size

    def forget_disk_usage(self) -> None:
        with self._lock:
            self._disk = (0.0, -1)


def folder_bytes(root: Path) -> int:
    """Apparent size of every file under `root` (symlinks are not followed)."""
    total = 0
    stack = [str(root)]
    while stack:
        try:
            with os.scandir(stack.pop()) as entries:
                for entry in entries:
                    if entry.is_dir(follow_symlinks=False):
                        stack.append(entry.path)
                    elif entry.is_file(follow_symlinks=False):
                        total += entry.stat(follow_symlinks=False).st_size
        except OSError:
            continue
    return total


def effective_limits(user: User, defaults: QuotaSection) -> Limits:
    q = user.quota
    return Limits(
        images=defaults.images if q.images is None else q.images,
        train_runs=defaults.train_runs if q.train_runs is None else q.train_runs,
        disk_bytes=defaults.disk_bytes if q.disk_bytes is None else q.disk_bytes,
        queued_jobs=defaults.queued_jobs if q.queued_jobs is None else q.queued_jobs,
        upload_files=defaults.upload_files,
    )


class TenantRegistry:
    """Tenants by user id, built on first use; `forget(user_id)` after an account changes."""

    def __init__(
        self,
        server_root: Path,
        quota_defaults: QuotaSection,
        templates: Jinja2Templates,
        static: dict[str, tuple[bytes, str]],
    ) -> None:
        self.server_root = Path(server_root).resolve()
        self.quota_defaults = quota_defaults
        self.templates = templates
        self.static = static
        self._tenants: dict[int, tuple[str, Tenant]] = {}
        self._lock = threading.Lock()

    def get(self, user: User) -> Tenant:
        """The tenant of `user` (its quota as stored now)."""
        key = f"{user.folder}|{user.quota}"
        with self._lock:
            found = self._tenants.get(user.id)
            if found is not None and found[0] == key:
                return found[1]
        tenant = self._build(user)
        with self._lock:
            old = self._tenants.get(user.id)
            self._tenants[user.id] = (key, tenant)
        if old is not None:
            old[1].close()  # the quota changed: requests now go through the new tenant
        return tenant

    def forget(self, user_id: int) -> None:
        with self._lock:
            found = self._tenants.pop(user_id, None)
        if found is not None:
            found[1].close()

    def close(self) -> None:
        with self._lock:
            tenants, self._tenants = list(self._tenants.values()), {}
        for _key, tenant in tenants:
            tenant.close()

    def _build(self, user: User) -> Tenant:
        root = (self.server_root / user.folder).resolve()
        if not root.is_relative_to(self.server_root):
            raise RuntimeError(f"user {user.name!r}: folder {user.folder!r} is outside the server")
        # Opening the workspace validates it and brings its schema forward (audit included).
        with Workspace.open(root) as ws:
            settings, blobs = ws.settings, ws.blobs
        review = ReviewState(
            root=root,
            db_path=root / DB_FILE,
            settings=settings,
            blobs=blobs,
            thumbs=ThumbnailCache(
                root / THUMB_CACHE_DIR, blobs, max_pixels=settings.ingest.max_pixels
            ),
            metrics=MetricsIndex(
                settings.identity.distance_threshold, settings.identity.pass_match
            ),
            reviewer=user.name,
            static=self.static,
            templates=self.templates,
            reviewer_locked=True,
        )
        return Tenant(
            user_id=user.id,
            name=user.name,
            root=root,
            settings=settings,
            blobs=blobs,
            review=review,
            limits=effective_limits(user, self.quota_defaults),
        )
