"""Quotas: what one user may store and start, checked before any work begins.

Images count what the workspace holds plus what queued jobs may still add; disk is the
user's folder; training runs count every run started (finished or not); queued jobs are those
waiting or running. A limit of 0 means none.

Example::

    check_images(tenant, ws_conn, server_conn, adding=8)   # raises QuotaExceeded
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from typing import Any

from likeness.serve.tenants import Tenant

IMAGE_KINDS = ("generate", "card")
_OPEN = ("queued", "running")


class QuotaExceeded(Exception):
    """A limit would be passed; the message says which, by how much, and what to do."""


@dataclass(frozen=True)
class Usage:
    images: int
    pending_images: int
    train_runs: int
    queued_jobs: int
    disk_bytes: int

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def usage(tenant: Tenant, ws_conn: sqlite3.Connection, server_conn: sqlite3.Connection) -> Usage:
    images = ws_conn.execute("SELECT COUNT(*) FROM images").fetchone()[0]
    kinds = ",".join("?" for _ in IMAGE_KINDS)
    pending = server_conn.execute(
        f"SELECT COALESCE(SUM(MAX(COALESCE(total, 0) - done, 0)), 0) FROM queue "
        f"WHERE user_id = ? AND kind IN ({kinds}) AND state IN ('queued', 'running')",
        (tenant.user_id, *IMAGE_KINDS),
    ).fetchone()[0]
    runs = server_conn.execute(
        "SELECT COUNT(*) FROM queue WHERE user_id = ? AND kind = 'train' "
        "AND state IN ('queued', 'running', 'done', 'failed')",
        (tenant.user_id,),
    ).fetchone()[0]
    queued = server_conn.execute(
        "SELECT COUNT(*) FROM queue WHERE user_id = ? AND state IN ('queued', 'running')",
        (tenant.user_id,),
    ).fetchone()[0]
    return Usage(images, int(pending), runs, queued, tenant.disk_bytes())


def check_images(
    tenant: Tenant,
    ws_conn: sqlite3.Connection,
    server_conn: sqlite3.Connection,
    adding: int,
) -> None:
    limit = tenant.limits.images
    if not limit:
        return
    now = usage(tenant, ws_conn, server_conn)
    held = now.images + now.pending_images
    if held + adding > limit:
        raise QuotaExceeded(
            f"quota: {adding} more images would pass your limit of {limit} (you hold "
            f"{now.images}, queued jobs may add {now.pending_images}); ask the admin to raise it"
        )


def check_disk(tenant: Tenant, adding_bytes: int = 0) -> None:
    limit = tenant.limits.disk_bytes
    if not limit:
        return
    used = tenant.disk_bytes()
    if used + adding_bytes > limit:
        raise QuotaExceeded(
            f"quota: disk use would reach {_mib(used + adding_bytes)} of your {_mib(limit)}; "
            "ask the admin to raise it"
        )


def check_train_runs(tenant: Tenant, server_conn: sqlite3.Connection) -> None:
    limit = tenant.limits.train_runs
    if not limit:
        return
    runs = server_conn.execute(
        "SELECT COUNT(*) FROM queue WHERE user_id = ? AND kind = 'train' "
        "AND state IN ('queued', 'running', 'done', 'failed')",
        (tenant.user_id,),
    ).fetchone()[0]
    if runs >= limit:
        raise QuotaExceeded(
            f"quota: you have started {runs} training runs, your limit is {limit}; "
            "ask the admin to raise it"
        )


def check_queued(tenant: Tenant, server_conn: sqlite3.Connection) -> None:
    limit = tenant.limits.queued_jobs
    if not limit:
        return
    open_jobs = server_conn.execute(
        "SELECT COUNT(*) FROM queue WHERE user_id = ? AND state IN ('queued', 'running')",
        (tenant.user_id,),
    ).fetchone()[0]
    if open_jobs >= limit:
        raise QuotaExceeded(
            f"quota: {open_jobs} of your jobs are queued or running (limit {limit}); wait for "
            "one to finish or cancel one"
        )


def _mib(n: int) -> str:
    return f"{n / 2**20:.1f} MiB"
