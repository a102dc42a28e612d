"""LoRA files of the workspace and their lineage (table of migration 0006).

A LoRA row ties a file (by its sha256) to the dataset version it was trained on and, for one
trained here, to its training run. Sweeps, cards and generations name the LoRAs they used by
sha256 in their provenance, so :func:`lora_lineage` finds them from the file alone. Example::

    lora_id = record_lora(conn, path="loras/mara-v2.safetensors", sha256=digest, name="mara-v2",
                          family="sdxl", base_model="bigLove.safetensors",
                          base_model_sha256=None, rank=64, alpha=32, steps=1500,
                          dataset="mara", dataset_version=2, source="trained", train_run=3,
                          metadata=meta)
    lora_lineage(conn, digest).cards   # the model cards run with it
"""

from __future__ import annotations

import json
import re
import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from likeness.store.datasets import get_version
from likeness.store.db import transaction, utc_now

LORA_SOURCES = ("trained", "added")
"""``trained``: written by ``likeness train``; ``added``: trained elsewhere, added by hand."""
LORA_FAMILIES = ("sdxl", "sd15", "flux", "qwen_image_edit")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_SHA_PREFIX = re.compile(r"^[0-9a-f]{8,64}$")


class LoraError(LookupError):
    """No such LoRA, an ambiguous reference, or a record that contradicts an earlier one."""


@dataclass(frozen=True)
class LoraRow:
    id: int
    sha256: str
    path: str
    name: str
    family: str
    base_model: str
    base_model_sha256: str | None
    rank: int
    alpha: float
    steps: int | None
    dataset: str | None
    """The dataset version it was trained on, ``NAME@vN`` (None when not known)."""
    source: str
    train_run: int | None
    metadata: dict[str, str]
    created_at: str

    def to_dict(self, with_metadata: bool = False) -> dict[str, Any]:
        data: dict[str, Any] = {
            "id": self.id,
            "name": self.name,
            "sha256": self.sha256,
            "path": self.path,
            "family": self.family,
            "base_model": self.base_model,
            "base_model_sha256": self.base_model_sha256,
            "rank": self.rank,
            "alpha": self.alpha,
            "steps": self.steps,
            "dataset": self.dataset,
            "source": self.source,
            "train_run": self.train_run,
            "created_at": self.created_at,
        }
        if with_metadata:
            data["metadata"] = self.metadata
        return data


_SELECT = (
    "SELECT l.*, d.name AS dataset_name, v.version AS dataset_version FROM loras l "
    "LEFT JOIN dataset_versions v ON v.id = l.dataset_version_id "
    "LEFT JOIN datasets d ON d.id = v.dataset_id"
)


def _row(row: sqlite3.Row) -> LoraRow:
    dataset = f"{row['dataset_name']}@v{row['dataset_version']}" if row["dataset_name"] else None
    return LoraRow(
        id=row["id"],
        sha256=row["sha256"],
        path=row["path"],
        name=row["name"],
        family=row["family"],
        base_model=row["base_model"],
        base_model_sha256=row["base_model_sha256"],
        rank=row["rank"],
        alpha=row["alpha"],
        steps=row["steps"],
        dataset=dataset,
        source=row["source"],
        train_run=row["train_run"],
        metadata=json.loads(row["metadata"]),
        created_at=row["created_at"],
    )


def record_lora(
    conn: sqlite3.Connection,
    *,
    path: str,
    sha256: str,
    name: str,
    family: str,
    base_model: str,
    base_model_sha256: str | None,
    rank: int,
    alpha: float,
    steps: int | None,
    dataset: str | None,
    dataset_version: int | None,
    source: str,
    train_run: int | None,
    metadata: Mapping[str, str],
) -> int:
    """Record a LoRA file and return its id; recording the same file (sha256) again with the
    same dataset version returns the existing id, with another one it is refused.

    ``dataset``/``dataset_version`` name the version it was trained on (both or neither);
    ``source`` is one of :data:`LORA_SOURCES`.
    """
    if not _SHA256.match(sha256):
        raise ValueError(f"sha256: {sha256!r} is not a lowercase hex sha256")
    if source not in LORA_SOURCES:
        raise ValueError(f"source: {source!r} is not one of {', '.join(LORA_SOURCES)}")
    if family not in LORA_FAMILIES:
        raise ValueError(f"family: {family!r} is not one of {', '.join(LORA_FAMILIES)}")
    if rank < 1:
        raise ValueError(f"rank: {rank} must be at least 1")
    if not name.strip():
        raise ValueError("name: is empty; name the LoRA")
    if (dataset is None) != (dataset_version is None):
        raise ValueError("dataset, dataset_version: give both (NAME and N of NAME@vN) or neither")
    version_id = None
    if dataset is not None:
        version_id = get_version(conn, dataset, dataset_version).id
    with transaction(conn):
        existing = conn.execute(
            "SELECT id, dataset_version_id FROM loras WHERE sha256 = ?", (sha256,)
        ).fetchone()
        if existing is not None:
            if existing["dataset_version_id"] != version_id:
                raise LoraError(
                    f"{sha256[:12]} is already recorded as LoRA {existing['id']} with another "
                    "dataset version; a file has one lineage"
                )
            return int(existing["id"])
        cur = conn.execute(
            "INSERT INTO loras (sha256, path, name, family, base_model, base_model_sha256, rank, "
            "alpha, steps, dataset_version_id, source, train_run, metadata, created_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                sha256,
                path,
                name.strip(),
                family,
                base_model,
                base_model_sha256,
                int(rank),
                float(alpha),
                steps,
                version_id,
                source,
                train_run,
                json.dumps(dict(metadata), sort_keys=True),
                utc_now(),
            ),
        )
    return int(cur.lastrowid)


