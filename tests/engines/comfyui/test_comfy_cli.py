"""`likeness comfy check|free` and `recipe export-comfy` through Typer's CliRunner."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from fake_server import FakeComfyUI
from typer.testing import CliRunner

from likeness.cli import comfy
from likeness.recipes import Recipe

runner = CliRunner()


def recipe_file(tmp_path: Path, recipe: Recipe, **overrides: object) -> Path:
    path = tmp_path / "r.toml"
    recipe.with_overrides(overrides).write_toml(path)
    return path


def export_app() -> typer.Typer:
    app = typer.Typer()
    app.command("export-comfy")(comfy.export_comfy)
    app.command("unused")(lambda: None)  # keep a group, as under `likeness recipe`
    return app


def test_check_json_shape(fake: FakeComfyUI, recipe: Recipe, tmp_path: Path) -> None:
    ok = runner.invoke(comfy.app, ["check", fake.url, "--json"])
    assert ok.exit_code == 0, ok.output
    data = json.loads(ok.stdout)
    assert set(data) == {"url", "system", "missing", "ok", "recipe"}
    assert data["system"]["comfyui_version"] == "0.3.64" and data["ok"] is True
    assert data["system"]["devices"][0]["vram_total"] == 25276510208
    bad = recipe_file(tmp_path, recipe, model="nope.safetensors", **{"detailer.enabled": True})
    res = runner.invoke(comfy.app, ["check", fake.url, "--recipe", str(bad), "--json"])
    assert res.exit_code == 1
    data = json.loads(res.stdout)
    assert data["ok"] is False and data["recipe"] == str(bad)
    assert len(data["missing"]) == 4
    assert data["missing"][0].startswith("missing model file 'nope.safetensors'")


def test_check_human_output(fake: FakeComfyUI, recipe: Recipe, tmp_path: Path) -> None:
    good = recipe_file(tmp_path, recipe)
    res = runner.invoke(comfy.app, ["check", fake.url, "--recipe", str(good)])
    assert res.exit_code == 0, res.output
    assert "ComfyUI 0.3.64" in res.stdout and "cpu" in res.stdout and "ok:" in res.stdout


def test_check_unreachable_is_one_line() -> None:
    with FakeComfyUI() as fake:
        url = fake.url
    res = runner.invoke(comfy.app, ["check", url])
    assert res.exit_code == 2
    assert "cannot reach ComfyUI at" in res.output and "Traceback" not in res.output


def test_free(fake: FakeComfyUI) -> None:
    res = runner.invoke(comfy.app, ["free", fake.url])
    assert res.exit_code == 0, res.output
    assert fake.state.free_requests == [{"unload_models": True, "free_memory": True}]


def test_export_comfy_writes_the_api_graph(recipe: Recipe, tmp_path: Path) -> None:
    path = recipe_file(tmp_path, recipe, seed=-1)
    res = runner.invoke(export_app(), ["export-comfy", str(path)])
    assert res.exit_code == 0, res.output
    graph = json.loads((tmp_path / "r.api.json").read_text())
    sampler = next(n for n in graph.values() if n["_meta"]["title"] == "sampler")
    assert sampler["class_type"] == "KSampler" and sampler["inputs"]["seed"] >= 0
    res = runner.invoke(export_app(), ["export-comfy", str(recipe_file(tmp_path, recipe)), "-"])
    assert json.loads(res.stdout)["1"]["class_type"] == "CheckpointLoaderSimple"
