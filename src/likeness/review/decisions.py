"""Review decisions: the current one per image and the append-only history behind it.

Every call writes at once, in its own `BEGIN IMMEDIATE` transaction, so two tabs or two people
deciding at the same moment are serialised by SQLite and both decisions land in the history.
Each image carries a `revision` (1, 2, ... per decision); a caller that passes
`expected_revision` gets :class:`ReviewConflict` instead of overwriting a decision it has not
seen (undo uses this, so it never undoes somebody else's decision).
"""

from __future__ import annotations

import json
import re
import sqlite3
from dataclasses import dataclass
from typing import Any, Literal

from likeness.store.db import transaction, utc_now

Decision = Literal["accepted", "rejected", "undecided"]
DECISIONS: tuple[Decision, ...] = ("accepted", "rejected", "undecided")
SUGGESTED_TAGS: tuple[str, ...] = (
    "bad_hands",
    "wrong_angle",
    "wrong_identity",
    "wrong_expression",
    "plastic_skin",
    "grain",
    "blurry",
    "artifacts",
    "bad_body",
)
_TAG = re.compile(r"^[a-z0-9][a-z0-9_-]{0,39}$")
MAX_NOTE = 2000
MAX_TAGS = 20


class ReviewError(ValueError):
    """A decision that cannot be recorded as asked; the message names the field."""


class UnknownImage(ReviewError):
    pass


class ReviewConflict(ReviewError):
    """Someone decided on the image since the caller last looked; carries the current state."""

    def __init__(self, message: str, current: Review):
        super().__init__(message)
        self.current = current


@dataclass(frozen=True)
class Review:
    """The current decision on one image (revision 0 and `undecided` when never reviewed)."""

    image_sha: str
    decision: Decision
    revision: int
    reviewer: str | None
    note: str | None
    tags: tuple[str, ...]
    decided_at: str | None
    history_id: int | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "sha256": self.image_sha,
            "decision": self.decision,
            "revision": self.revision,
            "reviewer": self.reviewer,
            "note": self.note,
            "tags": list(self.tags),
            "decided_at": self.decided_at,
            "history_id": self.history_id,
        }


@dataclass(frozen=True)
class HistoryEntry:
    id: int
    image_sha: str
    revision: int
    action: Literal["decide", "undo"]
    decision: Decision
    previous: Decision | None
    previous_id: int | None
    undo_to: int | None
    reviewer: str
    note: str | None
    tags: tuple[str, ...]
    decided_at: str

    def to_dict(self) -> dict[str, Any]:
        data = dict(self.__dict__)
        data["tags"] = list(self.tags)
        return data


