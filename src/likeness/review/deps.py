"""What the review routes share: the per-request database connection, the app-wide state,
and the small helpers that turn query parameters into a queue.

Routes get the connection from the `get_db` yield dependency (one connection per request,
closed afterwards; tests may override it with `app.dependency_overrides[get_db]`).
"""

from __future__ import annotations

import getpass
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import Depends, HTTPException, Request
from fastapi.templating import Jinja2Templates

from likeness.config import Settings
from likeness.review import provenance as prov
from likeness.review.metrics import MetricsIndex
from likeness.review.queue import Queue, QueueError, QueueFilter, build_queue
from likeness.review.thumbs import ThumbnailCache
from likeness.store.blobs import BlobStore
from likeness.store.db import connect

PAGE_SIZE = 200
MAX_PAGE_SIZE = 1000


@dataclass
class ReviewState:
    """What every request shares: paths, settings, templates and the caches (no connection)."""

    root: Path
    db_path: Path
    settings: Settings
    blobs: BlobStore
    thumbs: ThumbnailCache
    metrics: MetricsIndex
    reviewer: str
    static: dict[str, tuple[bytes, str]]
    templates: Jinja2Templates
    reviewer_locked: bool = False
    """True when `reviewer` is the signed-in account (likeness serve): decisions are stored
    under it whatever name the page sends."""

    def reviewer_for(self, given: str | None) -> str:
        """The name a decision is stored under."""
        return self.reviewer if self.reviewer_locked else (given or self.reviewer)


def get_db(request: Request) -> Iterator[sqlite3.Connection]:
    """One connection per request, closed when the response is done."""
    state: ReviewState = request.app.state.review
    conn = connect(state.db_path, migrate=False)
    try:
        yield conn
    finally:
        conn.close()


async def get_state(request: Request) -> ReviewState:
    return request.app.state.review


def get_filter(
    origin: str | None = None,
    run: str | None = None,
    dataset: str | None = None,
    state: str | None = None,
    flag: str | None = None,
    sort: str = "match",
    order: str | None = None,
) -> QueueFilter:
    """The queue filter from query parameters (empty values mean "all")."""
    return QueueFilter(
        origin=origin or None,
        run=run or None,
        dataset=dataset or None,
        state=state or None,  # type: ignore[arg-type]
        flag=flag or None,
        sort=sort or "match",
        order=order or None,  # type: ignore[arg-type]
    )


Db = Annotated[sqlite3.Connection, Depends(get_db)]
State = Annotated[ReviewState, Depends(get_state)]
Filter = Annotated[QueueFilter, Depends(get_filter)]


def load_queue(db: sqlite3.Connection, st: ReviewState, flt: QueueFilter) -> Queue:
    """The queue for a filter, with the metrics index brought up to date first."""
    st.metrics.refresh(db)
    runs = prov.runs(db, prov.find_table(db))
    try:
        return build_queue(db, st.metrics, runs, flt)
    except QueueError as exc:
        raise HTTPException(400, str(exc)) from exc


def default_reviewer() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "reviewer"


def query_string(params: dict[str, Any]) -> str:
    clean = {k: v for k, v in params.items() if v not in (None, "")}
    return ("?" + urlencode(clean)) if clean else ""
