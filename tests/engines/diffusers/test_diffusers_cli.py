"""`likeness generate` on the tiny model: stored as synthetic images with provenance, resumable."""

from __future__ import annotations

import json

import pytest
import typer
from typer.testing import CliRunner

from likeness.cli import generate as generate_cli
from likeness.engines.diffusers import DiffusersEngine
from likeness.engines.records import generations_of_job, get_generation
from likeness.jobs import list_jobs
from likeness.pnginfo import read_pnginfo
from likeness.store.images import list_images


def _app(workspace_root) -> typer.Typer:
    app = typer.Typer()

    @app.callback()
    def root(ctx: typer.Context) -> None:
        """Test root."""
        ctx.obj = {"workspace": workspace_root}

    app.command("generate")(generate_cli.generate)
    return app


@pytest.fixture
def recipe_file(tmp_path, tiny_recipe):
    path = tmp_path / "tiny.toml"
    tiny_recipe.with_overrides(
        {"seed": -1, "batch": 2, "steps": 2, "refiner.enabled": False}
    ).write_toml(path)
    return path


def test_generate_stores_synthetic_images_with_provenance(workspace, recipe_file):
    result = CliRunner().invoke(
        _app(workspace.root),
        ["generate", "--recipe", str(recipe_file), "-n", "3", "--set", "cfg=5", "--json"],
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    base = data["seed"]
    assert base >= 0 and [r["seed"] for r in data["images"]] == [base, base + 1, base + 2]
    assert {r["status"] for r in data["images"]} <= {"stored", "near_duplicate"}
    assert data["score_error"] == "no source photos in the workspace to compare with"
    stored = list_images(workspace.db, origins=["synthetic"])
    assert len(stored) == 3
    assert generations_of_job(workspace.db, data["job"]) == [r["sha256"] for r in data["images"]]
    for row in data["images"]:
        prov = get_generation(workspace.db, row["sha256"])
        assert prov["seed"] == row["seed"] and prov["recipe"]["cfg"] == 5.0
        png = workspace.blobs.read(row["sha256"])
        assert read_pnginfo(png).provenance == prov
    job = list_jobs(workspace.db, kind="generate")[0]
    assert job.state == "done" and job.done == 3


def test_generate_resumes_an_interrupted_run_with_the_same_seeds(
    workspace, recipe_file, monkeypatch
):
    calls = {"n": 0}
    original = DiffusersEngine.generate

    def flaky(self, recipe, n, progress=None):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return original(self, recipe, n, progress)

    monkeypatch.setattr(DiffusersEngine, "generate", flaky)
    app = _app(workspace.root)
    args = ["generate", "--recipe", str(recipe_file), "-n", "3", "--no-score", "--json"]
    args += ["--set", "batch=1"]
    first = CliRunner().invoke(app, args)
    assert first.exit_code == 130
    job = list_jobs(workspace.db, kind="generate")[0]
    assert job.state == "running" and job.done == 1
    second = CliRunner().invoke(app, args)
    assert second.exit_code == 0, second.output
    data = json.loads(second.stdout)
    assert data["resumed"] is True and data["job"] == job.id
    base = data["seed"]
    assert [r["seed"] for r in data["images"]] == [base + 1, base + 2]
    seeds = sorted(
        get_generation(workspace.db, sha)["seed"]
        for sha in generations_of_job(workspace.db, job.id)
    )
    assert seeds == [base, base + 1, base + 2]


def test_generate_killed_inside_a_batch_does_not_store_an_image_twice(
    workspace, recipe_file, monkeypatch
):
    original = generate_cli._store
    calls = {"n": 0}

    def killed_after_first(*args, **kwargs):
        row = original(*args, **kwargs)
        calls["n"] += 1
        if calls["n"] == 1:
            raise KeyboardInterrupt  # the image is stored, the job's progress is not
        return row

    monkeypatch.setattr(generate_cli, "_store", killed_after_first)
    app = _app(workspace.root)
    args = ["generate", "--recipe", str(recipe_file), "-n", "3", "--no-score", "--json"]
    assert CliRunner().invoke(app, args).exit_code == 130
    job = list_jobs(workspace.db, kind="generate")[0]
    assert job.done == 0 and len(generations_of_job(workspace.db, job.id)) == 1
    second = CliRunner().invoke(app, args)
    assert second.exit_code == 0, second.output
    base = json.loads(second.stdout)["seed"]
    seeds = [
        get_generation(workspace.db, sha)["seed"]
        for sha in generations_of_job(workspace.db, job.id)
    ]
    assert seeds == [base, base + 1, base + 2]
    assert len(list_images(workspace.db, origins=["synthetic"])) == 3


def test_generate_refuses_before_any_work(workspace, tmp_path, recipe_file):
    ckpt = tmp_path / "model.ckpt"
    ckpt.write_bytes(b"x")
    result = CliRunner().invoke(
        _app(workspace.root),
        ["generate", "--recipe", str(recipe_file), "--set", f"model={ckpt}"],
    )
    assert result.exit_code == 2
    assert "--allow-pickle" in result.output
    assert list_jobs(workspace.db, kind="generate") == []
    result = CliRunner().invoke(
        _app(workspace.root), ["generate", "--recipe", str(recipe_file), "--set", "cfg=x"]
    )
    assert result.exit_code == 2 and "cfg" in result.output


def test_generate_scores_new_images_against_the_source_photos(
    workspace, recipe_file, faces_dir, monkeypatch
):
    import likeness.metrics
    from likeness.curate.ingest import Ingester

    source = Ingester(workspace, origin="source").ingest_file(faces_dir / "obama.jpg")
    seen = {}

    class Run:
        scores = ({"sha256": "x", "match": 0.9, "flags": []},)

    def fake_score(paths, references, *, conn=None, **kwargs):
        seen.update(paths=list(paths), references=list(references), conn=conn)
        return Run()

    monkeypatch.setattr(likeness.metrics, "score_images", fake_score)
    result = CliRunner().invoke(
        _app(workspace.root), ["generate", "--recipe", str(recipe_file), "-n", "2", "--json"]
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["scores"] == [{"sha256": "x", "match": 0.9, "flags": []}]
    assert seen["references"] == [workspace.blobs.path(source.sha256)]
    assert seen["paths"] == [workspace.blobs.path(r["sha256"]) for r in data["images"]]
    assert seen["conn"] is not None


def test_generate_json_scores_use_the_score_commands_shape():
    from likeness.cli.generate import _plain
    from likeness.metrics import ImageScore

    fields = dict.fromkeys(ImageScore.__dataclass_fields__)
    fields.update(path="a.png", sha256="a", faces=1, body_pose="not_visible", flags=("grainy",))
    score = ImageScore(**{**fields, "passed": True, "grain": float("nan")})
    data = _plain(score)
    assert data["pass"] is True and "passed" not in data
    assert data["grain"] is None and data["flags"] == ["grainy"]
    json.dumps(data, allow_nan=False)


def test_generate_refuses_a_misspelt_device_or_dtype_before_any_job(workspace, recipe_file):
    app = _app(workspace.root)
    for option, value in (("--dtype", "float16"), ("--device", "gpu")):
        args = ["generate", "--recipe", str(recipe_file), option, value]
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 2 and f"{option}: '{value}' is not" in result.stderr
    assert list_jobs(workspace.db, kind="generate") == []
