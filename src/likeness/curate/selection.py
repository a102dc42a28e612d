"""Which stored images a new dataset version takes.

Excluded images (near duplicates set aside by dedup) never reach a dataset. `include` and
`exclude` patterns match a sha256 prefix (at least 6 hex digits) or the original file name as a
shell glob (`obama*.jpg`).
"""

from __future__ import annotations

import fnmatch
import re
import sqlite3
from dataclasses import asdict, dataclass, field
from typing import Any

from likeness.store.images import ImageRecord, list_images

_SHA_PREFIX = re.compile(r"^[0-9a-f]{6,64}$")


@dataclass(frozen=True)
class Selection:
    origins: tuple[str, ...] = ()
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    shas: tuple[str, ...] = field(default=())
    """Exact images, when the selection comes from elsewhere (e.g. accepted reviews)."""

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) for k, v in asdict(self).items() if v}


def matches(record: ImageRecord, pattern: str) -> bool:
    if _SHA_PREFIX.match(pattern) and record.sha256.startswith(pattern):
        return True
    return fnmatch.fnmatchcase(record.original_name, pattern)


def select_images(conn: sqlite3.Connection, selection: Selection) -> list[ImageRecord]:
    records = list_images(conn, origins=list(selection.origins) or None)
    if selection.shas:
        wanted = set(selection.shas)
        records = [r for r in records if r.sha256 in wanted]
    if selection.include:
        records = [r for r in records if any(matches(r, p) for p in selection.include)]
    if selection.exclude:
        records = [r for r in records if not any(matches(r, p) for p in selection.exclude)]
    return records
