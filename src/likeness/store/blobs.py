"""Content-addressed blob store: a file's sha256 is its name, so a file is stored once.

Writes go to a temporary file in the same folder, are flushed to disk, then renamed into place:
a crash leaves either the whole blob or nothing under its name.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from pathlib import Path

_SHA256 = re.compile(r"^[0-9a-f]{64}$")


class BlobNotFound(KeyError):
    pass


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def is_sha256(value: str) -> bool:
    return bool(_SHA256.match(value))


class BlobStore:
    """Files under `root/ab/abcdef...`, addressed only by a validated sha256."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def path(self, sha256: str) -> Path:
        """The file of a blob; refuses anything that is not a sha256, so no request path ever
        reaches the file system."""
        if not is_sha256(sha256):
            raise BlobNotFound(sha256)
        return self.root / sha256[:2] / sha256

    def exists(self, sha256: str) -> bool:
        return is_sha256(sha256) and self.path(sha256).is_file()

    def put_bytes(self, data: bytes, sha256: str | None = None) -> str:
        """Store bytes (idempotent) and return their sha256."""
        digest = sha256 or sha256_bytes(data)
        target = self.path(digest)
        if target.is_file() and target.stat().st_size == len(data):
            return digest
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return digest

    def read(self, sha256: str) -> bytes:
        path = self.path(sha256)
        try:
            return path.read_bytes()
        except FileNotFoundError as exc:
            raise BlobNotFound(sha256) from exc

    def verify(self, sha256: str) -> bool:
        """True when the stored bytes still hash to their name."""
        return sha256_bytes(self.read(sha256)) == sha256
