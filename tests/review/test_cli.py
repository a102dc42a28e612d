"""`likeness review` commands through Typer's CliRunner."""

from __future__ import annotations

import json
import re

import pytest
import uvicorn
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from likeness.cli import review
from likeness.review import decisions as dec
from likeness.store.db import connect
from likeness.workspace import DB_FILE, WORKSPACE_ENV

runner = CliRunner()


@pytest.fixture
def decided(review_ws, monkeypatch):
    monkeypatch.setenv(WORKSPACE_ENV, str(review_ws.root))
    conn = connect(review_ws.root / DB_FILE)
    try:
        dec.decide(conn, review_ws.candidates[0], "accepted", reviewer="ana")
        dec.decide(conn, review_ws.candidates[1], "accepted", reviewer="ana")
        dec.decide(conn, review_ws.candidates[2], "rejected", reviewer="ana", tags=["bad_hands"])
    finally:
        conn.close()
    return review_ws


def test_to_dataset_command(decided):
    result = runner.invoke(review.app, ["to-dataset", "mara", "--note", "pass 1", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["ref"] == "mara@v1" and data["count"] == 2 and data["note"] == "pass 1"
    assert {r["sha256"] for r in data["reviews"]} == set(decided.candidates[:2])
    again = runner.invoke(review.app, ["to-dataset", "mara"])
    assert again.exit_code == 0 and "mara@v2" in again.stdout and "parent v1" in again.stdout


def test_to_dataset_without_accepted_images_fails_clearly(review_ws, monkeypatch):
    monkeypatch.setenv(WORKSPACE_ENV, str(review_ws.root))
    result = runner.invoke(review.app, ["to-dataset", "mara"])
    assert result.exit_code == 2 and "no accepted images" in result.stderr


def test_corrections_command(decided, tmp_path):
    out = tmp_path / "corrections.jsonl"
    result = runner.invoke(review.app, ["corrections", str(out), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["count"] == 1
    record = json.loads(out.read_text())
    assert record["sha256"] == decided.candidates[2] and record["tags"] == ["bad_hands"]


def test_serving_beyond_loopback_requires_the_printed_token(review_ws, monkeypatch):
    monkeypatch.setenv(WORKSPACE_ENV, str(review_ws.root))
    served = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: served.update(app=app, **kw))
    result = runner.invoke(review.app, ["--host", "0.0.0.0", "--port", "9911", "--no-warm"])
    assert result.exit_code == 0, result.output
    assert served["host"] == "0.0.0.0" and served["port"] == 9911
    token = re.search(r"\?token=(\S+)", result.stdout).group(1)
    with TestClient(served["app"], base_url="http://10.0.0.5:9911") as c:
        assert c.get("/api/counts").status_code == 401
        assert c.get("/api/counts", headers={"X-Likeness-Token": token}).status_code == 200


def test_serving_on_loopback_needs_no_token(review_ws, monkeypatch):
    monkeypatch.setenv(WORKSPACE_ENV, str(review_ws.root))
    served = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: served.update(app=app, **kw))
    result = runner.invoke(review.app, ["--no-warm"])
    assert result.exit_code == 0, result.output
    assert served["host"] == "127.0.0.1" and served["port"] == 8765
    assert "token" not in result.stdout
    with TestClient(served["app"], base_url="http://127.0.0.1:8765") as c:
        assert c.get("/api/counts").status_code == 200


@pytest.mark.parametrize(
    ("args", "phrase"),
    [
        (["--help"], "Review candidates in the browser"),
        (["to-dataset", "--help"], "next version of a dataset"),
        (["corrections", "--help"], "rejected images"),
    ],
)
def test_every_command_has_help(args, phrase):
    result = runner.invoke(review.app, args)
    assert result.exit_code == 0
    assert phrase in " ".join(result.stdout.split())


def test_serving_warms_the_queue_thumbnails(review_ws):
    from likeness.review import create_app

    review._warm_thumbnails(create_app(review_ws.root))
    made = sorted(p.name for p in (review_ws.root / "cache" / "thumbs").iterdir())
    everything = len(review_ws.candidates) + len(review_ws.sources)
    assert len(made) == everything and all(name.endswith("_256.webp") for name in made)
