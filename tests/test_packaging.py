"""Every file the package reads at run time ships in the wheel: the package-data globs of
pyproject.toml cover each non-Python file under src/likeness."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "likeness"


def test_package_data_covers_every_data_file():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    globs = config["tool"]["setuptools"]["package-data"]["likeness"]
    shipped = {p for g in globs for p in PACKAGE.glob(g) if p.is_file()}
    data = [
        p
        for p in PACKAGE.rglob("*")
        if p.is_file() and p.suffix not in (".py", ".pyc") and "__pycache__" not in p.parts
    ]
    assert data
    assert sorted(str(p.relative_to(PACKAGE)) for p in data if p not in shipped) == []
