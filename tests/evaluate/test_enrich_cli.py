"""`likeness dataset coverage`, `likeness enrich plan` and `likeness enrich` through the command
line, with the edit photo engine in place of an edit model: JSON shapes, tables, an edited
plan, the before/after report, refusals before any work, a real tiny InstructPix2Pix, and a
run killed with SIGKILL that the same command resumes without storing anything twice."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest
from typer.testing import CliRunner

from likeness.cli.main import app
from likeness.curate.ingest import Ingester
from likeness.evaluate.enrich_plan import default_instruction
from likeness.store.images import list_images

from .conftest import screenshot
from .edit_engine import EditPhotoEngine
from .photo_engine import photo_png
from .test_sweep_tiny import count

runner = CliRunner()
ENRICH_APP = Path(__file__).with_name("enrich_app.py")


@pytest.fixture
def edit_engine(monkeypatch):
    engine = EditPhotoEngine()
    monkeypatch.setattr("likeness.cli.enrich.build_edit_engine", lambda *a, **k: engine)
    return engine


def invoke(ws, *args):
    return runner.invoke(app, ["--workspace", str(ws.root), *args], env={"COLUMNS": "200"})


def sources(ws) -> dict[str, str]:
    return {r.original_name: r.sha256 for r in list_images(ws.db, origins=["source"])}


def write_recipe(ws) -> None:
    (ws.root / "edit.toml").write_text('model = "photos"\nsteps = 1\nmax_side = 512\n')


def test_dataset_coverage_counts_the_grid(face_ws):
    ingester = Ingester(face_ws, origin="synthetic")
    for name in ("obama_partial_face.jpg", "obama_partial_face2.jpg", "biden.jpg"):
        assert ingester.ingest_bytes(photo_png(name), name=name).status != "rejected"
    result = invoke(face_ws, "dataset", "coverage", "--origin", "source", "--origin",
                    "synthetic", "--thin", "2", "--json")  # fmt: skip
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["selection"] == {"label": "origin source, synthetic", "dataset": None,
                                 "origins": ["source", "synthetic"]}  # fmt: skip
    assert data["angles"] == ["front", "half_left", "profile_left", "half_right", "profile_right"]
    assert data["expressions"] == ["neutral", "smiling", "angry", "sad"]
    cells = {(c["angle"], c["expression"]): c for c in data["cells"]}
    assert len(cells) == 20 and data["images"] == 5 and data["thin_below"] == 2
    # obama.jpg and obama_partial_face: front and smiling; enough at --thin 2.
    assert (
        cells[("front", "smiling")]["count"] == 2 and cells[("front", "smiling")]["state"] == "ok"
    )
    # obama_partial_face2 (Obama) and biden (someone else) are both half_right: coverage
    # counts views, not identity.
    right = cells[("half_right", "smiling")]["count"] + cells[("half_right", "neutral")]["count"]
    assert right == 2
    assert cells[("profile_left", "sad")] == {"angle": "profile_left", "expression": "sad",
                                               "count": 0, "state": "empty", "images": []}  # fmt: skip
    off = sum(data["off_grid"].values())
    assert data["counted"] + off == 5
    assert data["empty"] == sum(c["state"] == "empty" for c in data["cells"])
    assert {p["sha256"] for p in data["placements"]} == {r.sha256 for r in list_images(face_ws.db)}

    # A dataset version, and the table.
    assert invoke(face_ws, "dataset", "create", "extra", "--origin", "synthetic").exit_code == 0
    table = invoke(face_ws, "dataset", "coverage", "extra@v1")
    assert table.exit_code == 0, table.output
    assert "coverage of extra@v1" in table.stdout and "0 empty" in table.stdout
    assert "thin (fewer than 3)" in table.stdout
    version = json.loads(invoke(face_ws, "dataset", "coverage", "extra", "--json").stdout)
    assert version["selection"]["dataset"] == "extra@v1" and version["images"] == 3
    # Refusals.
    unknown = invoke(face_ws, "dataset", "coverage", "nope")
    assert unknown.exit_code == 2 and "nope" in unknown.stderr
    both = invoke(face_ws, "dataset", "coverage", "extra", "--origin", "source")
    assert both.exit_code == 2 and "not both" in both.stderr


def test_plan_is_written_edited_and_run_with_a_report(face_ws, edit_engine, tmp_path):
    write_recipe(face_ws)
    src = sources(face_ws)
    plan_file = tmp_path / "plan.toml"
    made = invoke(face_ws, "enrich", "plan", "--out", str(plan_file), "-n", "1", "--json")
    assert made.exit_code == 0, made.output
    data = json.loads(made.stdout)
    assert data["out"] == str(plan_file) and data["plan"]["per_source"] == 1
    empty = [(c["angle"], c["expression"]) for c in data["coverage"]["cells"]
             if c["state"] == "empty"]  # fmt: skip
    planned = [(e["angle"], e["expression"]) for e in data["plan"]["edits"]]
    assert planned == empty[:2]  # one edit per source: the first two empty cells
    assert invoke(face_ws, "enrich", "plan", "--out", str(plan_file)).exit_code == 2  # exists

    # The user edits the plan: the first edit asks for a half turn to the right instead.
    text = plan_file.read_text()
    parsed = tomllib.loads(text)
    first = parsed["edits"][0]
    text = text.replace(f'angle = "{first["angle"]}"', 'angle = "half_right"', 1)
    text = text.replace(f'expression = "{first["expression"]}"', 'expression = "smiling"', 1)
    text = text.replace(
        json.dumps(first["instruction"]),
        json.dumps(default_instruction("half_right", None) + ", same smile"),
        1,
    )
    plan_file.write_text(text)
    report = tmp_path / "report"
    args = ["enrich", "--plan", str(plan_file), "--report", str(report), "--json"]
    ran = invoke(face_ws, *args)
    assert ran.exit_code == 0, ran.output
    result = json.loads(ran.stdout)
    assert result["plan"]["origin"] == str(plan_file) and result["edits_planned"] == 2
    verdicts = {(e["angle"], e["expression"]): e for e in result["edits"]}
    kept = verdicts[("half_right", "smiling")]
    assert kept["verdict"] == "kept" and kept["source"] == src["obama.jpg"]
    assert kept["measured_angle"] == "half_right" and kept["pass"] is True
    assert (
        kept["instruction"].endswith("same smile")
        and edit_engine.calls[0][0] == kept["instruction"]
    )
    assert result["kept"] == 1 and result["made"] == 2
    cells = {(c["angle"], c["expression"]): c for c in result["coverage"]["cells"]}
    assert cells[("half_right", "smiling")]["images"] == [kept["image_sha"]]
    assert result["report"] == str(report / "index.html")
    assert (report / "sheet.png").is_file() and len(list((report / "thumbs").iterdir())) == 4
    page = (report / "index.html").read_text()
    assert "kept" in page and "rejected" in page

    # The same command again: nothing new is made; the table names the verdicts.
    again = invoke(face_ws, "enrich", "--plan", str(plan_file))
    assert again.exit_code == 0, again.output
    assert "1 kept" in again.stdout and "coverage of origin source" in again.stdout
    assert len(edit_engine.calls) == 2


def test_auto_plan_run_and_report_in_chromium(face_ws, edit_engine, tmp_path, chromium):
    write_recipe(face_ws)
    report = tmp_path / "report"
    ran = invoke(face_ws, "enrich", "-n", "2", "--report", str(report), "--json")
    assert ran.exit_code == 0, ran.output
    data = json.loads(ran.stdout)
    assert data["plan"]["origin"] == "auto" and data["edits_planned"] == 4
    assert data["kept"] + data["rejected"] + data["failed"] == 4
    assert all(e["reasons"] for e in data["edits"] if e["verdict"] != "kept")
    screenshot(chromium, report / "index.html", "enrich-report")


def test_enrich_refuses_before_any_work(face_ws, tmp_path, monkeypatch):
    no_recipe = invoke(face_ws, "enrich")
    assert no_recipe.exit_code == 2 and "no edit recipe" in no_recipe.stderr
    write_recipe(face_ws)
    comfy = invoke(face_ws, "enrich", "--engine", "comfyui")
    assert comfy.exit_code == 2 and "has no instruction-edit model" in comfy.stderr
    # The real engine builder: a model folder that is not there is named before any edit.
    missing = invoke(face_ws, "enrich")
    assert missing.exit_code == 2 and "edit recipe: edit_model: 'photos'" in missing.stderr
    assert face_ws.db.execute("SELECT COUNT(*) FROM jobs WHERE kind = 'enrich'").fetchone()[0] == 0
    bad_plan = tmp_path / "plan.toml"
    bad_plan.write_text('[[edits]]\nsource = "ffffffffff"\n')
    monkeypatch.setattr("likeness.cli.enrich.build_edit_engine", lambda *a, **k: EditPhotoEngine())
    refused = invoke(face_ws, "enrich", "--plan", str(bad_plan))
    assert refused.exit_code == 2 and "matches no stored image" in refused.stderr


@pytest.mark.slow
def test_a_real_edit_model_runs_and_its_noise_is_rejected(face_ws, tmp_path):
    from likeness.engines.diffusers.tiny import save_tiny_pipeline

    model = save_tiny_pipeline("instruct_pix2pix", tmp_path / "p2p")
    recipe = tmp_path / "edit.toml"
    recipe.write_text(f'model = "{model}"\nsteps = 2\nmax_side = 64\nseed = 5\n')
    obama = sources(face_ws)["obama.jpg"]
    plan = tmp_path / "plan.toml"
    plan.write_text(f'[[edits]]\nsource = "{obama}"\nangle = "half_left"\n')
    ran = invoke(face_ws, "enrich", "--plan", str(plan), "--recipe", str(recipe), "--json")
    assert ran.exit_code == 0, ran.output
    (edit,) = json.loads(ran.stdout)["edits"]
    assert edit["verdict"] == "rejected" and "identity: no face found" in edit["reasons"]
    row = face_ws.db.execute("SELECT provenance, seed FROM enrich_edits").fetchone()
    prov = json.loads(row[0])
    assert prov["edit"]["model"]["pipeline"] == "StableDiffusionInstructPix2PixPipeline"
    assert prov["edit"]["input_size"][0] <= 64 and row[1] == "5"
    assert face_ws.blobs.exists(edit["result_sha"])


@pytest.mark.slow
def test_enrich_resumes_after_sigkill_and_stores_nothing_twice(face_ws, tmp_path):
    write_recipe(face_ws)
    src = sources(face_ws)
    obama, obama3 = src["obama.jpg"], src["obama3.jpg"]
    edits = [
        (obama, "half_right", "smiling"),  # Obama turned right: kept
        (obama3, "front", "smiling"),  # Obama smiling: kept
        (obama, "front", "angry"),  # Biden: rejected
        (obama, "profile_right", "smiling"),  # the head did not turn: rejected
        (obama3, "half_left", "smiling"),  # turned, not smiling: rejected
        (obama, "half_left", "smiling"),  # the same: rejected
    ]
    lines = []
    for sha, angle, expression in edits:
        lines += ["[[edits]]", f'source = "{sha}"', f'angle = "{angle}"',
                  f'expression = "{expression}"', ""]  # fmt: skip
    plan = tmp_path / "plan.toml"
    plan.write_text("\n".join(lines))
    cmd = [sys.executable, str(ENRICH_APP), "-w", str(face_ws.root), "enrich", "--plan",
           str(plan), "--json"]  # fmt: skip
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "LIKENESS_TEST_EDIT_DELAY": "0.6"}
    db = face_ws.root / "likeness.db"
    rows = "SELECT COUNT(*) FROM enrich_edits"

    # 1. Start, and kill -9 once two edits are decided.
    proc = subprocess.Popen(
        cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    deadline = time.monotonic() + 180
    try:
        while count(db, rows) < 2:
            assert proc.poll() is None, "enrich ended before it could be killed"
            assert time.monotonic() < deadline, "no edit was decided in time"
            time.sleep(0.02)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    decided = count(db, rows)
    assert 2 <= decided < len(edits)
    kept_before = count(db, "SELECT COUNT(*) FROM images WHERE origin = 'enriched'")
    # Every kept row has its image and every enriched image its row: the kill split nothing.
    assert kept_before == count(db, "SELECT COUNT(*) FROM enrich_edits WHERE verdict = 'kept'")

    # 2. The same command resumes the same job and completes it.
    env["LIKENESS_TEST_EDIT_DELAY"] = "0"
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    data = json.loads(done.stdout)
    assert data["resumed"] is True and data["made"] == len(edits) - decided
    assert [e["verdict"] for e in data["edits"]] == ["kept", "kept", *["rejected"] * 4]
    assert count(db, rows) == len(edits)
    assert count(db, "SELECT COUNT(*) FROM images WHERE origin = 'enriched'") == 2
    assert count(db, "SELECT COUNT(DISTINCT image_sha) FROM enrich_edits") == 2
    assert count(db, "SELECT attempts FROM jobs WHERE kind = 'enrich'") == 2
    assert count(db, "SELECT COUNT(*) FROM jobs WHERE kind = 'enrich' AND state = 'done'") == 1
    assert count(db, "SELECT COUNT(*) FROM jobs WHERE kind = 'enrich'") == 1
