"""What a user may pick in the browser: the shared models and the files of their own folder.

A model is a `.safetensors` file or a diffusers folder (one holding `model_index.json`). Names
are relative to the folder they were found in; the path policy resolves them back (shared
folders first, then the user's folder), so a name shown here is a name a recipe may use.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

MAX_DEPTH = 3
MODEL_SUFFIXES = (".safetensors",)


def list_models(folders: Iterable[Path], *, limit: int = 500) -> list[str]:
    """Model names under `folders` (relative to their folder), sorted, at most `limit`."""
    names: set[str] = set()
    for folder in folders:
        root = Path(folder)
        if not root.is_dir():
            continue
        for current, dirs, files in os.walk(root):
            here = Path(current)
            depth = len(here.relative_to(root).parts)
            if "model_index.json" in files and here != root:
                names.add(here.relative_to(root).as_posix())
                dirs[:] = []
                continue
            if depth >= MAX_DEPTH:
                dirs[:] = []
            dirs[:] = [d for d in dirs if not d.startswith(".")]
            for name in files:
                if name.lower().endswith(MODEL_SUFFIXES) and not name.startswith("."):
                    names.add((here / name).relative_to(root).as_posix())
            if len(names) >= limit:
                break
    return sorted(names)[:limit]
