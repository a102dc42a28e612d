"""Fixtures: one local Ray for the whole session (2 CPUs, no dashboard, quiet), two in-process
ComfyUI test servers, a workspace whose source photos are Obama's (analyses cached once per
session) and a tiny random-weight SDXL folder.

Ray's workers get this checkout's sources first on their path (as a run with ``--ray local``
gives them), so they run the code under test whether the package is installed editable
elsewhere or not.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from likeness.curate.ingest import Ingester
from likeness.data import FACES
from likeness.workspace import Workspace

COMFY_TESTS = Path(__file__).resolve().parents[1] / "engines" / "comfyui"
sys.path.insert(0, str(COMFY_TESTS))

from fake_server import FakeComfyUI  # noqa: E402

os.environ.setdefault("HF_HUB_OFFLINE", "1")
REFERENCES = ["obama.jpg", "obama3.jpg"]


@pytest.fixture(scope="session")
def ray_address() -> Iterator[str]:
    """A local Ray (2 CPUs) shared by every test here; its GCS address lets a subprocess
    join it as a second driver (with RAY_AUTH_MODE=token, as local clusters use tokens)."""
    import ray

    from likeness.scale.cluster import quiet_driver, source_root

    path = os.pathsep.join(p for p in (source_root(), os.environ.get("PYTHONPATH")) if p)
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        logging_level=logging.ERROR,
        runtime_env={"env_vars": {"PYTHONPATH": path}},
    )
    quiet_driver(True)
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()
        quiet_driver(False)


@pytest.fixture
def servers() -> Iterator[tuple[FakeComfyUI, FakeComfyUI]]:
    """Two ComfyUI test servers on different ports (same models and nodes)."""
    with FakeComfyUI() as one, FakeComfyUI() as two:
        yield one, two


@pytest.fixture(scope="session")
def reference_analyses() -> list[tuple[str, dict]]:
    """(sha256, analysis) of the reference photos, computed once."""
    from likeness.metrics import analyze_paths

    analyses = analyze_paths([FACES / r for r in REFERENCES], workers=1)
    return [(sha, a.to_dict()) for sha, a in analyses.items()]


def make_workspace(root: Path, reference_analyses: list[tuple[str, dict]]) -> Workspace:
    """A workspace with Obama's photos as sources and their analyses in its cache."""
    from likeness.metrics import ANALYZER_NAME, Instruments
    from likeness.store.analyses import put_analysis
    from likeness.store.db import transaction

    ws = Workspace.create(root, name="Barack", class_word="man")
    ingester = Ingester(ws, origin="source")
    for name in REFERENCES:
        assert ingester.ingest_file(FACES / name).status == "stored"
    with transaction(ws.db):
        for sha, analysis in reference_analyses:
            put_analysis(ws.db, sha, ANALYZER_NAME, Instruments().version, analysis)
    return ws


@pytest.fixture
def new_workspace(tmp_path: Path, reference_analyses):
    """Makes workspaces (closed at the end): ``new_workspace("one")``."""
    made: list[Workspace] = []

    def make(name: str) -> Workspace:
        made.append(make_workspace(tmp_path / name, reference_analyses))
        return made[-1]

    yield make
    for ws in made:
        ws.close()


@pytest.fixture(scope="session")
def tiny_sdxl(tmp_path_factory) -> Path:
    from likeness.engines.diffusers.tiny import save_tiny_pipeline

    return save_tiny_pipeline("sdxl", tmp_path_factory.mktemp("models") / "tiny-sdxl")


def pixels(path: Path) -> str:
    """sha256 of an image's decoded RGB pixels (PNG bytes differ by their timings)."""
    from PIL import Image

    with Image.open(io.BytesIO(path.read_bytes())) as img:
        return hashlib.sha256(img.convert("RGB").tobytes()).hexdigest()
