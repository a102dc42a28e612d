"""The loop turns: a dataset version with no LoRA is trained (checkpoints judged), its best
checkpoint goes into recipe.toml, the model card runs with it, and each turn's numbers stand
against the turn before; a test engine serves real face photos so the numbers mean something."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from likeness.cli.main import app
from likeness.config import CardSettings
from likeness.curate.ingest import Ingester
from likeness.data import FACES
from likeness.evaluate.card_spec import card_spec_from_dict
from likeness.evaluate.current import RECIPE_FILE, current_recipe
from likeness.evaluate.loop import status
from likeness.evaluate.scorer import WorkspaceScorer
from likeness.recipes import Recipe
from likeness.store.datasets import DatasetItem, create_version, get_version
from likeness.train.recipe import write_example
from likeness.train.turns import adjust_status, loop_training
from likeness.workspace import Workspace
from tests.evaluate.photo_engine import PhotoEngine, photo_png
from tests.train.conftest import TINY_JUDGE, fast_recipe

# Two shots judged on identity and flags only (no angle or expression asked of a photo).
SPEC = card_spec_from_dict(
    {"name": "two", "shots": [{"id": "a", "prompt": "portrait photo of a {class_word}"},
                              {"id": "b", "prompt": "photo of a {class_word} outdoors"}]}
)  # fmt: skip
VERSION_FIELDS = {"trigger": "vrexoq123", "class_word": "man", "caption_template": "custom",
                  "trigger_placement": "start", "selection": {}}  # fmt: skip


@pytest.fixture(scope="module")
def loop_template(tmp_path_factory, instruments) -> Path:
    """Source photos obama.jpg and obama2.jpg, obama3.jpg kept as an accepted image, the
    dataset mara@v1 (the two sources), every photo the engine serves analysed once."""
    from likeness.metrics import analyze_paths

    root = tmp_path_factory.mktemp("loop") / "ws"
    served = tmp_path_factory.mktemp("served")
    with Workspace.create(root, name="Mara", trigger="vrexoq123", class_word="man") as ws:
        sources = Ingester(ws, origin="source")
        shas = [sources.ingest_file(FACES / n).sha256 for n in ("obama.jpg", "obama2.jpg")]
        create_version(ws.db, "mara", [DatasetItem(s, "vrexoq123 photo of man") for s in shas],
                       **VERSION_FIELDS)  # fmt: skip
        Ingester(ws, origin="synthetic").ingest_file(FACES / "obama3.jpg")
        paths = []
        for name in ("biden.jpg", "obama3.jpg"):
            paths.append(served / f"{name}.png")
            paths[-1].write_bytes(photo_png(name))
        analyze_paths([*(ws.blobs.path(s) for s in shas), *paths], instruments=instruments,
                      conn=ws.db, workers=2)  # fmt: skip
        Recipe(model="photos", family="sdxl", prompt="photo of a man", seed=0).write_toml(
            root / RECIPE_FILE
        )
    return root


@pytest.fixture
def loop_ws(loop_template, tmp_path):
    root = tmp_path / "ws"
    shutil.copytree(loop_template, root)
    with Workspace.open(root) as ws:
        yield ws


def lora_of(recipe: Recipe) -> str:
    return Path(recipe.loras[0].path).name if recipe.loras else ""


def test_the_loop_trains_each_new_version_cards_it_and_compares_the_turns(
    loop_ws, train_models, instruments
):
    # The card engine: LoRA v1 gives another man, LoRA v2 the right one in a new photo.
    card_engine = PhotoEngine(lambda r, seed: "obama3.jpg" if "mara-v2" in lora_of(r) else
                              "biden.jpg")  # fmt: skip
    # The probes: v1's step 2 already looks like him, its step 4 drifts away; v2 learns.
    probes = PhotoEngine(lambda r, seed: {"mara-v1-step000002": "obama3.jpg",
                                          "mara-v1-step000004": "biden.jpg"}.get(
        Path(r.loras[0].path).stem, "obama3.jpg"))  # fmt: skip
    trainer = fast_recipe(train_models.sdxl, "sdxl", "mara@v1", steps=4, checkpoint_every=2,
                          judge=TINY_JUDGE)  # fmt: skip
    options = {"device": "cpu", "probe_engine": probes, "instruments": instruments}
    scorer = WorkspaceScorer(loop_ws, instruments=instruments)

    def turn():
        return loop_training(loop_ws, trainer, current_recipe(loop_ws), lambda: card_engine,
                             lambda: scorer, recipe_path=loop_ws.root / RECIPE_FILE, spec=SPEC,
                             tries=1, train_options=options)  # fmt: skip

    # Turn 1: mara@v1 has no LoRA: trained, judged, its best checkpoint (step 2, not the
    # last) written into recipe.toml at the working strength, then carded.
    first = turn()
    assert first.dataset == "mara@v1" and first.trained is not None
    assert first.trained.best["step"] == 2 and first.lora.endswith("mara-v1-step000002.safetensors")
    written = current_recipe(loop_ws)
    assert [(Path(s.path).name, s.strength) for s in written.loras] == [
        ("mara-v1-step000002.safetensors", 0.7)]  # fmt: skip
    assert first.card.label.startswith("loop-mara-v1-") and first.card.first_try_rate == 0.0
    (one,) = first.turns
    assert one.pass_rate == 0.0 and one.change is None and one.lora == "mara-v1-step000002"

    # A person accepts obama3 and cuts mara@v2; turn 2 trains it and beats turn 1.
    obama3 = loop_ws.db.execute(
        "SELECT sha256 FROM images WHERE original_name = 'obama3.jpg'"
    ).fetchone()[0]
    items = [*get_version(loop_ws.db, "mara", 1).items, DatasetItem(obama3, "vrexoq123 man")]
    create_version(loop_ws.db, "mara", items, **VERSION_FIELDS)
    second = turn()
    assert second.dataset == "mara@v2" and second.trained.run_id != first.trained.run_id
    assert [Path(s.path).name for s in current_recipe(loop_ws).loras] == [
        "mara-v2-step000002.safetensors"]  # the v1 LoRA is replaced, not stacked  # fmt: skip
    before, after = second.turns
    assert (before.dataset, after.dataset) == ("mara@v1", "mara@v2")
    assert after.first_try_rate == 1.0 and after.pass_rate == 1.0
    assert after.change["first_try_rate"] == 1.0 and after.change["pass_rate"] == 1.0
    assert after.change["mean_match"] > 5

    # Nothing new: nothing is trained, the card is loaded, not generated again.
    made = len(card_engine.calls)
    third = turn()
    assert third.trained is None and len(card_engine.calls) == made
    assert [t.to_json() for t in third.turns] == [t.to_json() for t in second.turns]


def test_a_turn_whose_review_is_done_waits_for_the_next_dataset_version(loop_ws):
    from likeness.evaluate import store as evaluate_store
    from likeness.review.decisions import decide

    engine = PhotoEngine(lambda r, seed: "obama3.jpg")
    recipe = current_recipe(loop_ws)
    scorer = WorkspaceScorer(loop_ws)
    from likeness.evaluate.loop import run_loop_turn

    result = run_loop_turn(loop_ws, recipe, lambda: engine, lambda: scorer, n=1)
    decide(loop_ws.db, result.candidates[0].image_sha, "accepted", reviewer="ana")
    waiting = status(loop_ws)
    assert waiting.waiting_for == "training" and "--train-recipe" in waiting.next_step
    adjusted = adjust_status(waiting, Path("lora.toml"), "mara")
    assert adjusted.waiting_for == "dataset"
    assert "likeness review to-dataset mara" in adjusted.next_step
    assert adjust_status(waiting, None, None) is waiting
    assert evaluate_store.latest_turn(loop_ws.db) is not None


def test_likeness_loop_train_recipe_trains_cards_and_prints_the_turns(loop_ws, train_models):
    """The command end to end on the tiny model itself (its images have no face: the numbers
    are zero, the plumbing is what is checked)."""
    tiny = Recipe(model=str(train_models.sdxl), family="sdxl", prompt="photo of a man", seed=0,
                  width=64, height=64, steps=2).with_overrides({"refiner.enabled": False})  # fmt: skip
    tiny.write_toml(loop_ws.root / RECIPE_FILE)
    loop_ws.save_settings(loop_ws.settings.replace(card=CardSettings(tries=1)))
    lora_file = loop_ws.root.parent / "lora.toml"
    write_example(lora_file, fast_recipe(train_models.sdxl, "sdxl", "mara@v1", steps=2,
                                         checkpoint_every=2))  # fmt: skip
    args = ["-w", str(loop_ws.root), "loop", "-n", "1", "--train-recipe", str(lora_file),
            "--device", "cpu", "--json"]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    training = data["training"]
    assert training["dataset"] == "mara@v1" and training["trained"]["steps"] == 2
    assert training["card"]["label"].startswith("loop-mara-v1-") and training["card"]["shots"] == 23
    assert [t["dataset"] for t in training["turns"]] == ["mara@v1"]
    assert re.search(r"mara-v1(-step000002)?\.safetensors$", training["lora"])
    assert data["turn"] == 1 and data["n"] == 1
    written = Recipe.from_toml_file(loop_ws.root / RECIPE_FILE)
    assert Path(written.loras[0].path).name == Path(training["lora"]).name
    # The table, in words.
    again = CliRunner().invoke(app, args[:-1], env={"COLUMNS": "160"})
    assert again.exit_code == 0, again.output
    assert "turns" in again.output and "mara@v1" in again.output
