"""Two diffusers workers on a tiny random-weight SDXL: a sweep whose first worker is killed
mid-run (`ray.kill`) still completes every cell exactly once, with the same pixels and the
same ranking as a one-engine run of the same spec in this process."""

from __future__ import annotations

import pytest

from likeness.config import ScaleSettings
from likeness.engines.diffusers import DiffusersEngine
from likeness.evaluate.scorer import WorkspaceScorer
from likeness.evaluate.sweep import run_sweep
from likeness.evaluate.sweep_spec import spec_from_dict
from likeness.scale.engines import build_engine_pool

from .conftest import pixels


@pytest.fixture
def one_thread():
    """Torch on one thread here, as in a one-CPU worker: the same sums in the same order."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.slow
def test_two_diffusers_workers_match_one_engine_and_survive_a_kill(
    ray_address, tiny_sdxl, new_workspace, one_thread
):
    import ray

    spec = spec_from_dict(
        {
            "name": "tiny",
            "seeds": [1, 2, 3],
            "prompts": ["portrait photo of a man"],
            "base": {
                "model": str(tiny_sdxl),
                "width": 64,
                "height": 64,
                "steps": 12,
                "sampler": "euler",
                "scheduler": "normal",
                "refiner": {"enabled": False},
            },
            "axes": {"cfg": [3.0, 6.0]},
        }  # fmt: skip
    )
    here, fanned = new_workspace("here"), new_workspace("fanned")
    engine = DiffusersEngine(device="cpu")
    scorer = WorkspaceScorer(here)
    try:
        expected = run_sweep(here, spec, engine, scorer)
    finally:
        engine.close()
    notices: list[str] = []
    pool = build_engine_pool(
        "diffusers", ScaleSettings(), workers=2, options={"device": "cpu"}, on_notice=notices.append
    )
    assert pool.pool.live == ["w1", "w2"]

    def kill_w1(done, total, cell, result):
        if done == 1:  # w1 still has a task running and one queued
            ray.kill(pool.pool.actor("w1"))

    # The face models are loaded already (by the run above): storing an image takes less
    # than making one, so the kill lands while w1 is at work.
    warm = WorkspaceScorer(fanned, instruments=scorer.instruments)
    try:
        result = run_sweep(fanned, spec, pool, warm, progress=kill_w1)
    finally:
        pool.close()
    # 1. Every cell once, whoever made it.
    assert (result.total, result.finished, result.generated) == (6, 6, 6)
    for table in ("generations", "images WHERE origin = 'synthetic'"):
        assert fanned.db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0] == 6
    assert len(notices) == 1 and notices[0].startswith("worker w1 (") and " lost: " in notices[0]
    made_by = [
        r[0]
        for r in fanned.db.execute(
            "SELECT json_extract(provenance, '$.worker.name') FROM generations"
        ).fetchall()
    ]
    assert made_by.count("w2") >= 4 and set(made_by) <= {"w1", "w2"}

    # 2. The same images and ranking as one engine here (same seeds, same pixels).
    def cells(ws) -> dict[str, str]:
        rows = ws.db.execute("SELECT cell_key, image_sha FROM sweep_cells").fetchall()
        return {r[0]: pixels(ws.blobs.path(r[1])) for r in rows}

    assert cells(fanned) == cells(here) and len(set(cells(here).values())) == 6
    ranking = [(c.config_key, round(c.objective, 6)) for c in result.configs]
    assert ranking == [(c.config_key, round(c.objective, 6)) for c in expected.configs]
