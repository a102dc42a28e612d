"""Near-duplicate groups, and keeping the best image of each.

Duplicates bias a LoRA toward the repeated shot and waste steps (one real run had 72 images of
which 30 were unique). Groups are the connected components of the "near duplicate" relation; the
keeper of a group is the image with the most pixels, then the sharpest. The others are marked
excluded with the keeper recorded, never deleted.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass, field

from likeness.curate.hashes import PerceptualHashes, near_pairs
from likeness.store.db import transaction
from likeness.store.images import ImageRecord, clear_excluded, list_images, set_excluded

NEAR_DUPLICATE = "near_duplicate"


@dataclass(frozen=True)
class DuplicateGroup:
    keeper: ImageRecord
    others: tuple[ImageRecord, ...]
    distances: dict[str, int | None] = field(default_factory=dict)
    """pHash distance of each other member to its closest group member (None when it joined
    the group by its face alone)."""

    @property
    def members(self) -> tuple[ImageRecord, ...]:
        return (self.keeper, *self.others)

    def to_dict(self) -> dict[str, object]:
        return {
            "keep": _brief(self.keeper),
            "exclude": [
                {**_brief(r), "distance": self.distances.get(r.sha256)} for r in self.others
            ],
        }


def _brief(record: ImageRecord) -> dict[str, object]:
    return {
        "sha256": record.sha256,
        "name": record.original_name,
        "width": record.width,
        "height": record.height,
        "sharpness": record.sharpness,
        "excluded": record.excluded,
    }


def quality_key(record: ImageRecord) -> tuple[int, float, str]:
    """Resolution, then sharpness; sha256 last so ties resolve the same way every time."""
    return (record.pixels, record.sharpness, record.sha256)


def group_near_duplicates(
    records: Sequence[ImageRecord],
    phash_max: int,
    dhash_max: int,
    extra_groups: Sequence[Sequence[str]] = (),
) -> list[DuplicateGroup]:
    """Groups of two or more near-duplicate images, largest group first.

    `extra_groups` (lists of sha256) join the relation too, e.g. the same-face groups found
    from face embeddings, so an image close to two others by different tests ends in one group.
    """
    by_sha = {r.sha256: r for r in records}
    items = [(r.sha256, PerceptualHashes(int(r.phash, 16), int(r.dhash, 16))) for r in records]
    parent = {sha: sha for sha in by_sha}

    def root(sha: str) -> str:
        while parent[sha] != sha:
            parent[sha] = parent[parent[sha]]
            sha = parent[sha]
        return sha

    distances: dict[str, int] = {}
    for a, b, distance in near_pairs(items, phash_max, dhash_max):
        parent[root(a)] = root(b)  # type: ignore[index]
        for sha in (a, b):
            distances[sha] = min(distances.get(sha, distance), distance)  # type: ignore[arg-type]
    for group in extra_groups:
        known = [sha for sha in group if sha in by_sha]
        for sha in known[1:]:
            parent[root(sha)] = root(known[0])
    members: dict[str, list[ImageRecord]] = {}
    for sha, record in by_sha.items():
        members.setdefault(root(sha), []).append(record)
    groups = []
    for group in members.values():
        if len(group) < 2:
            continue
        ranked = sorted(group, key=quality_key, reverse=True)
        groups.append(
            DuplicateGroup(
                keeper=ranked[0],
                others=tuple(ranked[1:]),
                distances={r.sha256: distances.get(r.sha256) for r in ranked[1:]},
            )
        )
    groups.sort(key=lambda g: (-len(g.others), g.keeper.sha256))
    return groups


def dedup_candidates(conn: sqlite3.Connection) -> list[ImageRecord]:
    """Every image that takes part in dedup: the included ones and those already set aside as
    duplicates, so that the report stays stable after `--apply`."""
    return [
        r
        for r in list_images(conn, include_excluded=True)
        if not r.excluded or r.excluded_reason == NEAR_DUPLICATE
    ]


def find_workspace_duplicates(
    conn: sqlite3.Connection,
    phash_max: int,
    dhash_max: int,
    extra_groups: Sequence[Sequence[str]] = (),
) -> list[DuplicateGroup]:
    """Groups among the workspace's dedup candidates (see `dedup_candidates`)."""
    return group_near_duplicates(dedup_candidates(conn), phash_max, dhash_max, extra_groups)


def apply_groups(conn: sqlite3.Connection, groups: Sequence[DuplicateGroup]) -> int:
    """Exclude every non-keeper (and re-include a keeper); return how many rows changed."""
    changed = 0
    with transaction(conn):
        for group in groups:
            if group.keeper.excluded:  # a better copy arrived after an earlier --apply
                clear_excluded(conn, group.keeper.sha256)
                changed += 1
            for record in group.others:
                if record.excluded and record.duplicate_of == group.keeper.sha256:
                    continue
                set_excluded(conn, record.sha256, NEAR_DUPLICATE, group.keeper.sha256)
                changed += 1
    return changed