def check_tags(tags: list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """Tags as stored: lowercase identifiers, de-duplicated, in the order given."""
    if len(tags) > MAX_TAGS:
        raise ReviewError(f"tags: at most {MAX_TAGS} per decision, got {len(tags)}")
    seen: list[str] = []
    for tag in tags:
        if not isinstance(tag, str) or not _TAG.match(tag):
            raise ReviewError(
                f"tags: {tag!r} must be 1-40 lowercase letters, digits, '_' or '-' (e.g. bad_hands)"
            )
        if tag not in seen:
            seen.append(tag)
    return tuple(seen)


def stored_tags(text: str | None) -> tuple[str, ...]:
    """Tags as stored (a JSON list of strings). A damaged value reads as no tags, so one bad
    row never fails a whole page; the next decision on that image writes a clean list."""
    if not text:
        return ()
    try:
        value = json.loads(text)
    except ValueError:
        return ()
    if not isinstance(value, list):
        return ()
    return tuple(t for t in value if isinstance(t, str))


def _check(decision: str, reviewer: str, note: str | None) -> None:
    if decision not in DECISIONS:
        raise ReviewError(f"decision: {decision!r} is not one of {', '.join(DECISIONS)}")
    if not reviewer or len(reviewer) > 100:
        raise ReviewError("reviewer: give a name of 1-100 characters")
    if note is not None and len(note) > MAX_NOTE:
        raise ReviewError(f"note: at most {MAX_NOTE} characters, got {len(note)}")


def _review(row: sqlite3.Row | None, sha: str) -> Review:
    if row is None:
        return Review(sha, "undecided", 0, None, None, (), None, None)
    return Review(
        image_sha=row["image_sha"],
        decision=row["decision"],
        revision=row["revision"],
        reviewer=row["reviewer"],
        note=row["note"],
        tags=stored_tags(row["tags"]),
        decided_at=row["decided_at"],
        history_id=row["history_id"],
    )


def _entry(row: sqlite3.Row) -> HistoryEntry:
    values = dict(row)
    values["tags"] = stored_tags(values["tags"])
    return HistoryEntry(**values)


def get_review(conn: sqlite3.Connection, sha: str) -> Review:
    row = conn.execute("SELECT * FROM reviews WHERE image_sha = ?", (sha,)).fetchone()
    return _review(row, sha)


def get_reviews(conn: sqlite3.Connection, shas: list[str]) -> dict[str, Review]:
    """Current reviews of many images (unreviewed ones come back undecided, revision 0)."""
    found: dict[str, Review] = {}
    for start in range(0, len(shas), 500):
        chunk = shas[start : start + 500]
        rows = conn.execute(
            f"SELECT * FROM reviews WHERE image_sha IN ({', '.join('?' for _ in chunk)})", chunk
        ).fetchall()
        found.update({r["image_sha"]: _review(r, r["image_sha"]) for r in rows})
    return {sha: found.get(sha) or _review(None, sha) for sha in shas}


def history(conn: sqlite3.Connection, sha: str | None = None) -> list[HistoryEntry]:
    """Every decision (of one image, or of all), oldest first."""
    if sha is None:
        rows = conn.execute("SELECT * FROM review_history ORDER BY id").fetchall()
    else:
        rows = conn.execute(
            "SELECT * FROM review_history WHERE image_sha = ? ORDER BY id", (sha,)
        ).fetchall()
    return [_entry(r) for r in rows]


def _write(
    conn: sqlite3.Connection,
    sha: str,
    current: Review,
    *,
    action: str,
    decision: Decision,
    undo_to: int | None,
    reviewer: str,
    note: str | None,
    tags: tuple[str, ...],
) -> Review:
    now = utc_now()
    revision = current.revision + 1
    history_id = conn.execute(
        "INSERT INTO review_history (image_sha, revision, action, decision, previous, "
        "previous_id, undo_to, reviewer, note, tags, decided_at) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            sha,
            revision,
            action,
            decision,
            current.decision if current.history_id else None,
            current.history_id,
            undo_to,
            reviewer,
            note,
            json.dumps(list(tags)),
            now,
        ),
    ).lastrowid
    conn.execute(
        "INSERT INTO reviews (image_sha, decision, revision, history_id, reviewer, note, tags, "
        "decided_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (image_sha) DO UPDATE SET "
        "decision = excluded.decision, revision = excluded.revision, "
        "history_id = excluded.history_id, reviewer = excluded.reviewer, note = excluded.note, "
        "tags = excluded.tags, decided_at = excluded.decided_at",
        (sha, decision, revision, history_id, reviewer, note, json.dumps(list(tags)), now),
    )
    return Review(sha, decision, revision, reviewer, note, tags, now, history_id)


def _current_for_write(conn: sqlite3.Connection, sha: str, expected_revision: int | None) -> Review:
    if conn.execute("SELECT 1 FROM images WHERE sha256 = ?", (sha,)).fetchone() is None:
        raise UnknownImage(f"no stored image {sha!r}; decide only on images of this workspace")
    current = get_review(conn, sha)
    if expected_revision is not None and expected_revision != current.revision:
        raise ReviewConflict(
            f"image {sha[:12]} is at revision {current.revision} ({current.decision} by "
            f"{current.reviewer}), not {expected_revision}: reload and decide again",
            current,
        )
    return current


def decide(
    conn: sqlite3.Connection,
    sha: str,
    decision: Decision,
    *,
    reviewer: str,
    note: str | None = None,
    tags: list[str] | tuple[str, ...] = (),
    expected_revision: int | None = None,
) -> Review:
    """Record a decision now; the one it replaces stays in the history.

    Example: decide(conn, sha, "rejected", reviewer="ana", tags=["bad_hands"])
    """
    _check(decision, reviewer, note)
    clean_tags = check_tags(list(tags))
    with transaction(conn):
        current = _current_for_write(conn, sha, expected_revision)
        return _write(
            conn,
            sha,
            current,
            action="decide",
            decision=decision,
            undo_to=current.history_id,
            reviewer=reviewer,
            note=note or None,
            tags=clean_tags,
        )


