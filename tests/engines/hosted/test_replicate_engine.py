"""The Replicate engine against the in-process test server: mapping, polling, provenance,
failures, cancel on Ctrl-C, rate limits and a dropped create that must not bill twice."""

from __future__ import annotations

import json

import pytest

from conftest import TOKEN, Sleeps, hosted_recipe, settings_for
from likeness.engines import EngineCannotHonour, get_engine
from likeness.engines.hosted import HostedBudgetExceeded, HostedError
from likeness.engines.hosted.secrets import find_token
from likeness.pnginfo import read_pnginfo


def test_generate_maps_the_recipe_and_stores_provenance(fake, make_engine):
    engine = make_engine("replicate")
    images = engine.generate(hosted_recipe(), 2)
    assert [i.seed for i in images] == [42, 43]
    sent = [w.body["input"] for w in fake.works_of("prediction")]
    assert sent[0] == {
        "prompt": "zkx1, raw photo, a man in a park, zkx1 portrait, visible skin pores",
        "seed": 42,
        "num_inference_steps": 28,
        "guidance": 3.5,
        "aspect_ratio": "2:3",
        "lora_weights": "https://huggingface.co/me/zk1-flux/resolve/main/lora.safetensors",
        "lora_scale": 0.8,
        "output_format": "png",
        "output_quality": 100,
        "go_fast": False,
        "num_outputs": 1,
    }
    assert sent[1]["seed"] == 43
    # The official model runs at /v1/models/{owner}/{name}/predictions, polled, no cancel.
    paths = [(m, p) for m, p, _ in fake.log.api]
    assert ("POST", "/v1/models/black-forest-labs/flux-dev-lora/predictions") in paths
    assert not any(p.endswith("/cancel") for _, p in paths)
    prov = images[0].provenance
    hosted = prov["hosted"]
    assert hosted["prediction_id"] == fake.works_of("prediction")[0].id
    assert hosted["version"] == "a" * 64 and prov["engine"]["version"] == "a" * 64
    assert hosted["predict_time"] == 2.5 and prov["timings"]["predict_s"] == 2.5
    assert hosted["cost_usd"] == pytest.approx(0.032) and hosted["cost_source"] == "estimated"
    assert hosted["price"] == "$0.032/image"
    assert (prov["width"], prov["height"]) != (832, 1248)  # the size of the photo served
    info = read_pnginfo(images[0].png)
    assert info.provenance == json.loads(json.dumps(prov))
    assert "Engine: replicate" in info.parameters
    # Outputs come from the CDN without the token.
    assert fake.log.cdn and all(auth is None for _, _, auth in fake.log.cdn)
    assert all(auth == f"Bearer {TOKEN}" for _, _, auth in fake.log.api)


def test_pinned_version_uses_the_predictions_endpoint(fake, make_engine):
    version = "b" * 64
    recipe = hosted_recipe(model=f"black-forest-labs/flux-dev-lora:{version}")
    image = make_engine().generate(recipe, 1)[0]
    assert ("POST", "/v1/predictions") in [(m, p) for m, p, _ in fake.log.api]
    assert image.provenance["hosted"]["version"] == version


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"family": "sdxl"}, "family"),
        ({"negative": "blurry"}, "negative"),
        ({"sampler": "dpmpp_2m"}, "sampler"),
        ({"scheduler": "karras"}, "scheduler"),
        ({"refiner.enabled": True}, "refiner.enabled"),
        ({"detailer.enabled": True}, "detailer.enabled"),
        ({"upscale.enabled": True}, "upscale.enabled"),
        ({"steps": 60}, "steps"),
        ({"cfg": 12.0}, "cfg"),
        ({"width": 832, "height": 1216}, "width"),
        ({"loras.0.path": "/tmp/zk1.safetensors"}, "loras.0.path"),
        ({"loras.1.path": "me/other", "loras.1.strength": 0.5}, "loras"),
        ({"engine_inputs.replicate.seed": 5}, "engine_inputs.replicate.seed"),
        ({"model": "someone/sdxl-model"}, "model"),
    ],
)
def test_check_refuses_what_the_model_cannot_do(fake, make_engine, changes, field):
    engine = make_engine()
    with pytest.raises(EngineCannotHonour) as caught:
        engine.check(hosted_recipe(**changes))
    assert caught.value.field == field
    assert "\n" not in str(caught.value)
    assert fake.log.api == []  # refused before any request


