"""Hosted LoRA training against the in-process test server: a dataset version goes to the
trainer as a zip of images + captions, the training is followed, cancelled on Ctrl-C, resumed
instead of paid twice, and its LoRA lands in the workspace with sha256 and lineage."""

from __future__ import annotations

import io
import json
import zipfile

import pytest
from fake_hosted import TRAINER_VERSION

from conftest import TOKEN, Sleeps, settings_for
from likeness.curate.datasets import create_dataset_version
from likeness.curate.ingest import Ingester
from likeness.curate.selection import Selection
from likeness.engines import EngineCannotHonour
from likeness.engines.hosted import HostedError
from likeness.engines.hosted.http import PollPolicy
from likeness.engines.hosted.secrets import ApiToken
from likeness.engines.hosted.training import (
    HostedTrainer,
    HostedTrainingRequest,
    check_request,
    train_hosted,
)
from likeness.store.blobs import sha256_bytes

FAST = PollPolicy(interval=0.01, max_interval=0.02, timeout=60)


@pytest.fixture
def dataset(workspace, faces_dir):
    ingester = Ingester(workspace, origin="source")
    for name in ("obama.jpg", "obama2.jpg", "obama3.jpg"):
        assert ingester.ingest_file(faces_dir / name).status == "stored"
    return create_dataset_version(workspace, "elena", Selection(origins=("source",)))


def trainer(ws, fake, provider="replicate", sleep=None, **kwargs):
    return HostedTrainer(
        ws, provider, settings_for(fake), token=ApiToken(TOKEN, "test"),
        poll_policy=FAST, sleep=sleep or Sleeps(), **kwargs,
    )  # fmt: skip


def test_replicate_training_end_to_end(fake, workspace, dataset):
    fake.models["me/elena-flux"] = fake._model_obj("me/elena-flux", "")
    request = HostedTrainingRequest(
        dataset="elena@v1", destination="me/elena-flux", rank=64, learning_rate=4e-4,
        resolution=(512, 768, 1024), batch=1, steps=1000,
    )  # fmt: skip
    seen = []
    with trainer(workspace, fake) as runner:
        result = runner.train(request, progress=lambda *a: seen.append(a))
    # The zip: every image with its caption, flat; uploaded through the files API.
    (data,) = fake.files.values()
    names = zipfile.ZipFile(io.BytesIO(data)).namelist()
    assert len(names) == 6 and sum(n.endswith(".txt") for n in names) == 3
    caption = zipfile.ZipFile(io.BytesIO(data)).read(next(n for n in names if n.endswith(".txt")))
    assert dataset.trigger.encode() in caption
    # The training call: trainer version, destination, mapped inputs, autocaption off.
    (work,) = fake.works_of("training")
    path = f"/v1/models/ostris/flux-dev-lora-trainer/versions/{TRAINER_VERSION}/trainings"
    assert ("POST", path) in [(m, p) for m, p, _ in fake.log.api]
    sent = work.body["input"]
    assert sent["input_images"].startswith(f"{fake.url}/v1/files/")
    assert {k: v for k, v in sent.items() if k != "input_images"} == {
        "trigger_word": dataset.trigger, "steps": 1000, "lora_rank": 64,
        "learning_rate": 4e-4, "batch_size": 1, "resolution": "512,768,1024",
        "autocaption": False,
    }  # fmt: skip
    assert work.body["destination"] == "me/elena-flux"
    assert seen[0][:2] == (333, 1000) and "flux_train_replicate" in seen[0][2]
    # The LoRA in the workspace: blob + models/loras file + lineage.
    assert result.lora_path.parent == workspace.root / "models" / "loras"
    assert sha256_bytes(result.lora_path.read_bytes()) == result.sha256
    assert workspace.blobs.exists(result.sha256)
    lineage = json.loads(result.lora_path.with_suffix(".lineage.json").read_text())
    assert lineage["dataset"] == "elena@v1" and lineage["training_id"] == work.id
    assert lineage["trainer"] == "ostris/flux-dev-lora-trainer"
    assert lineage["trainer_version"] == TRAINER_VERSION
    assert lineage["hosted_model"] == "me/elena-flux" and len(lineage["hosted_version"]) == 64
    assert lineage["dataset_zip_sha256"] == sha256_bytes(data)
    assert lineage["cost_usd"] == pytest.approx(600 * 0.001528)
    assert lineage["cost_source"] == "estimated" and result.checkpoints == ()
    # The same request again: nothing is trained or paid twice.
    with trainer(workspace, fake) as runner:
        again = runner.train(request)
    assert again.reused and again.sha256 == result.sha256
    assert len(fake.works_of("training")) == 1


def test_checkpoints_in_the_archive_are_kept(fake, workspace, dataset):
    fake.checkpoints = 2
    fake.models["me/elena-flux"] = fake._model_obj("me/elena-flux", "")
    request = HostedTrainingRequest(dataset="elena", destination="me/elena-flux", steps=500)
    result = train_hosted(workspace, request, settings=settings_for(fake),
                          token=ApiToken(TOKEN, "t"), poll_policy=FAST, sleep=Sleeps())  # fmt: skip
    assert [c.step for c in result.checkpoints] == [250, 500]
    assert all(c.path.is_file() for c in result.checkpoints)
    assert len({c.sha256 for c in result.checkpoints} | {result.sha256}) == 3


