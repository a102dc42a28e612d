"""The review queue: which images, in which order, with their decisions and numbers.

The whole filtered list is built per request (5,000 rows take a few milliseconds) so that the
queue page, its counter and the focus view's previous/next all agree on one order.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field
from typing import Literal

from likeness.review.decisions import DECISIONS, Decision, stored_tags
from likeness.review.metrics import EMPTY, HIGHER_IS_BETTER, ImageMetrics, MetricsIndex
from likeness.store.datasets import DatasetError, resolve
from likeness.store.images import ORIGINS

Order = Literal["asc", "desc"]
BUILTIN_SORTS = ("ingested", "name")
NO_FLAGS = "none"
ANY_FLAG = "any"


class QueueError(ValueError):
    """A filter that cannot be applied; the message names the parameter."""


@dataclass(frozen=True)
class QueueFilter:
    origin: str | None = None
    run: str | None = None
    dataset: str | None = None
    """NAME (latest version) or NAME@vN: only images in that version."""
    state: Decision | None = None
    flag: str | None = None
    """A flag the image must carry, `any` (some flag) or `none` (no flag)."""
    sort: str = "match"
    order: Order | None = None
    """None: best first for the metric (descending for match, ascending for distance...)."""

    def direction(self) -> Order:
        if self.order:
            return self.order
        return "desc" if self.sort in HIGHER_IS_BETTER else "asc"

    def params(self) -> dict[str, str]:
        """Query parameters reproducing this filter (defaults left out)."""
        data = {
            "origin": self.origin,
            "run": self.run,
            "dataset": self.dataset,
            "state": self.state,
            "flag": self.flag,
            "sort": self.sort if self.sort != "match" else None,
            "order": self.order,
        }
        return {k: v for k, v in data.items() if v}

    def check(self) -> QueueFilter:
        if self.origin is not None and self.origin not in ORIGINS:
            raise QueueError(f"origin: {self.origin!r} is not one of {', '.join(ORIGINS)}")
        if self.state is not None and self.state not in DECISIONS:
            raise QueueError(f"state: {self.state!r} is not one of {', '.join(DECISIONS)}")
        if self.order is not None and self.order not in ("asc", "desc"):
            raise QueueError(f"order: {self.order!r} is not asc or desc")
        return self


@dataclass(frozen=True)
class QueueEntry:
    sha256: str
    origin: str
    original_name: str
    width: int
    height: int
    ingested_at: str
    decision: Decision
    revision: int
    tags: tuple[str, ...]
    note: str | None
    run: str | None = None
    metrics: ImageMetrics = field(default=EMPTY)


@dataclass(frozen=True)
class Tally:
    accepted: int
    rejected: int
    undecided: int

    @property
    def total(self) -> int:
        return self.accepted + self.rejected + self.undecided


@dataclass(frozen=True)
class Queue:
    entries: tuple[QueueEntry, ...]
    tally: Tally
    """Decisions over the images matching every filter except the decision state."""

    def index_of(self, sha: str) -> int | None:
        for i, entry in enumerate(self.entries):
            if entry.sha256 == sha:
                return i
        return None


def build_queue(
    conn: sqlite3.Connection,
    metrics: MetricsIndex,
    runs: dict[str, str],
    flt: QueueFilter,
) -> Queue:
    """The filtered, sorted queue. Raises QueueError for an unknown dataset.

    Example: build_queue(conn, index, {}, QueueFilter(state="undecided", sort="match"))
    """
    flt.check()
    # 1. Images (not set aside as duplicates) with their current decision.
    sql = (
        "SELECT i.sha256, i.origin, i.original_name, i.width, i.height, i.ingested_at, "
        "r.decision, r.revision, r.tags, r.note FROM images i "
        "LEFT JOIN reviews r ON r.image_sha = i.sha256 WHERE i.excluded = 0"
    )
    params: list[object] = []
    if flt.origin:
        sql += " AND i.origin = ?"
        params.append(flt.origin)
    if flt.dataset:
        try:
            version = resolve(conn, flt.dataset)
        except DatasetError as exc:
            raise QueueError(f"dataset: {exc}") from exc
        sql += " AND i.sha256 IN (SELECT image_sha FROM dataset_items WHERE version_id = ?)"
        params.append(version.id)
    rows = conn.execute(sql, params).fetchall()

    # 2. Filters on provenance and measurements.
    entries = []
    for row in rows:
        sha = row[0]
        run = runs.get(sha)
        if flt.run and run != flt.run:
            continue
        m = metrics.get(sha)
        if flt.flag == NO_FLAGS and m.flags:
            continue
        if flt.flag == ANY_FLAG and not m.flags:
            continue
        if flt.flag not in (None, NO_FLAGS, ANY_FLAG) and flt.flag not in m.flags:
            continue
        entries.append(
            QueueEntry(
                sha256=sha,
                origin=row[1],
                original_name=row[2],
                width=row[3],
                height=row[4],
                ingested_at=row[5],
                decision=row[6] or "undecided",
                revision=row[7] or 0,
                tags=stored_tags(row[8]),
                note=row[9],
                run=run,
                metrics=m,
            )
        )

    # 3. The counter covers every state; then keep the state asked for.
    tally = Tally(
        accepted=sum(e.decision == "accepted" for e in entries),
        rejected=sum(e.decision == "rejected" for e in entries),
        undecided=sum(e.decision == "undecided" for e in entries),
    )
    if flt.state:
        entries = [e for e in entries if e.decision == flt.state]

    # 4. Sort: images without the metric go last whatever the direction.
    return Queue(tuple(sort_entries(entries, flt)), tally)


def sort_entries(entries: list[QueueEntry], flt: QueueFilter) -> list[QueueEntry]:
    descending = flt.direction() == "desc"
    if flt.sort == "ingested":
        return sorted(entries, key=lambda e: (e.ingested_at, e.sha256), reverse=descending)
    if flt.sort == "name":
        return sorted(entries, key=lambda e: (e.original_name, e.sha256), reverse=descending)
    present = [e for e in entries if e.metrics.number(flt.sort) is not None]
    missing = [e for e in entries if e.metrics.number(flt.sort) is None]
    sign = -1.0 if descending else 1.0
    present.sort(key=lambda e: (sign * (e.metrics.number(flt.sort) or 0.0), e.ingested_at))
    missing.sort(key=lambda e: (e.ingested_at, e.sha256))
    return present + missing