def test_local_lora_is_refused_with_the_reason(make_engine, tmp_path):
    lora = tmp_path / "zk1.safetensors"
    lora.write_bytes(b"x")
    with pytest.raises(EngineCannotHonour) as caught:
        make_engine().check(hosted_recipe(**{"loras.0.path": str(lora)}))
    assert "local file" in str(caught.value) and "Hugging Face" in str(caught.value)


def test_engine_inputs_are_sent_and_validated_by_the_server(fake, make_engine):
    recipe = hosted_recipe(**{"engine_inputs.replicate.go_fast": True,
                              "engine_inputs.replicate.megapixels": '"1"'})  # fmt: skip
    make_engine().generate(recipe, 1)
    sent = fake.works_of("prediction")[0].body["input"]
    assert sent["go_fast"] is True and sent["megapixels"] == "1"
    bad = hosted_recipe(**{"engine_inputs.replicate.go_fastest": True})
    with pytest.raises(HostedError) as caught:
        make_engine().generate(bad, 1)
    line = str(caught.value)
    assert line.startswith("replicate: POST /v1/models/black-forest-labs/flux-dev-lora/predictions")
    assert "HTTP 422" in line and "Additional property go_fastest is not allowed" in line
    assert "\n" not in line


def test_failed_prediction_is_one_readable_line(fake, make_engine):
    fake.faults.fail_next = "CUDA out of memory.\nTried to allocate 20.00 MiB"
    with pytest.raises(HostedError) as caught:
        make_engine().generate(hosted_recipe(), 1)
    line = str(caught.value)
    pid = fake.works_of("prediction")[0].id
    assert line.startswith(f"replicate prediction {pid} (black-forest-labs/flux-dev-lora, seed 42)")
    assert "failed: CUDA out of memory. Tried to allocate 20.00 MiB" in line
    assert "\n" not in line


def test_ctrl_c_cancels_the_running_prediction(fake, make_engine):
    fake.faults.hang = True

    def interrupt_on_third_pause(seconds: float) -> None:
        sleeps.append(seconds)
        if len(sleeps) == 3:
            raise KeyboardInterrupt

    sleeps: list[float] = []
    engine = make_engine(sleep=interrupt_on_third_pause)
    with pytest.raises(KeyboardInterrupt):
        engine.generate(hosted_recipe(), 2)
    (work,) = fake.works_of("prediction")  # the second image was never submitted
    assert work.cancelled and work.body["status"] == "canceled"
    assert ("POST", f"/v1/predictions/{work.id}/cancel") in [(m, p) for m, p, _ in fake.log.api]


def test_polling_backs_off_and_stops_at_the_timeout(fake, make_engine):
    fake.faults.hang = True
    clock = iter(range(0, 10_000, 7))
    engine = make_engine(
        settings=settings_for(fake, poll_interval=1.0, poll_max_interval=8.0, timeout=60.0),
        clock=lambda: float(next(clock)),
    )
    with pytest.raises(HostedError) as caught:
        engine.generate(hosted_recipe(), 1)
    assert "was not done after 60 s and was cancelled" in str(caught.value)
    pauses = engine.sleep
    assert pauses[:4] == [1.0, 1.5, 2.25, 3.375] and max(pauses) == 8.0
    assert fake.works_of("prediction")[0].cancelled


def test_rate_limit_is_waited_out_with_retry_after(fake, make_engine):
    fake.faults.rate_limit = 2
    fake.faults.retry_after = "3"
    engine = make_engine()
    engine.generate(hosted_recipe(), 1)
    assert engine.sleep[:2] == [3.0, 3.0]  # the create was refused twice, then sent once
    assert len(fake.works_of("prediction")) == 1


