"""`likeness score --ray`: two scoring workers (the face models loaded once in each) analyse
the images the cache does not have; the driver stores every analysis, and the scores equal
those of a local run."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from likeness.cli.main import app
from likeness.curate.ingest import Ingester
from likeness.data import FACES

OTHERS = ["obama2.jpg", "biden.jpg", "Tom_Hanks_54745.png"]


@pytest.mark.slow
def test_score_on_two_ray_workers_equals_a_local_score(ray_address, new_workspace):
    here, fanned = new_workspace("here"), new_workspace("fanned")
    for ws in (here, fanned):
        ingester = Ingester(ws, origin="synthetic")
        for name in OTHERS:
            assert ingester.ingest_file(FACES / name).status == "stored"
    runner = CliRunner()
    local = runner.invoke(app, ["-w", str(here.root), "score", "--workers", "1", "--json"])
    assert local.exit_code == 0, local.output
    ray = runner.invoke(
        app,
        [
            "-w",
            str(fanned.root),
            "score",
            "--ray",
            "local",
            "--workers",
            "2",
            "--json",
        ],  # fmt: skip
    )
    assert ray.exit_code == 0, ray.output
    assert "3 analysed, 2 from cache" in ray.stderr

    def by_name(rows: list[dict]) -> dict[str, dict]:
        return {r["sha256"]: {k: v for k, v in r.items() if k != "path"} for r in rows}

    assert by_name(json.loads(ray.stdout)) == by_name(json.loads(local.stdout))
    # The driver stored each analysis in the workspace's cache: a second run computes nothing.
    cached = fanned.db.execute("SELECT COUNT(*) FROM analyses").fetchone()[0]
    assert cached == 5
    again = runner.invoke(app, ["-w", str(fanned.root), "score", "--ray", "local", "--json"])
    assert again.exit_code == 0 and "0 analysed, 5 from cache" in again.stderr
