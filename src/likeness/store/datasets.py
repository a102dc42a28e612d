"""Datasets and their immutable versions.

A version is written once, in one transaction, with its items and captions; the database refuses
any later change to it (triggers in the schema). Making a dataset again makes version N+1 with
version N as its parent.
"""

from __future__ import annotations

import hashlib
import json
import re
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from likeness.store.db import transaction, utc_now

_REF = re.compile(r"^(?P<name>[^@]+?)(?:@v(?P<version>\d+))?$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class DatasetError(LookupError):
    pass


@dataclass(frozen=True)
class DatasetItem:
    image_sha: str
    caption: str


@dataclass(frozen=True)
class DatasetVersion:
    id: int
    name: str
    version: int
    parent_version: int | None
    created_at: str
    trigger: str
    class_word: str
    caption_template: str
    trigger_placement: str
    selection: dict[str, Any]
    note: str | None
    count: int
    items: tuple[DatasetItem, ...] = field(default=())
    """Empty when the version was listed rather than loaded."""

    @property
    def ref(self) -> str:
        return f"{self.name}@v{self.version}"

    def to_dict(self, with_items: bool = True) -> dict[str, Any]:
        data: dict[str, Any] = {
            "name": self.name,
            "version": self.version,
            "ref": self.ref,
            "parent": f"{self.name}@v{self.parent_version}" if self.parent_version else None,
            "created_at": self.created_at,
            "trigger": self.trigger,
            "class_word": self.class_word,
            "caption_template": self.caption_template,
            "trigger_placement": self.trigger_placement,
            "selection": self.selection,
            "note": self.note,
            "count": self.count,
        }
        if with_items:
            data["items"] = [{"sha256": i.image_sha, "caption": i.caption} for i in self.items]
        return data


def parse_ref(ref: str) -> tuple[str, int | None]:
    """`name` or `name@vN` -> (name, N or None for the latest)."""
    match = _REF.match(ref.strip())
    if not match:
        raise DatasetError(f"{ref!r} is not a dataset reference; use NAME or NAME@vN")
    version = match.group("version")
    return match.group("name"), int(version) if version else None


def check_name(name: str) -> None:
    if not _NAME.match(name):
        raise DatasetError(
            f"dataset name {name!r} must be 1-64 letters, digits, '_', '.' or '-', "
            "starting with a letter or digit"
        )


def create_version(
    conn: sqlite3.Connection,
    name: str,
    items: list[DatasetItem],
    *,
    trigger: str,
    class_word: str,
    caption_template: str,
    trigger_placement: str,
    selection: dict[str, Any],
    note: str | None = None,
    on_created: Callable[[int], None] | None = None,
) -> DatasetVersion:
    """Write a new version (v1 for a new dataset) with its items, atomically.

    `on_created(version_id)` runs inside the same transaction, so what it records about the
    version (e.g. the reviews that produced it) lands with it or not at all.
    """
    check_name(name)
    if not items:
        raise DatasetError(f"dataset {name!r}: the selection matched no images; nothing to save")
    now = utc_now()
    with transaction(conn):
        row = conn.execute("SELECT id FROM datasets WHERE name = ?", (name,)).fetchone()
        if row:
            dataset_id = row[0]
        else:
            dataset_id = conn.execute(
                "INSERT INTO datasets (name, created_at) VALUES (?, ?)", (name, now)
            ).lastrowid
        parent = conn.execute(
            "SELECT id, version FROM dataset_versions WHERE dataset_id = ? "
            "ORDER BY version DESC LIMIT 1",
            (dataset_id,),
        ).fetchone()
        version = parent["version"] + 1 if parent else 1
        version_id = conn.execute(
            "INSERT INTO dataset_versions (dataset_id, version, parent_id, created_at, trigger, "
            "class_word, caption_template, trigger_placement, selection, note) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                dataset_id,
                version,
                parent["id"] if parent else None,
                now,
                trigger,
                class_word,
                caption_template,
                trigger_placement,
                json.dumps(selection, sort_keys=True),
                note,
            ),
        ).lastrowid
        conn.executemany(
            "INSERT INTO dataset_items (version_id, image_sha, caption) VALUES (?, ?, ?)",
            [(version_id, item.image_sha, item.caption) for item in items],
        )
        if on_created:
            on_created(version_id)
    return get_version(conn, name, version)


