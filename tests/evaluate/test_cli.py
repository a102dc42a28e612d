"""The evaluation commands end to end through Typer, with the photo engine in place of a
generator: card (JSON, grid, report), card spec, card compare, loop and sweep new. The card
and comparison reports are opened in Chromium and kept as screenshots."""

from __future__ import annotations

import json
import tomllib

import pytest
from typer.testing import CliRunner

from likeness.evaluate.card_spec import load_card_spec
from likeness.evaluate.sweep_spec import load_spec
from likeness.recipes import Recipe

from .cli_app import app
from .conftest import screenshot
from .photo_engine import PhotoEngine
from .test_card_real_faces import V1, V2, chooser

runner = CliRunner()


@pytest.fixture
def photo_engine(monkeypatch):
    """Every command builds the photo engine instead of a real one."""
    spec = load_card_spec()
    engine = PhotoEngine(chooser(spec, {4.0: V1, 5.0: V2}))
    for module in ("likeness.cli.card", "likeness.cli.loop", "likeness.cli.sweep"):
        monkeypatch.setattr(f"{module}.build_engine", lambda *a, **k: engine)
    return engine


def invoke(ws, *args):
    result = runner.invoke(app, ["--workspace", str(ws.root), *args])
    return result


def test_card_cli_json_grid_report_and_compare(face_ws, photo_engine, tmp_path, chromium):
    Recipe(model="photos", seed=7, cfg=4.0).write_toml(face_ws.root / "recipe.toml")
    v2 = tmp_path / "v2.toml"
    Recipe(model="photos", seed=7, cfg=5.0).write_toml(v2)

    first = invoke(face_ws, "card", "--label", "v1", "--tries", "1", "--json",
                   "--report", str(tmp_path / "card-v1"))  # fmt: skip
    assert first.exit_code == 1, first.output  # the goal is missed: exit status 1
    data = json.loads(first.stdout)
    assert data["label"] == "v1" and data["shots"] == 23 and data["first_try_passed"] >= 1
    assert data["goal"] == 0.8 and data["meets_goal"] is False
    shots = {s["id"]: s for s in data["per_shot"]}
    assert shots["front_neutral"]["attempts"][0]["reasons"] == [
        "expression: smiling, expected neutral"
    ]
    assert (face_ws.root / "cards" / "v1.png").is_file() and data["grid"].endswith("v1.png")
    second = invoke(face_ws, "card", "--recipe", str(v2), "--label", "v2", "--tries", "1")
    assert second.exit_code == 1 and "first try" in second.stdout

    compared = invoke(face_ws, "card", "compare", "v1", "v2", "--json",
                      "--report", str(tmp_path / "compare"))  # fmt: skip
    assert compared.exit_code == 0, compared.output
    table = json.loads(compared.stdout)
    v1, v2 = (c["first_try_passed"] for c in table["cards"])
    assert v2 == v1 + 1
    assert (face_ws.root / "cards" / "compare.png").is_file()
    text = invoke(face_ws, "card", "compare")
    assert "v1" in text.stdout and "v2" in text.stdout and "first try" in text.stdout
    unknown = invoke(face_ws, "card", "compare", "v9")
    assert unknown.exit_code == 2 and "no card labelled 'v9'" in unknown.stderr

    screenshot(chromium, tmp_path / "card-v1" / "index.html", "card-report")
    screenshot(chromium, tmp_path / "compare" / "index.html", "card-compare-report")


def test_card_spec_copy_is_editable_and_runs(face_ws, photo_engine, tmp_path):
    out = tmp_path / "card.toml"
    assert runner.invoke(app, ["card", "spec", str(out)]).exit_code == 0
    assert len(load_card_spec(out).shots) == 23
    data = tomllib.loads(out.read_text())
    data["shots"] = data["shots"][:2]
    import tomli_w

    out.write_text(tomli_w.dumps(data))
    Recipe(model="photos", seed=7, cfg=4.0).write_toml(face_ws.root / "recipe.toml")
    result = invoke(face_ws, "card", "--spec", str(out), "--tries", "1", "--json")
    assert json.loads(result.stdout)["shots"] == 2
    assert photo_engine.closed
    # Writing over an existing file is refused.
    again = runner.invoke(app, ["card", "spec", str(out)])
    assert again.exit_code == 2 and "exists" in again.stderr


