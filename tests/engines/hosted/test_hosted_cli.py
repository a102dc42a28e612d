"""`likeness sweep`, `card` and `generate` end to end on the hosted engines against the test
server, scored on the real face photos it returns; then every file of the workspace (the
database included) is searched for the API token."""

from __future__ import annotations

import json

import pytest
import tomli_w
from typer.testing import CliRunner

from conftest import TOKEN, hosted_recipe, settings_for
from likeness.cli.main import app
from likeness.engines.hosted.training import HostedTrainingRequest, train_hosted
from likeness.evaluate.card import SHOT_SEED_STRIDE
from likeness.evaluate.card_spec import load_card_spec

runner = CliRunner()
BASE_SEED = 7
# What each card shot "generates": Obama where it should pass, Biden where identity fails.
CARD = {"front_smiling": "obama.jpg", "front_neutral": "obama.jpg",
        "half_left_neutral": "obama2.jpg", "half_right_neutral": "biden.jpg"}  # fmt: skip


def invoke(ws, *args):
    return runner.invoke(app, ["--workspace", str(ws.root), *args])


def point_at(ws, fake, **changes):
    ws.save_settings(ws.settings.replace(hosted=settings_for(fake, **changes)))


@pytest.mark.slow
def test_sweep_and_card_on_replicate_are_scored_and_keep_no_token(
    face_ws, fake, tmp_path, monkeypatch
):
    monkeypatch.setenv("REPLICATE_API_TOKEN", TOKEN)
    monkeypatch.setenv("FAL_KEY", TOKEN)
    point_at(face_ws, fake)
    # 1. A sweep over guidance: 3.5 "makes" Obama, 2.5 Biden.
    fake.choose = lambda i: "obama3.jpg" if i["guidance"] == 3.5 else "biden.jpg"
    base = hosted_recipe().to_dict()
    base.pop("seed")
    spec = tmp_path / "sweep.toml"
    spec.write_text(tomli_w.dumps({"name": "guidance", "base": base, "seeds": [1],
                                   "axes": {"cfg": [2.5, 3.5]}}))  # fmt: skip
    swept = invoke(face_ws, "sweep", str(spec), "--json")
    assert swept.exit_code == 0, swept.output
    data = json.loads(swept.stdout)
    assert data["finished"] == 2 and data["generated"] == 2
    assert data["best"]["config"] == {"cfg": 3.5} and data["best"]["pass_rate"] == 1.0
    worst = data["configs"][1]
    assert worst["config"] == {"cfg": 2.5} and worst["pass_rate"] == 0.0
    assert data["best"]["mean_match"] > worst["mean_match"]
    assert len(fake.works_of("prediction")) == 2
    # Run again: everything is found, nothing is paid twice.
    again = invoke(face_ws, "sweep", str(spec), "--json")
    assert json.loads(again.stdout)["generated"] == 0 and len(fake.works_of("prediction")) == 2
    # 2. A card of four shots.
    shots = load_card_spec().shots

    def card_photo(inputs):
        index, _attempt = divmod(inputs["seed"] - BASE_SEED, SHOT_SEED_STRIDE)
        return CARD.get(shots[index].id, "Tom_Hanks_54745.png")

    fake.choose = card_photo
    card_spec = tmp_path / "card.toml"
    assert runner.invoke(app, ["card", "spec", str(card_spec)]).exit_code == 0
    text = card_spec.read_text()
    head, *rest = text.split("[[shots]]")
    keep = [s for s in rest if any(f'id = "{k}"' in s for k in CARD)]
    card_spec.write_text(head + "".join("[[shots]]" + s for s in keep))
    hosted_recipe(seed=BASE_SEED).write_toml(face_ws.root / "recipe.toml")
    carded = invoke(face_ws, "card", "--spec", str(card_spec), "--tries", "1", "--json",
                    "--label", "hosted")  # fmt: skip
    assert carded.exit_code in (0, 1), carded.output
    card = json.loads(carded.stdout)
    verdicts = {s["id"]: s for s in card["per_shot"]}
    assert len(verdicts) == 4
    assert verdicts["front_smiling"]["first_try"] is True
    assert verdicts["half_right_neutral"]["attempts"][0]["reasons"][0].startswith("identity")
    assert verdicts["front_neutral"]["attempts"][0]["reasons"] == [
        "expression: smiling, expected neutral"
    ]
    stored = face_ws.db.execute(
        "SELECT provenance FROM generations WHERE engine = 'replicate'"
    ).fetchall()
    assert len(stored) == 6
    assert all(json.loads(r[0])["hosted"]["prediction_id"] for r in stored)
    # 3. Generation on fal and a hosted training in the same workspace.
    from likeness.curate.datasets import create_dataset_version
    from likeness.curate.selection import Selection

    generated = invoke(face_ws, "generate", "--engine", "fal", "--recipe",
                       str(_fal_recipe(tmp_path)), "-n", "1", "--json")  # fmt: skip
    assert generated.exit_code == 0, generated.output
    result = json.loads(generated.stdout)
    assert all(i["status"] in ("stored", "near_duplicate") for i in result["images"])
    assert result["scores"] and result["scores"][0]["match"] is not None
    create_dataset_version(face_ws, "barack", Selection(origins=("source",)))
    fake.models["me/barack-flux"] = fake._model_obj("me/barack-flux", "")
    from likeness.engines.hosted.http import PollPolicy

    train_hosted(face_ws, HostedTrainingRequest(dataset="barack", destination="me/barack-flux"),
                 poll_policy=PollPolicy(0.01, 0.02, 60))  # fmt: skip
    # 4. The token is nowhere in the workspace: files, database, WAL, PNG chunks, jobs.
    face_ws.db.execute("PRAGMA wal_checkpoint(FULL)")
    needle = TOKEN.encode()
    files = [p for p in face_ws.root.rglob("*") if p.is_file()]
    assert any(p.name == "likeness.db" for p in files) and len(files) > 15
    assert [p for p in files if needle in p.read_bytes()] == []
    # ... while the requests did carry it.
    assert all(auth in (f"Bearer {TOKEN}", f"Key {TOKEN}", None) for _, _, auth in fake.log.api)
    assert any(auth == f"Bearer {TOKEN}" for _, _, auth in fake.log.api)


