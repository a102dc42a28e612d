"""Imported by the scoring pipeline's fork server, once: it imports the analysis libraries
(those they import lazily too) and loads the default dlib models into the process-wide cache,
so every worker forked from the server starts with them in memory instead of spending about a
second loading its own.

Nothing here starts a thread (MediaPipe builds its graph, and its threads, in each worker).
"""

from __future__ import annotations

import contextlib
import importlib.util

import cv2  # noqa: F401
import imagehash  # noqa: F401
import scipy.fftpack  # noqa: F401  (imagehash imports it on the first pHash: 0.4-0.7 s a worker)

from likeness.faces import FaceModelMissing
from likeness.faces.dlib_backend import dlib_model_dir, load_models
from likeness.metrics import analysis  # noqa: F401

with contextlib.suppress(FaceModelMissing, ImportError, RuntimeError):
    load_models(dlib_model_dir())
for optional in ("ai_edge_litert.interpreter", "mediapipe"):
    with contextlib.suppress(Exception):
        if importlib.util.find_spec(optional.split(".")[0]) is not None:
            importlib.import_module(optional)