def test_loop_cli(face_ws, photo_engine):
    missing = invoke(face_ws, "loop")
    assert missing.exit_code == 2 and "recipe.toml" in missing.stderr
    Recipe(model="photos", seed=7, cfg=4.0).write_toml(face_ws.root / "recipe.toml")
    result = invoke(face_ws, "loop", "-n", "3", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["n"] == 3 and len(data["candidates"]) == 3
    assert data["waiting_for"] in ("review", "recipe")
    assert photo_engine.closed  # the engine's connections end with the command
    text = invoke(face_ws, "loop")
    assert "waiting for" in text.stdout and "generated now" in text.stdout


def test_sweep_new_writes_a_valid_example(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert runner.invoke(app, ["sweep", "new", "s.toml"]).exit_code == 0
    spec = load_spec(tmp_path / "s.toml")
    assert spec.axis_names == ["loras.0.strength", "cfg"] and len(spec.cells()) == 36
    assert runner.invoke(app, ["sweep", "new", "s.toml"]).exit_code == 2
    missing = runner.invoke(app, ["sweep", "nope.toml"])
    assert missing.exit_code == 2 and "likeness sweep new" in missing.stderr


def test_every_command_has_help():
    for args in (["sweep"], ["card"], ["card", "spec"], ["card", "compare"], ["loop"]):
        result = runner.invoke(app, [*args, "--help"])
        assert result.exit_code == 0 and "Example:" in result.stdout, args


def test_engine_session_keeps_the_first_error():
    from likeness.cli.sweep import engine_session

    class Gone(PhotoEngine):
        def release(self) -> None:
            raise ConnectionError("server went away")

    engine = Gone(lambda recipe, seed: "x")
    with pytest.raises(ValueError, match="first"), engine_session(engine):
        raise ValueError("first")
    assert engine.closed
    clean = Gone(lambda recipe, seed: "x")
    with pytest.raises(ConnectionError), engine_session(clean):
        pass
    assert clean.closed


def test_card_output_that_cannot_be_written_is_one_line(face_ws, photo_engine, tmp_path):
    import tomli_w

    spec = tmp_path / "card.toml"
    assert runner.invoke(app, ["card", "spec", str(spec)]).exit_code == 0
    data = tomllib.loads(spec.read_text())
    data["shots"] = data["shots"][:1]
    spec.write_text(tomli_w.dumps(data))
    Recipe(model="photos", seed=7, cfg=4.0).write_toml(face_ws.root / "recipe.toml")
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("x")
    args = ["card", "--spec", str(spec), "--tries", "1", "--label", "one"]
    result = invoke(face_ws, *args, "--grid", str(blocker / "grid.png"))
    assert result.exit_code == 2 and "cannot be written" in result.stderr
    assert "Traceback" not in result.output
    again = invoke(face_ws, *args, "--json")  # the card was stored: only the outputs remain
    assert json.loads(again.stdout)["shots"] == 1


def test_card_report_thumbnails_stay_inside_the_report(face_ws, photo_engine, tmp_path):
    import re

    import tomli_w

    spec = tmp_path / "card.toml"
    assert runner.invoke(app, ["card", "spec", str(spec)]).exit_code == 0
    data = tomllib.loads(spec.read_text())
    data["shots"] = [{**data["shots"][0], "id": "../../escaped & away"}]
    spec.write_text(tomli_w.dumps(data))
    Recipe(model="photos", seed=7, cfg=4.0).write_toml(face_ws.root / "recipe.toml")
    report = tmp_path / "deep" / "report"
    result = invoke(face_ws, "card", "--spec", str(spec), "--tries", "1", "--report", str(report))
    assert result.exit_code in (0, 1), result.output
    thumbs = sorted(p.name for p in (report / "thumbs").iterdir())
    assert thumbs == ["shot00_try1.png"]
    assert not (tmp_path / "deep" / "escaped &amp; away_1.png").exists()
    page = (report / "index.html").read_text()
    assert re.findall(r"src='thumbs/([^']+)'", page) == thumbs
