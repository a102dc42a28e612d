"""`likeness train export-config`: a dataset version with a kohya or ai-toolkit job that uses
Likeness' training defaults; the files parse, point at the exported images and captions, and
carry the dataset version and its hash for the LoRA to bring back."""

from __future__ import annotations

import json
import os
import tomllib
from dataclasses import replace
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from likeness.cli.main import app
from likeness.config import TrainingSettings
from likeness.curate.datasets import create_dataset_version
from likeness.curate.ingest import Ingester
from likeness.curate.selection import Selection
from likeness.store.datasets import resolve, version_sha256
from likeness.train.export_config import (
    ExportConfigError,
    TrainJob,
    export_training_config,
    lineage_from_metadata,
)
from tests.conftest import random_png

runner = CliRunner()


@pytest.fixture
def ws(workspace, tmp_path):
    ingester = Ingester(workspace, origin="source")
    for seed in range(3):
        assert ingester.ingest_file(random_png(tmp_path / f"s{seed}.png", seed)).status == "stored"
    create_dataset_version(workspace, "mara", Selection())
    return workspace


def captions_of(folder: Path) -> dict[str, str]:
    return {p.stem: p.read_text().strip() for p in folder.glob("*.txt")}


def test_kohya_dataset_and_job(ws, tmp_path):
    version = resolve(ws.db, "mara@v1")
    job = TrainJob.from_settings(TrainingSettings(), base_model="/models/bigLove.safetensors")
    result = export_training_config(ws, version, tmp_path / "out", "kohya", job)
    out = tmp_path / "out"
    dataset = tomllib.loads((out / "dataset.toml").read_text())
    [entry] = dataset["datasets"]
    [subset] = entry["subsets"]
    image_dir = out / subset["image_dir"]  # relative to the folder train.sh runs in
    assert sorted(p.suffix for p in image_dir.iterdir()) == [".png"] * 3 + [".txt"] * 3
    assert set(captions_of(image_dir).values()) == {item.caption for item in version.items}
    assert subset["caption_extension"] == ".txt" and subset["num_repeats"] == 10
    assert subset["class_tokens"] == f"{version.trigger} man"
    assert subset["caption_dropout_rate"] == 0.05
    assert entry["resolution"] == 1024 and entry["batch_size"] == 1
    config = tomllib.loads((out / "train.toml").read_text())
    flat = {k: v for section in config.values() for k, v in section.items()}  # as kohya reads it
    assert flat["pretrained_model_name_or_path"] == "/models/bigLove.safetensors"
    assert (flat["network_module"], flat["network_dim"], flat["network_alpha"]) == (
        "networks.lora", 64, 32.0)  # fmt: skip
    assert (flat["learning_rate"], flat["lr_warmup_steps"]) == (5e-5, 200)
    assert flat["lr_scheduler"] == "constant_with_warmup" and flat["mixed_precision"] == "bf16"
    assert flat["optimizer_type"] == "AdamW8bit" and flat["max_train_steps"] == 2000
    assert flat["dataset_config"] == "dataset.toml" and flat["save_every_n_steps"] == 250
    assert flat["network_train_unet_only"] is True and flat["cache_text_encoder_outputs"]
    assert lineage_from_metadata({"ss_training_comment": flat["training_comment"]}) == (
        "mara@v1", version_sha256(version))  # fmt: skip
    script = (out / "train.sh").read_text()
    assert os.access(out / "train.sh", os.X_OK) and 'cd "$(dirname "$0")"' in script
    assert '"$SD_SCRIPTS/sdxl_train_network.py" --config_file train.toml' in script
    assert result.dataset_sha256 == version_sha256(version) and result.warnings == ()
    assert set(result.files) == {"dataset_config", "job_config", "script"}


def test_ai_toolkit_job(ws, tmp_path):
    version = resolve(ws.db, "mara@v1")
    job = TrainJob.from_settings(TrainingSettings(), family="flux", base_model="/m/flux1-dev")
    export_training_config(ws, version, tmp_path / "out", "ai-toolkit", job)
    text = (tmp_path / "out" / "job.yaml").read_text()
    config = yaml.safe_load(text)
    assert config["job"] == "extension" and config["config"]["name"] == "mara-v1"
    [process] = config["config"]["process"]
    assert process["type"] == "sd_trainer" and process["trigger_word"] == version.trigger
    assert process["network"] == {"type": "lora", "linear": 64, "linear_alpha": 32.0}
    train = process["train"]
    assert (train["lr"], train["steps"], train["dtype"]) == (5e-5, 2000, "bf16")
    assert train["lr_scheduler"] == "constant_with_warmup"
    assert train["lr_scheduler_params"] == {"num_warmup_steps": 200}
    assert train["optimizer"] == "adamw8bit" and train["noise_scheduler"] == "flowmatch"
    assert process["model"] == {"name_or_path": "/m/flux1-dev", "arch": "flux", "quantize": True}
    [data] = process["datasets"]
    folder = tmp_path / "out" / data["folder_path"]
    assert len(captions_of(folder)) == 3 and data["caption_ext"] == "txt"
    assert data["resolution"] == [1024] and data["caption_dropout_rate"] == 0.05
    assert all("[trigger]" in p for p in process["sample"]["prompts"])
    assert lineage_from_metadata(config["meta"]) == ("mara@v1", version_sha256(version))
    assert 'python "$AI_TOOLKIT/run.py" job.yaml' in (tmp_path / "out" / "train.sh").read_text()


