"""Data shipped with Likeness: sample face photos (see samples/faces/README.md for provenance)."""

from __future__ import annotations

from pathlib import Path

SAMPLES = Path(__file__).parent / "samples"
FACES = SAMPLES / "faces"


def sample_faces() -> list[Path]:
    """The bundled face photos, sorted by name."""
    return sorted(p for p in FACES.iterdir() if p.suffix.lower() in {".jpg", ".png"})
