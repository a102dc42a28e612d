"""Silencing what native libraries print straight to file descriptor 2.

TFLite and MediaPipe announce delegates and graph options on stderr when a model starts; in a
terminal with a progress bar that is noise. Python-level warnings are unaffected.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator


@contextlib.contextmanager
def native_stderr_silenced() -> Iterator[None]:
    """Point fd 2 at /dev/null for the duration (no-op when fd 2 cannot be duplicated)."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):
        yield
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)
