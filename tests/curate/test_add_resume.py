"""`kill -9` during a large `likeness add`, then the same command again: every file stored once."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time

from likeness.store.blobs import sha256_bytes
from likeness.workspace import Workspace
from tests.conftest import random_png

N_FILES = 600


def _stored(db_path) -> int:
    try:
        conn = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=5)
        try:
            return conn.execute("SELECT COUNT(*) FROM images").fetchone()[0]
        finally:
            conn.close()
    except sqlite3.Error:
        return 0


def test_sigkill_mid_add_then_rerun_stores_everything_once(tmp_path):
    inputs = tmp_path / "in"
    inputs.mkdir()
    expected = {
        sha256_bytes(random_png(inputs / f"{i:04d}.png", seed=i).read_bytes())
        for i in range(N_FILES)
    }
    Workspace.create(tmp_path / "ws", name="Kill Test").close()
    command = [sys.executable, "-m", "likeness", "-w", str(tmp_path / "ws"), "add", str(inputs)]
    env = {**os.environ, "COLUMNS": "120"}

    # 1. Start, wait until part of the batch is stored, kill without warning.
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    db_path = tmp_path / "ws" / "likeness.db"
    deadline = time.monotonic() + 120
    while _stored(db_path) < N_FILES // 10 and time.monotonic() < deadline:
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    partial = _stored(db_path)
    assert 0 < partial < N_FILES, "the kill must land mid-batch"

    # 2. The same command again finishes the job.
    rerun = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert "resuming job" in rerun.stderr

    with Workspace.open(tmp_path / "ws") as ws:
        assert ws.db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        shas = [r[0] for r in ws.db.execute("SELECT sha256 FROM images")]
        assert len(shas) == len(set(shas)) == N_FILES
        assert set(shas) == expected
        for sha in shas:
            assert ws.blobs.verify(sha)
        blob_files = [
            p for p in ws.blobs.root.rglob("*") if p.is_file() and not p.name.startswith(".tmp-")
        ]
        assert len(blob_files) == N_FILES
        job = ws.db.execute(
            "SELECT state, attempts, done, total FROM jobs WHERE kind = 'add'"
        ).fetchall()
        assert [tuple(j) for j in job] == [("done", 2, N_FILES, N_FILES)]
