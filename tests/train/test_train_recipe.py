"""The train recipe: defaults from practice, errors naming the field, the commented example,
`likeness train new`, and docs/training.md covering every field."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from typer.testing import CliRunner

from likeness.cli.main import app
from likeness.recipes import RecipeError
from likeness.train.recipe import FIELD_NOTES, TrainRecipe, example_toml

DOCS = Path(__file__).resolve().parents[2] / "docs" / "training.md"


def test_defaults_are_what_practice_and_the_trainers_ship():
    r = TrainRecipe()
    assert (r.rank, r.alpha, r.learning_rate, r.warmup_steps) == (64, 32.0, 5e-5, 200)
    assert (r.mixed_precision, r.optimizer, r.gradient_checkpointing) == ("bf16", "adamw", True)
    assert (r.steps, r.checkpoint_every, r.caption_dropout) == (2000, 250, 0.05)
    assert (r.timestep_sampling, r.flow_shift, r.guidance) == ("shift", 3.1582, 1.0)
    assert r.warnings() == []


@pytest.mark.parametrize(
    ("fields", "field", "fix"),
    [
        ({"dataset": "mara"}, "dataset", "mara@vN"),
        ({"dataset": "@@"}, "dataset", "NAME@vN"),
        ({"rank": 0}, "rank", "between 1 and 1024"),
        ({"family": "sdxI"}, "family", "did you mean 'sdxl'"),
        ({"mixed_precision": "fp16", "family": "flux"}, "mixed_precision", "use bf16"),
        ({"noise_offset": 0.05, "family": "flux"}, "noise_offset", "set 0 for flux"),
        ({"steps": 100}, "warmup_steps", "less than steps (100)"),
        ({"epochs": 3}, "epochs", "set steps = 0"),
        ({"steps": 0}, "steps", "set one of them"),
        ({"resolution": 1000}, "resolution", "multiple of bucket_step (64)"),
        ({"bucket_step": 40}, "bucket_step", "multiple of 16"),
        ({"train_unet": False}, "train_unet", "train one"),
        ({"optimizer": "lion"}, "optimizer", "adamw"),
        ({"lora_targets": ["to_q", " "]}, "lora_targets.1", "name a module"),
        ({"name": "a/b"}, "name", "file name"),
        ({"learning_rate": 0}, "learning_rate", "(0.0, 1.0]"),
        ({"rnak": 32}, "rnak", "did you mean 'rank'"),
        ({"sample_every": 10, "sample_prompts": []}, "sample_prompts", "list a prompt"),
    ],
)
def test_a_wrong_field_is_named_with_its_fix(fields, field, fix):
    with pytest.raises(RecipeError) as caught:
        TrainRecipe.from_dict(fields)
    assert caught.value.field == field
    assert fix in str(caught.value)


def test_fp16_on_sdxl_is_allowed_with_a_warning_that_says_why():
    (warning,) = TrainRecipe(mixed_precision="fp16").warnings()
    assert "NaN" in warning and "bf16" in warning and "1e-4" in warning
    assert any("rank 32" in w for w in TrainRecipe(rank=32).warnings())


def test_the_example_parses_back_to_the_recipe_and_comments_every_field():
    recipe = TrainRecipe(model="base.safetensors", dataset="mara@v2", noise_offset=0.0357)
    text = example_toml(recipe)
    assert TrainRecipe.from_toml(text) == recipe
    for f in dataclasses.fields(TrainRecipe):
        assert FIELD_NOTES[f.name] in text.replace("\n# ", " ")
    assert all(len(line) <= 100 for line in text.splitlines())
    assert recipe.output_name == "mara-v2"
    assert recipe.recipe_hash() == TrainRecipe.from_toml(text).recipe_hash()


def test_missing_model_or_dataset_is_refused_only_at_training_time():
    with pytest.raises(RecipeError, match="model"):
        TrainRecipe(dataset="a@v1").require_inputs()
    with pytest.raises(RecipeError, match="dataset"):
        TrainRecipe(model="m.safetensors").require_inputs()


def test_train_new_writes_a_recipe_from_the_workspace_settings(workspace, tmp_path):
    from likeness.config import TrainingSettings
    from likeness.store.datasets import DatasetItem, create_version

    workspace.save_settings(
        workspace.settings.replace(training=TrainingSettings(network_rank=96, learning_rate=4e-5))
    )
    workspace.db.execute(
        "INSERT INTO images (sha256, origin, original_name, size_bytes, format, width, height, "
        "mode, ingested_at, phash, dhash, sharpness) VALUES ('ab', 'source', 'a.jpg', 1, "
        "'JPEG', 8, 8, 'RGB', 'now', '0', '0', 1.0)"
    )
    fields = {
        "trigger": "zk1",
        "class_word": "man",
        "caption_template": "t",
        "trigger_placement": "start",
        "selection": {},
    }
    create_version(workspace.db, "mara", [DatasetItem("ab", "zk1 man")], **fields)
    target = tmp_path / "r.toml"
    runner = CliRunner()
    args = ["-w", str(workspace.root), "train", "new", str(target), "--model", "m.safetensors"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    written = TrainRecipe.from_toml_file(target)
    assert (written.rank, written.learning_rate, written.dataset) == (96, 4e-5, "mara@v1")
    assert written.noise_offset == 0.0357 and written.model == "m.safetensors"
    again = runner.invoke(app, args)
    assert again.exit_code == 2 and "exists" in again.output
    flux = runner.invoke(app, [*args, "--family", "flux", "--force"])
    assert flux.exit_code == 0 and TrainRecipe.from_toml_file(target).family == "flux"


def test_train_file_that_does_not_exist_names_train_new(tmp_path, workspace):
    result = CliRunner().invoke(
        app, ["-w", str(workspace.root), "train", str(tmp_path / "missing.toml")]
    )
    assert result.exit_code == 2
    assert "likeness train new" in result.output


def test_a_recipe_that_cannot_run_is_one_line_naming_the_field(tmp_path, workspace):
    recipe = tmp_path / "r.toml"
    recipe.write_text(
        TrainRecipe(model=str(tmp_path / "nope.safetensors"), dataset="mara@v1").to_toml()
    )
    runner = CliRunner()
    result = runner.invoke(app, ["-w", str(workspace.root), "train", str(recipe)])
    assert result.exit_code == 2
    assert result.stderr.count("\n") == 1 and "no dataset mara@v1" in result.stderr
    other = tmp_path / "bad.toml"
    other.write_text('rank = "high"\n')
    result = runner.invoke(app, ["-w", str(workspace.root), "train", "run", str(other)])
    assert result.exit_code == 2 and "rank" in result.stderr and "whole number" in result.stderr


def test_docs_describe_every_recipe_field():
    text = DOCS.read_text(encoding="utf-8")
    for f in dataclasses.fields(TrainRecipe):
        assert f"`{f.name}`" in text, f"docs/training.md does not describe {f.name}"
