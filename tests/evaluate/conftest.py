"""Fixtures: workspaces whose source photos are Obama's, real-photo analyses computed once per
session, a tiny random-weight SDXL folder, and Chromium screenshots of reports."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from likeness.curate.ingest import Ingester
from likeness.data import FACES
from likeness.workspace import Workspace

from .photo_engine import photo_png

os.environ.setdefault("HF_HUB_OFFLINE", "1")

REFERENCES = ["obama.jpg", "obama3.jpg"]
SERVED = ["obama.jpg", "obama2.jpg", "obama3.jpg", "obama_partial_face.jpg",
          "obama_partial_face2.jpg", "biden.jpg", "Tom_Hanks_54745.png", "t1.jpg"]  # fmt: skip
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking"]  # fmt: skip
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"


@pytest.fixture(scope="session")
def instruments():
    from likeness.metrics import Instruments

    return Instruments()


@pytest.fixture(scope="session")
def photo_analyses(tmp_path_factory, instruments) -> list[tuple[str, dict]]:
    """(sha256, analysis) of every served PNG and every reference file, computed once."""
    from likeness.metrics import score_images

    folder = tmp_path_factory.mktemp("served")
    paths = []
    for name in SERVED:
        path = folder / (Path(name).stem + ".png")
        path.write_bytes(photo_png(name))
        paths.append(path)
    run = score_images(paths, [FACES / r for r in REFERENCES], instruments=instruments, workers=2)
    return [(sha, a.to_dict()) for sha, a in run.analyses.items()]


@pytest.fixture
def face_ws(tmp_path: Path, photo_analyses, instruments) -> Iterator[Workspace]:
    """A workspace whose source photos are obama.jpg and obama3.jpg, with the analyses of
    every sample photo already in its cache (so a test pays no dlib time)."""
    from likeness.metrics import ANALYZER_NAME
    from likeness.store.analyses import put_analysis
    from likeness.store.db import transaction

    ws = Workspace.create(tmp_path / "ws", name="Barack", class_word="man")
    ingester = Ingester(ws, origin="source")
    for name in REFERENCES:
        assert ingester.ingest_file(FACES / name).status == "stored"
    with transaction(ws.db):
        for sha, analysis in photo_analyses:
            put_analysis(ws.db, sha, ANALYZER_NAME, instruments.version, analysis)
    yield ws
    ws.close()


@pytest.fixture
def scorer(face_ws, instruments):
    from likeness.evaluate.scorer import WorkspaceScorer

    return WorkspaceScorer(face_ws, instruments=instruments)


@pytest.fixture(scope="session")
def tiny_sdxl(tmp_path_factory) -> Path:
    from likeness.engines.diffusers.tiny import save_tiny_pipeline

    return save_tiny_pipeline("sdxl", tmp_path_factory.mktemp("models") / "tiny-sdxl")


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture(scope="session")
def chromium() -> Path:
    """Debian chromium, installed with apt-get when missing (skip only if that fails)."""
    import subprocess

    for command in (["apt-get", "update"], ["apt-get", "install", "-y", "chromium"]):
        if CHROMIUM.exists():
            break
        subprocess.run(command, check=False, capture_output=True)
    if not CHROMIUM.exists():
        pytest.skip("chromium is not installed and apt-get could not install it")
    return CHROMIUM


def screenshot(chromium: Path, index: Path, name: str) -> Path:
    """Open a report in Chromium, check it rendered its images, save a full-page screenshot."""
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    out = ARTIFACTS / f"{name}.png"
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=str(chromium), headless=True, args=CHROMIUM_ARGS
        )
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto(index.resolve().as_uri())
            page.wait_for_load_state("load")
            broken = page.evaluate(
                "Array.from(document.images).filter(i => !i.complete || i.naturalWidth === 0)"
                ".map(i => i.src)"
            )
            count = page.evaluate("document.images.length")
            title = page.title()
            page.screenshot(path=str(out), full_page=True)
        finally:
            browser.close()
    assert not errors, errors
    assert count > 0 and not broken, f"{index}: broken images {broken}"
    assert title
    return out