def get_version(conn: sqlite3.Connection, name: str, version: int | None = None) -> DatasetVersion:
    """A version by name and number (latest when None), with its items."""
    sql = (
        "SELECT v.*, d.name, p.version AS parent_version FROM dataset_versions v "
        "JOIN datasets d ON d.id = v.dataset_id "
        "LEFT JOIN dataset_versions p ON p.id = v.parent_id WHERE d.name = ?"
    )
    params: list[Any] = [name]
    if version is not None:
        sql += " AND v.version = ?"
        params.append(version)
    row = conn.execute(sql + " ORDER BY v.version DESC LIMIT 1", params).fetchone()
    if not row:
        known = [r[0] for r in conn.execute("SELECT name FROM datasets ORDER BY name")]
        where = f"@v{version}" if version is not None else ""
        hint = f"; datasets: {', '.join(known)}" if known else "; create one with `dataset create`"
        raise DatasetError(f"no dataset {name}{where}{hint}")
    items = tuple(
        DatasetItem(r[0], r[1])
        for r in conn.execute(
            "SELECT image_sha, caption FROM dataset_items WHERE version_id = ? ORDER BY image_sha",
            (row["id"],),
        )
    )
    return _version(row, items, len(items))


def version_sha256(version: DatasetVersion) -> str:
    r"""The content hash of a version: sha256 of its items, one ``<image sha256>\t<caption>\n``
    line each, sorted by image hash. Equal images and captions give an equal hash, whatever
    the name or number; a LoRA's metadata carries it to say what exactly it was trained on."""
    if len(version.items) != version.count:
        raise ValueError(f"{version.ref}: load the version with its items to hash it")
    lines = "".join(
        f"{i.image_sha}\t{i.caption}\n" for i in sorted(version.items, key=lambda i: i.image_sha)
    )
    return hashlib.sha256(lines.encode("utf-8")).hexdigest()


def resolve(conn: sqlite3.Connection, ref: str) -> DatasetVersion:
    name, version = parse_ref(ref)
    return get_version(conn, name, version)


def list_versions(conn: sqlite3.Connection) -> list[DatasetVersion]:
    """Every version of every dataset, with item counts but without items."""
    rows = conn.execute(
        "SELECT v.*, d.name, p.version AS parent_version, "
        "(SELECT COUNT(*) FROM dataset_items i WHERE i.version_id = v.id) AS n "
        "FROM dataset_versions v JOIN datasets d ON d.id = v.dataset_id "
        "LEFT JOIN dataset_versions p ON p.id = v.parent_id ORDER BY d.name, v.version"
    ).fetchall()
    return [_version(r, (), r["n"]) for r in rows]


def _version(row: sqlite3.Row, items: tuple[DatasetItem, ...], count: int) -> DatasetVersion:
    return DatasetVersion(
        id=row["id"],
        name=row["name"],
        version=row["version"],
        parent_version=row["parent_version"],
        created_at=row["created_at"],
        trigger=row["trigger"],
        class_word=row["class_word"],
        caption_template=row["caption_template"],
        trigger_placement=row["trigger_placement"],
        selection=json.loads(row["selection"]),
        note=row["note"],
        count=count,
        items=items,
    )


@dataclass(frozen=True)
class VersionDiff:
    a: str
    b: str
    added: tuple[str, ...]
    removed: tuple[str, ...]
    recaptioned: tuple[tuple[str, str, str], ...]
    """(sha256, caption in a, caption in b)."""
    unchanged: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "a": self.a,
            "b": self.b,
            "added": list(self.added),
            "removed": list(self.removed),
            "recaptioned": [
                {"sha256": s, "caption_a": ca, "caption_b": cb} for s, ca, cb in self.recaptioned
            ],
            "unchanged": self.unchanged,
        }


def diff_versions(a: DatasetVersion, b: DatasetVersion) -> VersionDiff:
    caps_a = {i.image_sha: i.caption for i in a.items}
    caps_b = {i.image_sha: i.caption for i in b.items}
    both = caps_a.keys() & caps_b.keys()
    recaptioned = tuple(sorted((s, caps_a[s], caps_b[s]) for s in both if caps_a[s] != caps_b[s]))
    return VersionDiff(
        a=a.ref,
        b=b.ref,
        added=tuple(sorted(caps_b.keys() - caps_a.keys())),
        removed=tuple(sorted(caps_a.keys() - caps_b.keys())),
        recaptioned=recaptioned,
        unchanged=len(both) - len(recaptioned),
    )
