"""A character workspace: one folder per character holding `likeness.toml` (settings),
`likeness.db` (SQLite) and `blobs/` (content-addressed files).

Commands find the workspace from the current directory upward, like git finds its repository,
or from an explicit path.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
import sqlite3
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from likeness.config import (
    SETTINGS_FILE,
    CharacterSettings,
    Settings,
    load_settings,
    save_settings,
)
from likeness.store.blobs import BlobStore
from likeness.store.db import connect

DB_FILE = "likeness.db"
BLOBS_DIR = "blobs"
WORKSPACE_ENV = "LIKENESS_WORKSPACE"

_TRIGGER = re.compile(r"^[a-z][a-z0-9]{2,31}$")
_CLIP_VOCAB = "engines/diffusers/configs/sdxl/tokenizer/vocab.json"
# Syllables chosen so the result reads as no word in any major language.
_ONSETS = ["zq", "vr", "kx", "zh", "qv", "xv", "vk", "zk"]
_VOWELS = ["a", "e", "i", "o", "u", "y"]
_CODAS = ["x", "q", "zz", "vh", "kk", "xt"]
TRIGGER_ADVICE = (
    "a trigger should be a rare made-up token: a common word or name (e.g. 'elena') already means "
    "something to the text encoder, and that meaning fights the character's identity"
)


class WorkspaceError(RuntimeError):
    """No workspace where one was expected, or one where none should be."""


def propose_trigger(name: str) -> str:
    """A rare, pronounceable-enough token derived from the character's name (stable per name)."""
    digest = hashlib.sha256(name.encode()).digest()
    parts = [
        _ONSETS[digest[0] % len(_ONSETS)],
        _VOWELS[digest[1] % len(_VOWELS)],
        _CODAS[digest[2] % len(_CODAS)],
        _VOWELS[digest[3] % len(_VOWELS)],
        _ONSETS[digest[4] % len(_ONSETS)],
    ]
    return "".join(parts) + f"{int.from_bytes(digest[5:8]) % 1000:03d}"


@functools.cache
def _clip_words() -> frozenset[str]:
    """Whole words of the CLIP vocabulary shipped with the SDXL configs (SD1.5/SDXL/FLUX all
    tokenize prompts with it)."""
    vocab = resources.files("likeness").joinpath(_CLIP_VOCAB)
    try:
        words = json.loads(vocab.read_text(encoding="utf-8"))
    except (FileNotFoundError, OSError):
        return frozenset()
    return frozenset(w[: -len("</w>")] for w in words if w.endswith("</w>"))


def check_trigger(token: str) -> str | None:
    """A one-line reason why `token` makes a poor trigger, or None when it looks fine.

    A token the CLIP tokenizer knows as one whole word (`elena`, `woman`, even the popular
    `sks` and `ohwx`) arrives with a meaning of its own.
    """
    if not _TRIGGER.match(token):
        return (
            f"trigger {token!r} should be 3-32 lowercase letters and digits starting with a letter"
        )
    if token in _clip_words():
        return f"trigger {token!r} is a word the text encoder already knows; {TRIGGER_ADVICE}"
    return None


@dataclass
class Workspace:
    """An open workspace; close it (or use it as a context manager) to release the database."""

    root: Path
    settings: Settings
    db: sqlite3.Connection
    blobs: BlobStore

    @property
    def settings_path(self) -> Path:
        return self.root / SETTINGS_FILE

    @classmethod
    def create(
        cls, root: Path, name: str, trigger: str | None = None, class_word: str = "person"
    ) -> Workspace:
        """Make a new workspace folder (it may exist but must not hold a workspace)."""
        root = Path(root).resolve()
        if (root / SETTINGS_FILE).exists():
            raise WorkspaceError(f"{root} already holds a workspace ({SETTINGS_FILE})")
        root.mkdir(parents=True, exist_ok=True)
        settings = Settings(
            character=CharacterSettings(
                name=name, trigger=trigger or propose_trigger(name), class_word=class_word
            )
        )
        save_settings(settings, root / SETTINGS_FILE)
        return cls.open(root)

    @classmethod
    def open(cls, root: Path) -> Workspace:
        root = Path(root).resolve()
        settings_path = root / SETTINGS_FILE
        if not settings_path.is_file():
            raise WorkspaceError(
                f"{root} is not a workspace (no {SETTINGS_FILE}); run `likeness init {root}`"
            )
        settings = load_settings(settings_path)
        return cls(
            root=root,
            settings=settings,
            db=connect(root / DB_FILE),
            blobs=BlobStore(root / BLOBS_DIR),
        )

    def save_settings(self, settings: Settings) -> None:
        save_settings(settings, self.settings_path)
        self.settings = settings

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> Workspace:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def find_workspace(start: Path | None = None) -> Path:
    """The nearest folder at or above `start` (default: $LIKENESS_WORKSPACE or the current
    directory) that holds a `likeness.toml`."""
    if start is None:
        env = os.environ.get(WORKSPACE_ENV)
        start = Path(env) if env else Path.cwd()
    here = Path(start).resolve()
    for folder in (here, *here.parents):
        if (folder / SETTINGS_FILE).is_file():
            return folder
    raise WorkspaceError(
        f"no workspace at or above {here}; run `likeness init DIR --name NAME` or pass --workspace"
    )
