"""A sweep on a tiny random-weight SDXL through the command line: killed with SIGKILL half-way,
the same command resumes it without generating or storing any image twice, and writes the
CSV, the best recipe and an HTML report that opens in Chromium."""

from __future__ import annotations

import csv
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from likeness.curate.ingest import Ingester
from likeness.data import FACES
from likeness.recipes import Recipe
from likeness.workspace import Workspace

from .conftest import screenshot

CLI = Path(__file__).with_name("cli_app.py")
SPEC = """
name = "tiny"
seeds = [1, 2]
prompts = ["portrait photo of a man"]
[base]
model = "{model}"
width = 64
height = 64
steps = 4
sampler = "euler"
scheduler = "normal"
refiner = {{ enabled = true, steps = 2, denoise = 0.3 }}
[axes]
cfg = [3.0, 6.0]
steps = [3, 4]
"""


def count(db: Path, sql: str) -> int:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
    try:
        return conn.execute(sql).fetchone()[0]
    except sqlite3.OperationalError:  # tables not created yet
        return 0
    finally:
        conn.close()


@pytest.mark.slow
def test_sweep_resumes_after_sigkill(tmp_path: Path, tiny_sdxl: Path, chromium: Path):
    root = tmp_path / "ws"
    with Workspace.create(root, name="Barack", class_word="man") as ws:
        Ingester(ws, origin="source").ingest_file(FACES / "obama.jpg")
    spec = tmp_path / "sweep.toml"
    spec.write_text(SPEC.format(model=tiny_sdxl), encoding="utf-8")
    report, table, best = tmp_path / "report", tmp_path / "cells.csv", tmp_path / "best.toml"
    cmd = [sys.executable, str(CLI), "-w", str(root), "sweep", str(spec), "--json",
           "--report", str(report), "--csv", str(table), "--best-out", str(best)]  # fmt: skip
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    db = root / "likeness.db"
    scored = "SELECT COUNT(*) FROM sweep_cells WHERE score IS NOT NULL"

    # 1. Start, and kill -9 once two of the eight cells are finished.
    proc = subprocess.Popen(
        cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    deadline = time.monotonic() + 180
    try:
        while count(db, scored) < 2:
            assert proc.poll() is None, "the sweep ended before it could be killed"
            assert time.monotonic() < deadline, "no cell finished in time"
            time.sleep(0.02)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    finished_before = count(db, scored)
    with_image_before = count(db, "SELECT COUNT(*) FROM sweep_cells WHERE image_sha IS NOT NULL")
    assert 2 <= finished_before < 8
    # Every stored image has its cell row, and the reverse: the crash split nothing.
    assert count(db, "SELECT COUNT(*) FROM images WHERE origin = 'synthetic'") == with_image_before

    # 2. The same command resumes and completes.
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    data = json.loads(done.stdout)
    assert (data["total"], data["finished"]) == (8, 8)
    assert data["generated"] == 8 - with_image_before
    assert count(db, "SELECT COUNT(*) FROM images WHERE origin = 'synthetic'") == 8
    assert count(db, "SELECT COUNT(DISTINCT image_sha) FROM sweep_cells") == 8
    assert count(db, "SELECT COUNT(*) FROM generations") == 8
    assert count(db, "SELECT attempts FROM jobs WHERE kind = 'sweep'") == 2
    assert count(db, "SELECT COUNT(*) FROM jobs WHERE kind = 'sweep' AND state = 'done'") == 1

    # 3. Outputs: ranking, CSV, best recipe, report.
    objectives = [c["objective"] for c in data["configs"]]
    assert objectives == sorted(objectives, reverse=True) and len(objectives) == 4
    with open(table, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 8 and {r["cfg"] for r in rows} == {"3.0", "6.0"}
    winner = Recipe.from_toml_file(best)
    assert {"cfg": winner.cfg, "steps": winner.steps} == data["best"]["config"]
    assert winner.prompt == "portrait photo of a man"
    assets = {p.name for p in (report / "assets").iterdir()}
    assert {"heat_cfg__steps.png", "axis_cfg.png", "axis_steps.png"} <= assets
    assert sum(name.startswith("sheet_") for name in assets) == 4
    screenshot(chromium, report / "index.html", "sweep-report-tiny")