def _fal_recipe(tmp_path):
    path = tmp_path / "fal.toml"
    hosted_recipe("fal", seed=100).write_toml(path)
    return path


def test_generate_stops_at_max_images_and_names_a_refusal(face_ws, fake, monkeypatch, tmp_path):
    monkeypatch.setenv("REPLICATE_API_TOKEN", TOKEN)
    point_at(face_ws, fake)
    recipe = tmp_path / "r.toml"
    hosted_recipe().write_toml(recipe)
    stopped = invoke(face_ws, "generate", "--recipe", str(recipe), "-n", "3",
                     "--max-images", "2", "--no-score")  # fmt: skip
    assert stopped.exit_code == 2
    assert "max_images = 2" in stopped.stderr and len(fake.works_of("prediction")) == 2
    resumed = invoke(face_ws, "generate", "--recipe", str(recipe), "-n", "3", "--no-score")
    assert resumed.exit_code == 0, resumed.output
    assert len(fake.works_of("prediction")) == 3  # the stored two are not made again
    refused = invoke(face_ws, "generate", "--recipe", str(recipe), "--set", "sampler=dpmpp_2m")
    assert refused.exit_code == 2 and "sampler: 'dpmpp_2m'" in refused.stderr
    monkeypatch.delenv("REPLICATE_API_TOKEN")
    monkeypatch.setattr("likeness.engines.hosted.secrets._keyring_lookup", lambda s, n: None)
    missing = invoke(face_ws, "generate", "--recipe", str(recipe))
    assert missing.exit_code == 2 and "REPLICATE_API_TOKEN" in missing.stderr