def undo(
    conn: sqlite3.Connection,
    sha: str,
    *,
    reviewer: str,
    expected_revision: int | None = None,
) -> Review:
    """Put an image back to the state before its current decision (recorded as a new entry,
    so undo itself can be audited; undoing repeatedly walks further back).

    Raises ReviewError when there is nothing to undo.

    Example: undo(conn, sha, reviewer="ana", expected_revision=review.revision)
    """
    _check("undecided", reviewer, None)
    with transaction(conn):
        current = _current_for_write(conn, sha, expected_revision)
        if current.history_id is None:
            raise ReviewError(f"image {sha[:12]} has no decision to undo")
        head = conn.execute(
            "SELECT undo_to FROM review_history WHERE id = ?", (current.history_id,)
        ).fetchone()
        target_id = head["undo_to"]
        if target_id is None:
            if current.decision == "undecided":
                raise ReviewError(f"image {sha[:12]} has no decision to undo")
            return _write(
                conn,
                sha,
                current,
                action="undo",
                decision="undecided",
                undo_to=None,
                reviewer=reviewer,
                note=None,
                tags=(),
            )
        target = _entry(
            conn.execute("SELECT * FROM review_history WHERE id = ?", (target_id,)).fetchone()
        )
        return _write(
            conn,
            sha,
            current,
            action="undo",
            decision=target.decision,
            undo_to=target.undo_to,
            reviewer=reviewer,
            note=target.note,
            tags=target.tags,
        )


@dataclass(frozen=True)
class Counts:
    accepted: int
    rejected: int
    undecided: int

    @property
    def total(self) -> int:
        return self.accepted + self.rejected + self.undecided

    def to_dict(self) -> dict[str, int]:
        return {
            "accepted": self.accepted,
            "rejected": self.rejected,
            "undecided": self.undecided,
            "total": self.total,
        }


def count_decisions(conn: sqlite3.Connection) -> Counts:
    """Decisions over the reviewable images (stored, not excluded as duplicates)."""
    row = conn.execute(
        "SELECT SUM(r.decision = 'accepted'), SUM(r.decision = 'rejected'), COUNT(*) "
        "FROM images i LEFT JOIN reviews r ON r.image_sha = i.sha256 WHERE i.excluded = 0"
    ).fetchone()
    accepted, rejected, total = row[0] or 0, row[1] or 0, row[2] or 0
    return Counts(accepted, rejected, total - accepted - rejected)


def reviews_with(conn: sqlite3.Connection, decision: Decision) -> list[Review]:
    """Current reviews with one decision, in the order they were made."""
    rows = conn.execute(
        "SELECT r.* FROM reviews r JOIN images i ON i.sha256 = r.image_sha "
        "WHERE r.decision = ? AND i.excluded = 0 ORDER BY r.decided_at, r.image_sha",
        (decision,),
    ).fetchall()
    return [_review(r, r["image_sha"]) for r in rows]


def insert_version_links(conn: sqlite3.Connection, version_id: int, reviews: list[Review]) -> None:
    """Record which decisions produced a dataset version, inside the transaction the caller
    holds (the one creating the version, so a version never exists without its links).

    Example: insert_version_links(conn, version_id, reviews_with(conn, "accepted"))
    """
    conn.executemany(
        "INSERT INTO dataset_version_reviews (version_id, image_sha, history_id) VALUES (?, ?, ?)",
        [(version_id, r.image_sha, r.history_id) for r in reviews],
    )


def version_reviews(conn: sqlite3.Connection, version_id: int) -> list[HistoryEntry]:
    """The decisions that produced a dataset version (empty for versions made otherwise)."""
    rows = conn.execute(
        "SELECT h.* FROM dataset_version_reviews l JOIN review_history h ON h.id = l.history_id "
        "WHERE l.version_id = ? ORDER BY h.image_sha",
        (version_id,),
    ).fetchall()
    return [_entry(r) for r in rows]