def test_dropped_create_is_found_not_sent_again(fake, make_engine):
    fake.faults.drop_next_create = 1
    image = make_engine().generate(hosted_recipe(), 1)[0]
    (work,) = fake.works_of("prediction")  # created once, never twice
    assert image.provenance["hosted"]["prediction_id"] == work.id
    creates = [p for m, p, _ in fake.log.api if m == "POST" and p.endswith("/predictions")]
    assert len(creates) == 1
    assert ("GET", "/v1/predictions") in [(m, p) for m, p, _ in fake.log.api]


def test_dropped_create_that_cannot_be_found_fails_without_resending(fake, make_engine):
    fake.faults.drop_next_create = 1
    original = fake._prediction

    def vanish(*args, **kwargs):  # the server answers nothing and lists nothing
        work = original(*args, **kwargs)
        fake.order.remove(work.id)
        return work

    fake._prediction = vanish
    with pytest.raises(HostedError) as caught:
        make_engine().generate(hosted_recipe(), 1)
    assert "nothing was sent again (no double billing)" in str(caught.value)
    creates = [p for m, p, _ in fake.log.api if m == "POST" and p.endswith("/predictions")]
    assert len(creates) == 1


def test_prefer_wait_returns_the_finished_prediction(fake, make_engine):
    engine = make_engine(settings=settings_for(fake, wait=30))
    engine.generate(hosted_recipe(), 1)
    gets = [p for m, p, _ in fake.log.api if m == "GET" and p.startswith("/v1/predictions/")]
    assert gets == []  # answered in the create itself


def test_budget_stops_before_submitting_more(fake, make_engine):
    engine = make_engine(max_images=2)
    engine.generate(hosted_recipe(), 2)
    with pytest.raises(HostedBudgetExceeded) as caught:
        engine.generate(hosted_recipe(seed=7), 1)
    assert "max_images = 2" in str(caught.value)
    assert len(fake.works_of("prediction")) == 2
    costly = make_engine(max_cost=0.05)
    with pytest.raises(HostedBudgetExceeded) as caught:
        costly.generate(hosted_recipe(seed=9), 3)
    assert "max_cost = $0.05" in str(caught.value)
    assert len(fake.works_of("prediction")) == 3  # one more: $0.032, the second would pass


def test_max_cost_needs_a_price(fake, make_engine):
    engine = make_engine(settings=settings_for(fake, prices={}), max_cost=1.0)
    with pytest.raises(EngineCannotHonour) as caught:
        engine.check(hosted_recipe())
    assert "no price" in str(caught.value)


def test_wrong_token_is_one_line(fake):
    from likeness.engines.hosted import HostedEngine
    from likeness.engines.hosted.secrets import ApiToken

    engine = HostedEngine("replicate", settings_for(fake), token=ApiToken("nope", "test"),
                          sleep=Sleeps())  # fmt: skip
    with pytest.raises(HostedError) as caught:
        engine.generate(hosted_recipe(), 1)
    assert "HTTP 401: Unauthenticated; You did not pass a valid authentication token" in str(
        caught.value
    )
    engine.close()


def test_token_comes_from_environment_or_keyring_and_never_shows(monkeypatch):
    token = find_token("replicate", environ={"REPLICATE_API_TOKEN": "r8_secret"})
    assert token.value == "r8_secret" and "r8_secret" not in repr(token) + str(token)
    stored = find_token("fal", environ={}, keyring_get=lambda service, name: f"{service}:{name}")
    assert stored.value == "likeness:FAL_KEY"
    with pytest.raises(HostedError) as caught:
        find_token("fal", environ={}, keyring_get=lambda s, n: None)
    assert "FAL_KEY" in str(caught.value)
    monkeypatch.delenv("REPLICATE_API_TOKEN", raising=False)
    monkeypatch.setattr("likeness.engines.hosted.secrets._keyring_lookup", lambda s, n: None)
    with pytest.raises(HostedError):
        get_engine("replicate")