def get_lora(conn: sqlite3.Connection, lora_id: int) -> LoraRow:
    row = conn.execute(_SELECT + " WHERE l.id = ?", (lora_id,)).fetchone()
    if row is None:
        raise LoraError(f"no LoRA {lora_id}; see `likeness lora list`")
    return _row(row)


def lora_by_sha256(conn: sqlite3.Connection, sha256: str) -> LoraRow | None:
    row = conn.execute(_SELECT + " WHERE l.sha256 = ?", (sha256,)).fetchone()
    return _row(row) if row else None


def find_lora(conn: sqlite3.Connection, ref: str) -> LoraRow:
    """The LoRA named by ``ref``: its id, its sha256 or a prefix of it (8+ hex digits), or its
    name (the latest of that name)."""
    ref = ref.strip()
    if ref.isdigit() and len(ref) < 8:
        return get_lora(conn, int(ref))
    if _SHA_PREFIX.match(ref):
        rows = conn.execute(_SELECT + " WHERE l.sha256 LIKE ?", (ref + "%",)).fetchall()
        if len(rows) > 1:
            raise LoraError(f"{ref} matches {len(rows)} LoRAs; give more of the sha256")
        if rows:
            return _row(rows[0])
    row = conn.execute(_SELECT + " WHERE l.name = ? ORDER BY l.id DESC", (ref,)).fetchone()
    if row is None:
        raise LoraError(f"no LoRA {ref!r} (id, sha256 or name); see `likeness lora list`")
    return _row(row)


def list_loras(
    conn: sqlite3.Connection,
    *,
    dataset: str | None = None,
    dataset_version: int | None = None,
    train_run: int | None = None,
) -> list[LoraRow]:
    """Every LoRA, oldest first; only those of one dataset (all versions, or one) or one run."""
    sql, params = _SELECT + " WHERE 1 = 1", []
    if dataset is not None:
        sql += " AND d.name = ?"
        params.append(dataset)
        if dataset_version is not None:
            sql += " AND v.version = ?"
            params.append(dataset_version)
    if train_run is not None:
        sql += " AND l.train_run = ?"
        params.append(train_run)
    return [_row(r) for r in conn.execute(sql + " ORDER BY l.id", params).fetchall()]


# -- lineage ------------------------------------------------------------------------------
@dataclass(frozen=True)
class LoraUse:
    """A sweep or a card that used the LoRA."""

    kind: str  # "sweep" | "card"
    id: int
    name: str
    images: int
    """Images of it made with the LoRA (cells for a sweep, attempts for a card)."""
    created_at: str
    finished_at: str | None
    summary: dict[str, Any] | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "images": self.images,
            "created_at": self.created_at,
            "finished_at": self.finished_at,
            "summary": self.summary,
        }


@dataclass(frozen=True)
class LoraLineage:
    sha256: str
    sweeps: tuple[LoraUse, ...]
    cards: tuple[LoraUse, ...]
    generations: int
    """Stored images whose provenance lists the LoRA (sweeps and cards included)."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "sweeps": [u.to_dict() for u in self.sweeps],
            "cards": [u.to_dict() for u in self.cards],
            "generations": self.generations,
        }


def lora_lineage(conn: sqlite3.Connection, sha256: str) -> LoraLineage:
    """The sweeps, cards and generated images whose provenance names the LoRA ``sha256``."""
    sweeps = conn.execute(
        "SELECT s.id, s.name, s.created_at, s.finished_at, COUNT(DISTINCT c.cell_key) AS n "
        "FROM sweeps s JOIN sweep_members m ON m.sweep_id = s.id "
        "JOIN sweep_cells c ON c.cell_key = m.cell_key "
        "WHERE EXISTS (SELECT 1 FROM json_each(c.generation, '$.loras') l "
        "WHERE json_extract(l.value, '$.sha256') = ?) GROUP BY s.id ORDER BY s.id",
        (sha256,),
    ).fetchall()
    cards = conn.execute(
        "SELECT k.id, k.label, k.created_at, k.finished_at, k.summary, "
        "(SELECT COUNT(*) FROM card_attempts a WHERE a.card_id = k.id) AS n FROM cards k "
        "WHERE EXISTS (SELECT 1 FROM json_each(k.lora_sha256s) l WHERE l.value = ?) "
        "ORDER BY k.id",
        (sha256,),
    ).fetchall()
    generations = conn.execute(
        "SELECT COUNT(DISTINCT image_sha) FROM generation_loras WHERE sha256 = ?", (sha256,)
    ).fetchone()[0]
    return LoraLineage(
        sha256=sha256,
        sweeps=tuple(
            LoraUse("sweep", r["id"], r["name"], r["n"], r["created_at"], r["finished_at"], None)
            for r in sweeps
        ),
        cards=tuple(
            LoraUse(
                "card",
                r["id"],
                r["label"],
                r["n"],
                r["created_at"],
                r["finished_at"],
                json.loads(r["summary"]) if r["summary"] else None,
            )
            for r in cards
        ),
        generations=int(generations),
    )
