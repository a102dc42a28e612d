"""The review queue on a workspace scored by the real face analysis (dlib, offline): the
numbers it shows are the ones `likeness score` computes."""

from __future__ import annotations

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from likeness.curate.ingest import Ingester
from likeness.data import FACES
from likeness.review import create_app
from likeness.workspace import Workspace

from .builder import LOCAL

pytest.importorskip("dlib")
scoring = pytest.importorskip("likeness.metrics.scoring")
analysis = pytest.importorskip("likeness.metrics.analysis")


@pytest.mark.slow
def test_queue_shows_the_scores_of_likeness_score(tmp_path):
    with Workspace.create(tmp_path / "ws", name="Obama Test", class_word="man") as ws:
        refs = [
            Ingester(ws, "source").ingest_file(FACES / n).sha256
            for n in ("obama.jpg", "obama3.jpg")
        ]
        noisy = tmp_path / "obama2_grainy.png"
        rng = np.random.default_rng(7)
        pixels = np.asarray(Image.open(FACES / "obama2.jpg").convert("RGB"), dtype=np.float32)
        pixels += rng.normal(0, 14, pixels.shape)
        Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(noisy)
        cands = [
            Ingester(ws, "synthetic").ingest_file(FACES / n).sha256
            for n in ("obama2.jpg", "biden.jpg")
        ]
        cands.append(Ingester(ws, "synthetic").ingest_file(noisy).sha256)
        run = scoring.score_images(
            [ws.blobs.path(s) for s in cands],
            [ws.blobs.path(s) for s in refs],
            instruments=analysis.Instruments(expression=None, pose=None),
            thresholds=scoring.Thresholds(pass_match=ws.settings.identity.pass_match),
            conn=ws.db,
            workers=1,
        )
        root = ws.root
    expected = {s.sha256: s for s in run.scores}
    with TestClient(create_app(root), base_url=LOCAL) as client:
        items = client.get("/api/queue", params={"origin": "synthetic"}).json()["items"]
        html = client.get(f"/focus/{cands[0]}").text
    shown = {i["sha256"]: i["metrics"] for i in items}
    flags = {i["sha256"]: set(i["flags"]) for i in items}
    obama2, biden = shown[cands[0]], shown[cands[1]]
    assert [i["sha256"] for i in items][-1] == cands[1]  # biden: worst match, last
    for sha, metrics in shown.items():
        score = expected[sha]
        assert metrics["match"] == pytest.approx(score.match, abs=0.01)
        assert metrics["distance"] == pytest.approx(score.distance, abs=1e-3)
        assert metrics["pass"] is score.passed
        assert metrics["angle"] == score.angle
        assert metrics.get("plastic") == pytest.approx(score.plastic, abs=1e-3)
        assert metrics.get("plastic_relative") == pytest.approx(score.plastic_relative, abs=1e-3)
        assert flags[sha] == set(score.flags)
    assert obama2["pass"] is True and biden["pass"] is False
    assert "grainy" in flags[cands[2]]  # a score-time flag, derived from the cached grain
    assert obama2["nearest_reference"] in refs
    assert obama2["angle"].startswith("half_")
    assert f"/face/{obama2['nearest_reference']}" in html