def test_settings_sd15_and_flux_parts(ws, tmp_path):
    version = resolve(ws.db, "mara@v1")
    settings = replace(TrainingSettings(), network_rank=32, learning_rate=1e-4)
    job = TrainJob.from_settings(settings, family="sd15")
    result = export_training_config(ws, version, tmp_path / "a", "kohya", job)
    flat = {k: v for s in tomllib.loads((tmp_path / "a" / "train.toml").read_text()).values()
            for k, v in s.items()}  # fmt: skip
    assert flat["network_dim"] == 32 and flat["learning_rate"] == 1e-4
    assert tomllib.loads((tmp_path / "a" / "dataset.toml").read_text())["datasets"][0][
        "resolution"] == 512  # fmt: skip
    assert "train_network.py" in result.command and "cache_text_encoder_outputs" not in flat
    assert result.warnings == (
        "no --base-model given: fill in the base model path before training",
    )
    flux = TrainJob.from_settings(TrainingSettings(), family="flux", base_model="f.safetensors",
                                  flux_parts={"clip_l": "clip_l.safetensors"})  # fmt: skip
    result = export_training_config(ws, version, tmp_path / "b", "kohya", flux)
    flat = {k: v for s in tomllib.loads((tmp_path / "b" / "train.toml").read_text()).values()
            for k, v in s.items()}  # fmt: skip
    assert flat["network_module"] == "networks.lora_flux" and flat["clip_l"] == "clip_l.safetensors"
    assert flat["t5xxl"] == "<path to T5-XXL file>" and flat["timestep_sampling"] == "shift"
    assert result.warnings == (
        "flux: fill in t5xxl in train.toml",
        "flux: fill in ae in train.toml",
    )


@pytest.mark.parametrize(
    "over,field",
    [
        ({"mixed_precision": "fp16", "family": "flux"}, "mixed_precision"),
        ({"rank": 0}, "rank"),
        ({"learning_rate": 2.0}, "learning_rate"),
        ({"resolution": 1000}, "resolution"),
        ({"optimizer": "lion"}, "optimizer"),
        ({"family": "sd3"}, "family"),
        ({"caption_dropout": 1.0}, "caption_dropout"),
    ],
)
def test_impossible_jobs_are_refused_before_writing(ws, tmp_path, over, field):
    job = replace(TrainJob(base_model="m"), **over)
    with pytest.raises(ExportConfigError) as info:
        export_training_config(ws, resolve(ws.db, "mara@v1"), tmp_path / "out", "kohya", job)
    assert info.value.field == field and not (tmp_path / "out").exists()


def test_fp16_for_sdxl_warns(ws, tmp_path):
    job = TrainJob(base_model="m", mixed_precision="fp16")
    result = export_training_config(ws, resolve(ws.db, "mara@v1"), tmp_path / "o", "kohya", job)
    assert any("NaN" in w for w in result.warnings)


def test_cli_json_warnings_and_refusals(ws, tmp_path):
    def invoke(*args):
        return runner.invoke(app, ["--workspace", str(ws.root), "train", "export-config", *args])

    result = invoke("mara@v1", str(tmp_path / "o"), "--format", "ai-toolkit", "--rank", "16",
                    "--steps", "500", "--json")  # fmt: skip
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["ref"] == "mara@v1" and data["format"] == "ai-toolkit"
    assert data["dataset"]["count"] == 3 and len(data["dataset_sha256"]) == 64
    assert data["warnings"] == [
        "no --base-model given: fill in the base model path before training"
    ]
    process = yaml.safe_load(Path(data["files"]["job_config"]).read_text())["config"]["process"][0]
    assert process["network"]["linear"] == 16 and process["train"]["steps"] == 500
    again = invoke("mara@v1", str(tmp_path / "o"))
    assert again.exit_code == 2 and "is not empty" in again.stderr
    text = invoke("mara@v1", str(tmp_path / "o"), "--overwrite", "--base-model", "b.safetensors")
    assert text.exit_code == 0 and "SD_SCRIPTS=" in text.stdout and not text.stderr
    bad = invoke("mara@v1", str(tmp_path / "p"), "--format", "onetrainer")
    assert bad.exit_code == 2 and "kohya or ai-toolkit" in bad.output
    missing = invoke("nope@v1", str(tmp_path / "p"))
    assert missing.exit_code == 2 and "no dataset nope@v1" in missing.stderr
    fp16 = invoke("mara@v1", str(tmp_path / "q"), "--family", "flux", "--mixed-precision", "fp16")
    assert fp16.exit_code == 2 and "mixed_precision: 'fp16' overflows" in fp16.stderr
