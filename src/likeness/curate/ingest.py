"""Ingest: turn files on disk into stored, hashed, measured images, one file at a time.

Each file is handled on its own: read, hash (sha256), refuse if already stored, decode safely,
compute perceptual hashes and sharpness, write the blob atomically, then insert its row in one
transaction. A crash at any point leaves either nothing or a blob without a row, and running the
same command again completes the work without storing anything twice.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from likeness.curate.hashes import HammingIndex, hamming, perceptual_hashes
from likeness.imaging import ImageRejected, decode_image, sharpness
from likeness.store.blobs import sha256_bytes
from likeness.store.db import transaction, utc_now
from likeness.store.images import ORIGINS, ImageRecord, insert_image, list_images, record_path
from likeness.workspace import Workspace

Status = Literal["stored", "duplicate", "near_duplicate", "rejected"]
IMAGE_SUFFIXES = frozenset(
    {".jpg", ".jpeg", ".png", ".webp", ".tif", ".tiff", ".bmp", ".gif", ".mpo", ".heic", ".avif"}
)


@dataclass(frozen=True)
class IngestResult:
    """What happened to one input (also the `--json` shape of `likeness add`)."""

    path: str
    status: Status
    sha256: str | None = None
    reason: str | None = None
    duplicate_of: str | None = None
    """For `near_duplicate`: the stored image it resembles; for `duplicate`: the same sha256."""
    distance: int | None = None
    """pHash Hamming distance to `duplicate_of` for near duplicates."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def expand_inputs(paths: Iterable[Path], recursive: bool = False) -> Iterator[Path]:
    """Files to ingest, in a stable order. Folders yield their image files (by suffix);
    a path that does not exist is yielded as is, to be rejected with a clear reason."""
    for path in paths:
        if path.is_dir():
            pattern = "**/*" if recursive else "*"
            yield from sorted(
                p for p in path.glob(pattern) if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
            )
        else:
            yield path


class NearDuplicateFinder:
    """Finds stored images that look like a new one, by both perceptual hashes."""

    def __init__(self, phash_max: int, dhash_max: int):
        self.index = HammingIndex(phash_max)
        self.dhash_max = dhash_max
        self._dhash: dict[str, int] = {}

    def add(self, sha256: str, phash: int, dhash: int) -> None:
        self.index.add(sha256, phash)
        self._dhash[sha256] = dhash

    def nearest(self, phash: int, dhash: int) -> tuple[str, int] | None:
        matches = [
            (distance, sha)
            for sha, distance in self.index.query(phash)
            if hamming(self._dhash[sha], dhash) <= self.dhash_max
        ]
        if not matches:
            return None
        distance, sha = min(matches)
        return sha, distance


class Ingester:
    """Stores files into a workspace; one instance per batch."""

    def __init__(self, workspace: Workspace, origin: str = "source"):
        if origin not in ORIGINS:
            raise ValueError(f"origin {origin!r} is not one of {', '.join(ORIGINS)}")
        self.ws = workspace
        self.origin = origin
        settings = workspace.settings
        self.max_pixels = settings.ingest.max_pixels
        self.max_bytes = settings.ingest.max_file_bytes
        self.near = NearDuplicateFinder(
            settings.dedup.phash_max_distance, settings.dedup.dhash_max_distance
        )
        for record in list_images(workspace.db, include_excluded=True):
            self.near.add(record.sha256, int(record.phash, 16), int(record.dhash, 16))

    def ingest_file(self, path: Path) -> IngestResult:
        """Store one file; never raises for bad input, returns a `rejected` result instead."""
        shown = str(path)
        try:
            size = path.stat().st_size
            if size > self.max_bytes:
                return IngestResult(
                    shown,
                    "rejected",
                    reason=f"file is {size / 2**20:.0f} MiB, over ingest.max_file_bytes",
                )
            data = path.read_bytes()
        except FileNotFoundError:
            return IngestResult(shown, "rejected", reason="no such file")
        except IsADirectoryError:
            return IngestResult(shown, "rejected", reason="is a folder; pass --recursive or files")
        except OSError as exc:
            return IngestResult(shown, "rejected", reason=f"cannot read ({exc.strerror})")
        return self.ingest_bytes(data, name=path.name, source_path=str(path.resolve()))

    def ingest_bytes(
        self,
        data: bytes,
        *,
        name: str,
        source_path: str | None = None,
        on_stored: Callable[[str], None] | None = None,
    ) -> IngestResult:
        """Store image bytes (from a file or an engine). `on_stored(sha)` runs inside the same
        transaction as the row insert, so provenance written there lands with the image or not
        at all."""
        shown = source_path or name
        digest = sha256_bytes(data)
        now = utc_now()
        existing = self.ws.db.execute("SELECT 1 FROM images WHERE sha256 = ?", (digest,)).fetchone()
        if existing:
            if source_path:
                with transaction(self.ws.db):
                    record_path(self.ws.db, digest, source_path, now)
            return IngestResult(
                shown, "duplicate", sha256=digest, reason="already stored", duplicate_of=digest
            )
        try:
            decoded = decode_image(data, max_pixels=self.max_pixels)
        except ImageRejected as exc:
            return IngestResult(shown, "rejected", sha256=digest, reason=exc.reason)
        hashes = perceptual_hashes(decoded.image)
        near = self.near.nearest(hashes.phash, hashes.dhash)
        record = ImageRecord(
            sha256=digest,
            origin=self.origin,  # type: ignore[arg-type]
            original_name=name,
            source_path=source_path,
            size_bytes=len(data),
            format=decoded.format,
            width=decoded.width,
            height=decoded.height,
            mode=decoded.mode,
            captured_at=decoded.captured_at,
            ingested_at=now,
            phash=hashes.phash_hex,
            dhash=hashes.dhash_hex,
            sharpness=round(sharpness(decoded.image), 3),
        )
        self.ws.blobs.put_bytes(data, digest)
        with transaction(self.ws.db):
            added = insert_image(self.ws.db, record)
            if source_path:
                record_path(self.ws.db, digest, source_path, now)
            if added and on_stored:
                on_stored(digest)
        self.near.add(digest, hashes.phash, hashes.dhash)
        if not added:  # another process stored it between our check and our insert
            return IngestResult(
                shown, "duplicate", sha256=digest, reason="already stored", duplicate_of=digest
            )
        if near:
            near_sha, distance = near
            return IngestResult(
                shown,
                "near_duplicate",
                sha256=digest,
                reason=f"stored; looks like {near_sha[:12]} (pHash distance {distance})",
                duplicate_of=near_sha,
                distance=distance,
            )
        return IngestResult(shown, "stored", sha256=digest)
