"""`likeness` with the edit photo engine in place of an edit model, for subprocess tests.

Run as a script: `python tests/evaluate/enrich_app.py --workspace WS enrich --plan P.toml`;
each edit waits LIKENESS_TEST_EDIT_DELAY seconds (default 0), so a test can kill it mid-run.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from likeness.cli import enrich as enrich_cli  # noqa: E402
from likeness.cli.main import app  # noqa: E402
from tests.evaluate.edit_engine import EditPhotoEngine  # noqa: E402


def _engine(*args: object, **kwargs: object) -> EditPhotoEngine:
    return EditPhotoEngine(delay=float(os.environ.get("LIKENESS_TEST_EDIT_DELAY", "0")))


enrich_cli.build_edit_engine = _engine  # type: ignore[assignment]

if __name__ == "__main__":
    app()
