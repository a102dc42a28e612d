"""Sweeps, cards and `generate -n` over two ComfyUI test servers on a local Ray: the results
equal a one-server run, a server that stops mid-run leaves its cells to the other, a server
without the model is left out in one line, and a driver killed with SIGKILL resumes with the
same command without storing anything twice."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from likeness.cli.main import app
from likeness.config import ScaleSettings
from likeness.engines.comfyui import ComfyUIEngine
from likeness.evaluate.card import run_card
from likeness.evaluate.card_spec import card_spec_from_dict
from likeness.evaluate.scorer import WorkspaceScorer
from likeness.evaluate.sweep import run_sweep
from likeness.evaluate.sweep_spec import spec_from_dict
from likeness.recipes import Recipe
from likeness.scale.cluster import source_root
from likeness.scale.engines import build_engine_pool

from .conftest import FakeComfyUI, pixels

BASE = {"engine": "comfyui", "model": "tiny_sd15_slim.safetensors", "family": "sd15",
        "width": 64, "height": 64, "steps": 3, "refiner": {"enabled": False}}  # fmt: skip
SPEC = {"name": "fan", "seeds": [1, 2, 3, 4], "prompts": ["portrait photo of a man"],
        "base": BASE, "axes": {"cfg": [3.0, 5.0]}}  # fmt: skip


def cell_pixels(ws) -> dict[str, str]:
    rows = ws.db.execute("SELECT cell_key, image_sha FROM sweep_cells").fetchall()
    return {r["cell_key"]: pixels(ws.blobs.path(r["image_sha"])) for r in rows}


def workers_of(ws) -> list[str | None]:
    rows = ws.db.execute(
        "SELECT json_extract(provenance, '$.worker.name') FROM generations ORDER BY rowid"
    ).fetchall()
    return [r[0] for r in rows]


def count(ws, sql: str) -> int:
    return ws.db.execute(sql).fetchone()[0]


def test_a_sweep_on_two_servers_equals_a_one_server_sweep(ray_address, servers, new_workspace):
    one, two = servers
    spec = spec_from_dict(SPEC)
    here, fanned = new_workspace("here"), new_workspace("fanned")
    engine = ComfyUIEngine(one.url)
    try:
        expected = run_sweep(here, spec, engine, WorkspaceScorer(here))
    finally:
        engine.close()
    pool = build_engine_pool("comfyui", ScaleSettings(), comfy_urls=[one.url, two.url])
    try:
        result = run_sweep(fanned, spec, pool, WorkspaceScorer(fanned))
        stats = pool.stats()
    finally:
        pool.close()
    # 1. Same images (pixels; the PNGs differ by timings and worker), same ranking.
    assert (result.total, result.finished, result.generated) == (8, 8, 8)
    assert cell_pixels(fanned) == cell_pixels(here) and len(cell_pixels(here)) == 8
    ranking = [(c.config_key, round(c.objective, 6), c.failed) for c in result.configs]
    assert ranking == [(c.config_key, round(c.objective, 6), c.failed) for c in expected.configs]
    # 2. Both servers worked; each image names its worker, in the database and in the PNG.
    assert len(workers_of(fanned)) == 8 and set(workers_of(fanned)) == {"w1", "w2"}
    assert workers_of(here) == [None] * 8
    assert sum(s.done for s in stats) == 8 and all(s.done for s in stats)
    sha = fanned.db.execute("SELECT image_sha FROM sweep_cells LIMIT 1").fetchone()[0]
    from likeness.pnginfo import read_pnginfo

    inside = read_pnginfo(fanned.blobs.path(sha)).provenance["worker"]
    assert inside["url"] in (one.url, two.url) and inside["name"] in ("w1", "w2")
    # 3. `likeness jobs ID` shows which worker made each output.
    job = count(fanned, "SELECT id FROM jobs WHERE kind = 'sweep'")
    shown = CliRunner().invoke(app, ["-w", str(fanned.root), "jobs", str(job), "--json"])
    assert shown.exit_code == 0, shown.output
    outputs = json.loads(shown.stdout)["outputs"]
    assert len(outputs) == 8
    assert {o["worker"]["url"] for o in outputs} == {one.url, two.url}
    table = CliRunner().invoke(app, ["-w", str(fanned.root), "jobs", str(job)])
    assert "w1" in table.output and "w2" in table.output


def test_a_server_that_stops_mid_run_leaves_its_cells_to_the_other(ray_address, new_workspace):
    ws = new_workspace("ws")
    notices: list[str] = []
    with FakeComfyUI(step_delay=0.1) as one, FakeComfyUI(step_delay=0.1) as two:
        pool = build_engine_pool(
            "comfyui", ScaleSettings(), comfy_urls=[one.url, two.url], on_notice=notices.append
        )

        def stop_two(done, total, cell, result):
            if done == 1:
                two.stop()

        try:
            result = run_sweep(
                ws, spec_from_dict(SPEC), pool, WorkspaceScorer(ws), progress=stop_two
            )
        finally:
            pool.close()
    assert (result.total, result.finished) == (8, 8)
    assert count(ws, "SELECT COUNT(*) FROM sweep_cells WHERE image_sha IS NOT NULL") == 8
    assert count(ws, "SELECT COUNT(*) FROM images WHERE origin = 'synthetic'") == 8
    assert count(ws, "SELECT COUNT(*) FROM generations") == 8
    assert count(ws, "SELECT COUNT(DISTINCT image_sha) FROM sweep_cells") == 8
    lost = [n for n in notices if n.startswith(f"worker w2 ({two.url}) lost: ")]
    assert len(lost) == 1 and "stopped answering" in lost[0] and "\n" not in lost[0]
    assert workers_of(ws).count("w1") >= 6


def test_a_server_without_the_model_is_left_out_in_one_line(ray_address, new_workspace):
    ws = new_workspace("ws")
    notices: list[str] = []
    with FakeComfyUI() as one, FakeComfyUI(models={"checkpoints": ["other.safetensors"]}) as two:
        pool = build_engine_pool(
            "comfyui", ScaleSettings(), comfy_urls=[one.url, two.url], on_notice=notices.append
        )
        try:
            result = run_sweep(ws, spec_from_dict(SPEC), pool, WorkspaceScorer(ws))
        finally:
            pool.close()
    assert notices == [
        f"worker w2 ({two.url}) left out: cannot run the recipe: missing model file "
        "'tiny_sd15_slim.safetensors' for CheckpointLoaderSimple.ckpt_name (slot 'checkpoint'): "
        "copy it into models/checkpoints on the server; it has: other.safetensors; "
        "the others go on"
    ]
    assert (result.total, result.finished) == (8, 8)
    assert set(workers_of(ws)) == {"w1"}


def test_a_card_on_two_servers_records_the_attempts_of_a_one_server_card(
    ray_address, servers, new_workspace
):
    one, two = servers
    spec = card_spec_from_dict(
        {
            "name": "three",
            "shots": [
                {
                    "id": "front",
                    "kind": "portrait",
                    "prompt": "portrait of a {class_word}",
                    "angle": "front",
                    "expression": "neutral",
                },
                {
                    "id": "smile",
                    "kind": "portrait",
                    "prompt": "smiling {class_word}",
                    "expression": "smiling",
                },
                {
                    "id": "stand",
                    "kind": "body",
                    "prompt": "a {class_word} standing",
                    "body_pose": "standing",
                },
            ],
        }  # fmt: skip
    )
    recipe = Recipe.from_dict({**BASE, "prompt": "x", "seed": 5})
    here, fanned = new_workspace("here"), new_workspace("fanned")
    engine = ComfyUIEngine(one.url)
    try:
        expected = run_card(here, spec, recipe, engine, WorkspaceScorer(here), label="v1", tries=2)
    finally:
        engine.close()
    pool = build_engine_pool("comfyui", ScaleSettings(), comfy_urls=[one.url, two.url])
    try:
        result = run_card(fanned, spec, recipe, pool, WorkspaceScorer(fanned), label="v1", tries=2)
    finally:
        pool.close()

    def attempts(card):
        return [
            (s.shot.id, [(a.attempt, a.passed, a.reasons) for a in s.attempts]) for s in card.shots
        ]

    assert attempts(result) == attempts(expected)
    assert sum(len(s.attempts) for s in result.shots) == 6  # solid colours: no face, 2 tries
    assert result.complete and result.first_try_rate == expected.first_try_rate
    assert set(workers_of(fanned)) == {"w1", "w2"}


def test_generate_n_on_the_servers_of_the_scale_settings_stores_every_image_once(
    ray_address, servers, tmp_path
):
    one, two = servers
    runner = CliRunner()
    root = tmp_path / "ws"
    assert runner.invoke(app, ["init", str(root), "--name", "Nobody"]).exit_code == 0
    toml = root / "likeness.toml"
    text = toml.read_text(encoding="utf-8")
    toml.write_text(
        text.replace("comfy_urls = []", f'comfy_urls = ["{one.url}", "{two.url}"]'),
        encoding="utf-8",
    )
    args = ["-w", str(root), "generate", "-n", "5", "--engine", "comfyui", "--no-score",
            "--json", "--set", "model=tiny_sd15_slim.safetensors", "--set", "family=sd15",
            "--set", "width=64", "--set", "height=64", "--set", "steps=3",
            "--set", "refiner.enabled=false", "--set", "seed=40"]  # fmt: skip
    done = runner.invoke(app, args)
    assert done.exit_code == 0, done.output
    data = json.loads(done.stdout)
    assert [r["seed"] for r in data["images"]] == [40, 41, 42, 43, 44]
    # Solid colours look alike to the perceptual hashes: stored, marked near duplicates.
    assert all(r["status"] in ("stored", "near_duplicate") for r in data["images"])
    assert len({r["sha256"] for r in data["images"]}) == 5
    shown = runner.invoke(app, ["-w", str(root), "jobs", str(data["job"]), "--json"])
    outputs = json.loads(shown.stdout)["outputs"]
    assert {o["worker"]["url"] for o in outputs} == {one.url, two.url}
    assert sorted(o["seed"] for o in outputs) == [40, 41, 42, 43, 44]
    assert db_count(root / "likeness.db", "SELECT COUNT(*) FROM generations") == 5


# Copied from tests.evaluate.test_sweep_tiny.count
def db_count(db: Path, sql: str) -> int:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
    try:
        return conn.execute(sql).fetchone()[0]
    except sqlite3.OperationalError:  # tables not created yet
        return 0
    finally:
        conn.close()


@pytest.mark.slow
def test_a_driver_killed_with_sigkill_resumes_without_duplicates(
    ray_address, new_workspace, tmp_path
):
    ws = new_workspace("ws")
    root = ws.root
    ws.close()
    spec = tmp_path / "sweep.toml"
    spec.write_text(
        'name = "fan"\nseeds = [1, 2, 3, 4]\nprompts = ["portrait photo of a man"]\n'
        '[base]\nengine = "comfyui"\nmodel = "tiny_sd15_slim.safetensors"\nfamily = "sd15"\n'
        "width = 64\nheight = 64\nsteps = 3\nrefiner = { enabled = false }\n"
        "[axes]\ncfg = [3.0, 5.0]\n",
        encoding="utf-8",
    )
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "RAY_AUTH_MODE": "token",  # the session's local Ray uses a token (~/.ray/auth_token)
        "PYTHONPATH": os.pathsep.join([source_root(), os.environ.get("PYTHONPATH", "")]),
    }
    db = root / "likeness.db"
    scored = "SELECT COUNT(*) FROM sweep_cells WHERE score IS NOT NULL"
    with FakeComfyUI(step_delay=0.2) as one, FakeComfyUI(step_delay=0.2) as two:
        cmd = [sys.executable, "-m", "likeness", "-w", str(root), "sweep", str(spec), "--json",
               "--comfy-url", one.url, "--comfy-url", two.url, "--ray", ray_address]  # fmt: skip
        # 1. Start, and kill -9 the driver once two of the eight cells are finished.
        proc = subprocess.Popen(
            cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True,
        )  # fmt: skip
        deadline = time.monotonic() + 120
        try:
            while db_count(db, scored) < 2:
                assert proc.poll() is None, "the sweep ended before it could be killed"
                assert time.monotonic() < deadline, "no cell finished in time"
                time.sleep(0.02)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        assert proc.returncode == -signal.SIGKILL
        with_image = db_count(db, "SELECT COUNT(*) FROM sweep_cells WHERE image_sha IS NOT NULL")
        assert db_count(db, scored) >= 2 and with_image < 8
        synthetic = "SELECT COUNT(*) FROM images WHERE origin = 'synthetic'"
        assert db_count(db, synthetic) == with_image
        # 2. The same command resumes and completes.
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-2000:]
    data = json.loads(done.stdout)
    assert (data["total"], data["finished"], data["generated"]) == (8, 8, 8 - with_image)
    assert db_count(db, synthetic) == 8
    assert db_count(db, "SELECT COUNT(*) FROM generations") == 8
    assert db_count(db, "SELECT COUNT(DISTINCT image_sha) FROM sweep_cells") == 8
    assert db_count(db, "SELECT attempts FROM jobs WHERE kind = 'sweep'") == 2
    assert db_count(db, "SELECT COUNT(*) FROM jobs WHERE state = 'done'") == 1
