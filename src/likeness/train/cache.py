"""Latents and text embeddings cached in the workspace, so a second run encodes nothing twice.

Files live under ``<workspace>/cache/train/{latents,text}/ab/<key>.safetensors``; the key is the
sha256 of what determines the tensors:

- a latent: (image sha256, VAE hash, bucket size, crop rule);
- a text embedding: (caption, text-encoder + tokenizer hash, family, sequence length).

A model hash is the hash of the component's files (see :func:`likeness.train.store.
component_hash`), so another checkpoint with the same VAE reuses the latents. Files are written
to a temporary name, flushed and renamed: a kill leaves a whole file or none; a file that does
not read back is encoded again. The counters say what a run encoded and what it reused.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CROP_RULE = "cover-centre-lanczos-1"  # changes when crop_to_bucket changes what it returns


@dataclass
class CacheStats:
    """How many entries a run encoded and how many it found cached."""

    latents_encoded: int = 0
    latents_cached: int = 0
    texts_encoded: int = 0
    texts_cached: int = 0

    def to_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


def cache_key(*parts: Any) -> str:
    blob = json.dumps(parts, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    return hashlib.sha256(blob).hexdigest()


@dataclass
class TrainCache:
    """A folder of safetensors files addressed by :func:`cache_key`."""

    root: Path
    stats: CacheStats = field(default_factory=CacheStats)

    def path(self, kind: str, key: str) -> Path:
        return self.root / kind / key[:2] / f"{key}.safetensors"

    def latent_key(self, image_sha: str, vae_hash: str, bucket: tuple[int, int]) -> str:
        return cache_key("latent", image_sha, vae_hash, list(bucket), CROP_RULE)

    def text_key(self, caption: str, text_hash: str, family: str, length: int) -> str:
        return cache_key("text", caption, text_hash, family, length)

    def get_or_make(
        self, kind: str, key: str, make: Callable[[], dict[str, Any]]
    ) -> dict[str, Any]:
        """The cached tensors of ``key``, or ``make()``'s, stored first. ``kind`` is
        "latents" or "text" (it picks the counter)."""
        found = self._read(self.path(kind, key))
        if found is not None:
            self._count(kind, cached=True)
            return found
        tensors = {name: value.detach().cpu().contiguous() for name, value in make().items()}
        self._write(self.path(kind, key), tensors)
        self._count(kind, cached=False)
        # Read back what was stored: the run trains on exactly the bytes a resumed run loads.
        stored = self._read(self.path(kind, key))
        assert stored is not None
        return stored

    def _count(self, kind: str, *, cached: bool) -> None:
        name = ("latents" if kind == "latents" else "texts") + ("_cached" if cached else "_encoded")
        setattr(self.stats, name, getattr(self.stats, name) + 1)

    @staticmethod
    def _read(path: Path) -> dict[str, Any] | None:
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        if not path.is_file():
            return None
        try:
            return load_file(str(path))
        except (SafetensorError, OSError, ValueError):
            return None  # a damaged entry is encoded again

    @staticmethod
    def _write(path: Path, tensors: dict[str, Any]) -> None:
        from likeness.train.state import save_safetensors_atomic

        save_safetensors_atomic(path, tensors)
