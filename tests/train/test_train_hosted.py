"""`likeness train RECIPE --engine replicate|fal` against the in-process hosted test server: the
recipe maps onto the hosted request (fields it cannot honour refused by name), the training is
run and resumed as the hosted path runs it, the LoRA is recorded with its lineage, and the
checkpoints are judged on the provider's FLUX LoRA model with real face photos."""

from __future__ import annotations

import pytest

from likeness.config import HostedSettings
from likeness.engines.hosted.http import PollPolicy
from likeness.engines.hosted.secrets import ApiToken
from likeness.store.loras import list_loras
from likeness.train import store
from likeness.train.hosted import hosted_request, train_hosted_recipe
from likeness.train.recipe import TrainRecipe
from likeness.train.run import TrainError
from tests.engines.hosted.fake_hosted import FakeHosted

TOKEN = "r8_Likeness_TEST_token_7f3a9c1e5b"
JUDGE = {"probes": ["front_neutral", "standing"], "seeds": [1], "steps": 28, "cfg": 3.5,
         "width": 832, "height": 1248}  # fmt: skip


class Sleeps(list):
    def __call__(self, seconds: float) -> None:
        self.append(seconds)


def options() -> dict:
    return {"token": ApiToken(TOKEN, "test"), "sleep": Sleeps(),
            "poll_policy": PollPolicy(interval=0.01, max_interval=0.02, timeout=60)}  # fmt: skip


@pytest.fixture
def fake(judge_ws):
    # Probes of the front shot show the man in a photo he was not trained on; the body shot
    # shows another man.
    def choose(inputs: dict) -> str:
        return "biden.jpg" if "full body" in inputs["prompt"] else "obama3.jpg"

    with FakeHosted(token=TOKEN, choose=choose) as server:
        settings = HostedSettings(replicate_url=server.url, fal_queue_url=server.url,
                                  fal_rest_url=server.url, poll_interval=0.01,
                                  poll_max_interval=0.02, timeout=60.0)  # fmt: skip
        judge_ws.save_settings(judge_ws.settings.replace(hosted=settings))
        yield server


def recipe(**fields) -> TrainRecipe:
    return TrainRecipe.from_dict({"family": "flux", "dataset": "obama@v1", "steps": 500,
                                  "judge": JUDGE, **fields})  # fmt: skip


def test_replicate_trains_records_the_lora_and_judges_its_trained_version(
    fake, judge_ws, instruments
):
    fake.models["me/obama-flux"] = fake._model_obj("me/obama-flux", "")
    fake.checkpoints = 1  # the archive also holds the step-250 file
    result = train_hosted_recipe(judge_ws, recipe(rank=32), "replicate",
                                 destination="me/obama-flux", instruments=instruments,
                                 **options())  # fmt: skip

    (training,) = fake.works_of("training")
    sent = training.body["input"]
    assert (sent["lora_rank"], sent["learning_rate"], sent["steps"]) == (32, 5e-5, 500)
    assert (sent["resolution"], sent["batch_size"], sent["trigger_word"]) == ("1024", 1,
                                                                               "vrexoq123")  # fmt: skip
    # The run, its checkpoints and the LoRA list, with lineage.
    assert result.state == "done" and [c["step"] for c in result.checkpoints] == [250, 500]
    loras = list_loras(judge_ws.db, dataset="obama", dataset_version=1)
    assert {(lora.steps, lora.source, lora.train_run) for lora in loras} == {
        (250, "trained", result.run_id), (500, "trained", result.run_id)}  # fmt: skip
    # The final LoRA is judged on Replicate's FLUX LoRA model with the trained version.
    probes = fake.works_of("prediction")
    assert len(probes) == 2
    version = fake.models["me/obama-flux"]["latest_version"]["id"]
    assert {p.body["input"]["lora_weights"] for p in probes} == {f"me/obama-flux/{version}"}
    final = result.checkpoints[1]
    metrics = final["metrics"]
    assert metrics["via"] == "replicate" and metrics["probes"] == 2
    assert metrics["pass_rate"] == 0.5  # obama3 passes, biden does not
    assert metrics["match"] is not None and metrics["memorised"] == 0
    assert result.best["step"] == 500
    assert result.checkpoints[0]["metrics"] is None
    assert any("step 250: not judged" in w for w in result.warnings)
    # Run again: the training is not paid twice, the judged checkpoint not judged twice.
    again = train_hosted_recipe(judge_ws, recipe(rank=32), "replicate",
                                destination="me/obama-flux", instruments=instruments,
                                **options())  # fmt: skip
    assert again.already_trained and again.run_id == result.run_id
    assert len(fake.works_of("training")) == 1 and len(fake.works_of("prediction")) == 2


def test_fal_judges_every_file_it_hands_back(fake, judge_ws, instruments):
    result = train_hosted_recipe(judge_ws, recipe(), "fal", instruments=instruments,
                                 **options())  # fmt: skip
    (training,) = fake.works_of("fal:fal-ai/flux-lora-fast-training")
    assert training.body["input"]["steps"] == 500
    probes = fake.works_of("fal:fal-ai/flux-lora")
    assert len(probes) == 2
    assert all(p.body["input"]["loras"][0]["path"].startswith(fake.cdn_url) for p in probes)
    (checkpoint,) = result.checkpoints
    assert checkpoint["metrics"]["via"] == "fal" and checkpoint["best"]
    assert store.get_run(judge_ws.db, result.run_id).final_lora == checkpoint["path"]


@pytest.mark.parametrize(
    ("provider", "fields", "field"),
    [
        ("replicate", {"alpha": 16.0}, "alpha"),
        ("replicate", {"lr_schedule": "cosine"}, "lr_schedule"),
        ("replicate", {"family": "sdxl", "judge": {"enabled": False}}, "family"),
        ("replicate", {"steps": 0, "epochs": 3, "warmup_steps": 0}, "epochs"),
        ("fal", {"rank": 32}, "rank"),
        ("fal", {"learning_rate": 1e-4}, "learning_rate"),
    ],
)
def test_fields_a_hosted_trainer_cannot_honour_are_refused_by_name(provider, fields, field):
    with pytest.raises(TrainError) as caught:
        hosted_request(recipe(**fields), provider, destination="me/x")
    assert str(caught.value).startswith(f"{field}:")


def test_probes_the_hosted_model_cannot_render_are_refused_before_training(
    fake, judge_ws, instruments
):
    bad = recipe(judge={**JUDGE, "height": 1216})  # 832x1216 is no aspect ratio Replicate offers
    with pytest.raises(TrainError, match=r"^judge\.width: .*2:3"):
        train_hosted_recipe(judge_ws, bad, "replicate", destination="me/obama-flux",
                            instruments=instruments, **options())  # fmt: skip
    assert fake.works_of("training") == []


def test_the_command_refuses_what_the_hosted_trainer_cannot_honour_in_one_line(judge_ws, tmp_path):
    from typer.testing import CliRunner

    from likeness.cli.main import app

    path = tmp_path / "flux.toml"
    path.write_text(recipe(alpha=16.0).to_toml())
    args = ["-w", str(judge_ws.root), "train", str(path), "--engine", "replicate",
            "--destination", "me/obama-flux"]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2
    assert result.stderr.count("\n") == 1 and "alpha: 16.0 cannot be honoured" in result.stderr
    other = CliRunner().invoke(app, [*args[:4], "--engine", "modal"])
    assert other.exit_code == 2 and "--engine: 'modal'" in other.stderr