def test_missing_destination_is_one_line_or_created(fake, workspace, dataset):
    request = HostedTrainingRequest(dataset="elena@v1", destination="me/new-model", steps=10)
    with trainer(workspace, fake) as runner, pytest.raises(HostedError) as caught:
        runner.train(request)
    assert "destination model me/new-model does not exist" in str(caught.value)
    assert fake.works_of("training") == []
    created = HostedTrainingRequest(dataset="elena@v1", destination="me/new-model", steps=10,
                                    create_destination=True)  # fmt: skip
    with trainer(workspace, fake) as runner:
        result = runner.train(created)
    assert fake.models["me/new-model"]["visibility"] == "private"
    assert result.lineage["hosted_model"] == "me/new-model"


def test_ctrl_c_cancels_the_training_and_a_rerun_starts_a_new_one(fake, workspace, dataset):
    fake.models["me/elena-flux"] = fake._model_obj("me/elena-flux", "")
    fake.training_polls = 50
    request = HostedTrainingRequest(dataset="elena@v1", destination="me/elena-flux", steps=10)

    def interrupt(seconds):
        raise KeyboardInterrupt

    with trainer(workspace, fake, sleep=interrupt) as runner, pytest.raises(KeyboardInterrupt):
        runner.train(request)
    (work,) = fake.works_of("training")
    assert work.cancelled and work.body["status"] == "canceled"
    job = workspace.db.execute(
        "SELECT state, params FROM jobs WHERE kind = 'hosted-train'"
    ).fetchone()
    assert job["state"] == "failed" and json.loads(job["params"])["run"]["id"] == work.id
    fake.training_polls = 2
    with trainer(workspace, fake) as runner:
        result = runner.train(request)
    assert len(fake.works_of("training")) == 2  # the cancelled one is not followed again
    assert result.lineage["training_id"] == fake.works_of("training")[1].id


def test_a_killed_run_follows_the_training_it_started(fake, workspace, dataset):
    fake.models["me/elena-flux"] = fake._model_obj("me/elena-flux", "")
    fake.training_polls = 4
    request = HostedTrainingRequest(dataset="elena@v1", destination="me/elena-flux", steps=10)

    class Killed(BaseException):
        pass

    def die(seconds):  # a network drop or a kill: the training keeps running
        raise Killed

    with trainer(workspace, fake, sleep=die) as runner, pytest.raises(Killed):
        runner.train(request)
    with trainer(workspace, fake) as runner:
        result = runner.train(request)
    (work,) = fake.works_of("training")
    assert not work.cancelled and result.lineage["training_id"] == work.id


def test_dropped_training_create_is_found_not_sent_again(fake, workspace, dataset):
    fake.models["me/elena-flux"] = fake._model_obj("me/elena-flux", "")
    fake.faults.drop_next_create = 1
    request = HostedTrainingRequest(dataset="elena@v1", destination="me/elena-flux", steps=10)
    with trainer(workspace, fake) as runner:
        result = runner.train(request)
    (work,) = fake.works_of("training")
    assert result.lineage["training_id"] == work.id


def test_fal_training_end_to_end(fake, workspace, dataset):
    request = HostedTrainingRequest(dataset="elena@v1", provider="fal", steps=1000)
    with trainer(workspace, fake, provider="fal") as runner:
        result = runner.train(request)
    (work,) = fake.works_of("fal:fal-ai/flux-lora-fast-training")
    sent = work.body["input"]
    assert sent["images_data_url"].startswith(f"{fake.cdn_url}/files/")
    assert {k: v for k, v in sent.items() if k != "images_data_url"} == {
        "trigger_word": dataset.trigger, "steps": 1000, "is_style": False, "create_masks": True,
    }  # fmt: skip
    (upload,) = [p for p in fake.files if p.startswith("/upload/")]
    assert zipfile.ZipFile(io.BytesIO(fake.files[upload])).testzip() is None
    assert result.lineage["training_id"] == work.id and result.lineage["provider"] == "fal"
    assert result.lineage["cost_usd"] == pytest.approx(2.0)
    assert sha256_bytes(result.lora_path.read_bytes()) == result.sha256


def test_fal_training_respects_max_cost(fake, workspace, dataset):
    request = HostedTrainingRequest(dataset="elena@v1", provider="fal", steps=1000)
    with trainer(workspace, fake, provider="fal", max_cost=1.0) as runner:
        from likeness.engines.hosted import HostedBudgetExceeded

        with pytest.raises(HostedBudgetExceeded):
            runner.train(request)
    assert fake.works_of("fal:fal-ai/flux-lora-fast-training") == []


@pytest.mark.parametrize(
    ("request_", "field"),
    [
        (HostedTrainingRequest(dataset="e@v1", destination=""), "destination"),
        (HostedTrainingRequest(dataset="e@v1", provider="fal", rank=64), "rank"),
        (HostedTrainingRequest(dataset="e@v1", destination="a/b", trainer="x/y"), "trainer"),
        (
            HostedTrainingRequest(
                dataset="e@v1", destination="a/b", trainer_inputs={"lora_rank": 8}
            ),
            "trainer_inputs.lora_rank",
        ),  # fmt: skip
        (HostedTrainingRequest(dataset="e@v1", destination="a/b", steps=0), "steps"),
    ],
)
def test_requests_the_trainer_cannot_take_are_refused(request_, field):
    with pytest.raises(EngineCannotHonour) as caught:
        check_request(request_)
    assert caught.value.field == field
