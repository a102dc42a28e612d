"""What review produces: the next dataset version from the accepted images, and a corrections
list of the rejected ones (with their tags and notes) for training an edit model later.

Corrections JSONL, one object per line, keys stable (`schema` 1):
    {"schema": 1, "sha256": "...", "path": "<absolute blob path>", "original_name": "...",
     "origin": "synthetic", "width": 832, "height": 1216, "tags": ["bad_hands"], "note": "...",
     "reviewer": "ana", "decided_at": "2026-...", "provenance": {...} | null}
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from likeness.curate.datasets import create_dataset_version
from likeness.curate.selection import Selection
from likeness.review.decisions import Review, insert_version_links, reviews_with
from likeness.review.provenance import provenance_of
from likeness.store.datasets import DatasetError, DatasetVersion
from likeness.store.images import get_image
from likeness.workspace import Workspace

CORRECTIONS_SCHEMA = 1


@dataclass(frozen=True)
class ReviewedVersion:
    version: DatasetVersion
    reviews: tuple[Review, ...]

    def to_dict(self) -> dict[str, Any]:
        data = self.version.to_dict(with_items=False)
        data["reviews"] = [
            {"sha256": r.image_sha, "history_id": r.history_id, "reviewer": r.reviewer}
            for r in self.reviews
        ]
        return data


def dataset_from_accepted(ws: Workspace, name: str, note: str | None = None) -> ReviewedVersion:
    """Make the next version of dataset `name` from every accepted image, and record which
    decisions produced it.

    Example: dataset_from_accepted(ws, "mara", note="after review of sweep 3")
    """
    accepted = reviews_with(ws.db, "accepted")
    if not accepted:
        raise DatasetError(
            f"dataset {name!r}: no accepted images yet; accept some in `likeness review` first"
        )
    selection = Selection(shas=tuple(r.image_sha for r in accepted))
    used: list[Review] = []

    def link_reviews(version_id: int) -> None:
        kept = {
            row[0]
            for row in ws.db.execute(
                "SELECT image_sha FROM dataset_items WHERE version_id = ?", (version_id,)
            )
        }
        used.extend(r for r in accepted if r.image_sha in kept)
        insert_version_links(ws.db, version_id, used)

    version = create_dataset_version(
        ws, name, selection, note=note or "accepted in review", on_created=link_reviews
    )
    return ReviewedVersion(version, tuple(used))


def corrections(ws: Workspace) -> Iterator[dict[str, Any]]:
    """One record per rejected image (shape in the module docstring), oldest decision first."""
    for review in reviews_with(ws.db, "rejected"):
        image = get_image(ws.db, review.image_sha)
        if image is None:
            continue
        yield {
            "schema": CORRECTIONS_SCHEMA,
            "sha256": review.image_sha,
            "path": str(ws.blobs.path(review.image_sha)),
            "original_name": image.original_name,
            "origin": image.origin,
            "width": image.width,
            "height": image.height,
            "tags": list(review.tags),
            "note": review.note,
            "reviewer": review.reviewer,
            "decided_at": review.decided_at,
            "provenance": provenance_of(ws.db, ws.blobs, review.image_sha),
        }


def write_corrections(ws: Workspace, out: Path) -> int:
    """Write the corrections JSONL to `out` (atomically); returns the number of records.

    Example: write_corrections(ws, Path("corrections.jsonl"))
    """
    out = Path(out)
    tmp = out.with_name(out.name + ".tmp")
    count = 0
    try:
        with tmp.open("w", encoding="utf-8") as handle:
            for record in corrections(ws):
                handle.write(json.dumps(record, sort_keys=True, default=str) + "\n")
                count += 1
        tmp.replace(out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return count
