"""Sweep ranking on real faces: the photo engine serves a different person per cfg value, and
the objective (identity first) must put the Obama configuration on top."""

from __future__ import annotations

import pytest

from likeness.evaluate.objective import Objective
from likeness.evaluate.sweep import run_sweep
from likeness.evaluate.sweep_spec import SweepSpecError, load_spec, spec_from_dict
from likeness.recipes import Recipe
from likeness.report.sweep import write_sweep_report

from .conftest import screenshot
from .photo_engine import PhotoEngine

PHOTOS = {
    (3.0, 1): "biden.jpg",
    (3.0, 2): "biden.jpg",
    (4.0, 1): "obama3.jpg",
    (4.0, 2): "obama2.jpg",
    (7.0, 1): "Tom_Hanks_54745.png",
    (7.0, 2): "obama_partial_face.jpg",
}


def spec_data(**extra):
    return {
        "name": "cfg",
        "base": {"model": "photos", "prompt": "portrait of a man"},
        "seeds": [1, 2],
        "axes": {"cfg": [3.0, 4.0, 7.0]},
        **extra,
    }


def test_sweep_ranks_the_real_likeness_first(face_ws, scorer, tmp_path, chromium):
    engine = PhotoEngine(lambda recipe, seed: PHOTOS[(recipe.cfg, seed)])
    spec = spec_from_dict(spec_data())
    result = run_sweep(face_ws, spec, engine, scorer)
    assert result.complete and result.generated == 6
    ranked = [c.config["cfg"] for c in result.configs]
    assert ranked[0] == 4.0
    best = result.best
    assert best.mean_match >= 7.0 and best.pass_rate == 1.0
    assert all(c.mean_match < best.mean_match for c in result.configs[1:])
    # Each configuration's objective is the mean of its images' objectives, from real scores.
    for config in result.configs:
        expected = sum(spec.objective.image(c.score) for c in config.cells) / len(config.cells)
        assert config.objective == pytest.approx(expected)
    # Biden (cfg 3) never passes identity; the spread over seeds is reported.
    biden = next(c for c in result.configs if c.config["cfg"] == 3.0)
    assert biden.pass_rate == 0.0 and biden.objective_std == pytest.approx(0.0)
    data = result.to_json()
    assert data["best"]["config"] == {"cfg": 4.0}
    assert data["best"]["recipe_hash"] == best.recipe.recipe_hash()
    assert best.recipe.cfg == 4.0 and best.recipe.prompt == "portrait of a man"
    # Every image is stored with its provenance and the sweep's job.
    job = face_ws.db.execute("SELECT id FROM jobs WHERE kind = 'sweep'").fetchone()[0]
    assert face_ws.db.execute(
        "SELECT COUNT(*) FROM generations WHERE job_id = ?", (job,)
    ).fetchone()[0] == len({c.image_sha for r in result.configs for c in r.cells})
    index = write_sweep_report(data, tmp_path / "report", image_path=face_ws.blobs.path)
    screenshot(chromium, index, "sweep-report-faces")

    # Re-running re-ranks from the stored scores: nothing is generated again.
    again = run_sweep(face_ws, spec, engine, scorer)
    assert again.generated == 0 and len(engine.calls) == 6
    # Re-weighting does not re-run either: the spec hash ignores the objective.
    heavy = spec_from_dict(spec_data(objective={"match_weight": 0.0, "flag_weight": 1.0}))
    assert heavy.spec_hash() == spec.spec_hash()
    reweighted = run_sweep(face_ws, heavy, engine, scorer)
    assert len(engine.calls) == 6
    assert reweighted.best.objective == max(c.objective for c in reweighted.configs)


def test_failed_cells_are_reported_and_retried(face_ws, scorer):
    state = {"fail": True}

    def choose(recipe, seed):
        if recipe.cfg == 7.0 and seed == 2 and state["fail"]:
            return "error"
        return PHOTOS[(recipe.cfg, seed)]

    engine = PhotoEngine(choose)
    spec = spec_from_dict(spec_data())
    first = run_sweep(face_ws, spec, engine, scorer)
    assert not first.complete and first.finished == 5
    broken = next(c for c in first.configs if c.config["cfg"] == 7.0)
    assert broken.failed == 1 and "refused" in broken.cells[1].error
    state["fail"] = False
    second = run_sweep(face_ws, spec, engine, scorer)
    assert second.complete and second.generated == 1


def test_spec_errors_name_the_key():
    with pytest.raises(SweepSpecError, match=r"axes.cfgg"):
        spec_from_dict(spec_data(axes={"cfgg": [1.0]}))
    with pytest.raises(SweepSpecError, match=r"axes.loras.0.path"):
        spec_from_dict(spec_data(axes={"loras.0.strength": [0.5]}))
    with pytest.raises(SweepSpecError, match="not both"):
        spec_from_dict(spec_data(cells=[{"cfg": 4.0}]))
    with pytest.raises(SweepSpecError, match="seeds"):
        spec_from_dict(spec_data(seeds=[1, 1]))
    with pytest.raises(SweepSpecError, match="objective.match"):
        spec_from_dict(spec_data(objective={"match": 2}))


def test_base_recipe_file_is_read_beside_the_spec(tmp_path):
    Recipe(model="m.safetensors", prompt="a man", cfg=5.0).write_toml(tmp_path / "base.toml")
    (tmp_path / "sweep.toml").write_text(
        'base = "base.toml"\nseeds = [3]\n[axes]\n"refiner.denoise" = [0.2, 0.4]\n'
    )
    spec = load_spec(tmp_path / "sweep.toml")
    assert spec.name == "sweep" and spec.prompts == ("a man",)
    assert [c.recipe.refiner.denoise for c in spec.cells()] == [0.2, 0.4]
    assert {c.recipe.cfg for c in spec.cells()} == {5.0}
    with pytest.raises(SweepSpecError, match="likeness sweep new"):
        load_spec(tmp_path / "missing.toml")


def test_explicit_cells_and_grid():
    listed = spec_from_dict(
        {**spec_data(), "axes": None, "cells": [{"cfg": 4.0}, {"cfg": 5.0, "steps": 20}]}
    )
    assert listed.axis_names == ["cfg", "steps"]
    assert [c.recipe.steps for c in listed.cells()] == [30, 30, 20, 20]
    grid = spec_from_dict(spec_data(axes={"cfg": [3.0, 4.0], "refiner.denoise": [0.2, 0.3]}))
    assert len(grid.cells()) == 2 * 2 * 2
    assert {(c.recipe.cfg, c.recipe.refiner.denoise) for c in grid.cells()} == {
        (3.0, 0.2), (3.0, 0.3), (4.0, 0.2), (4.0, 0.3)
    }  # fmt: skip
    # A cell's identity is its resolved recipe: seed and prompt included.
    keys = {c.recipe.recipe_hash() for c in grid.cells()}
    assert len(keys) == 8


def test_objective_penalties():
    objective = Objective()
    clean = {"match": 8.0, "grain": 1.0, "plastic": 0.0, "flags": []}
    assert objective.image(clean) == 8.0
    assert objective.image({**clean, "grain": 3.5}) == pytest.approx(6.0)
    assert objective.image({**clean, "plastic": 0.8}) == pytest.approx(7.0)
    assert objective.image({**clean, "match": None}) == 0.0
    assert objective.image(None) == 0.0
