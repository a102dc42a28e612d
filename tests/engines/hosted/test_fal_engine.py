"""The fal engine against the in-process test server: the queue API's states, the input
mapping, local LoRA uploads, failures as one line, cancel on Ctrl-C, no resubmission."""

from __future__ import annotations

import pytest

from conftest import TOKEN, hosted_recipe
from likeness.engines.base import sha256_file
from likeness.engines.hosted import HostedError
from likeness.pnginfo import read_pnginfo


def test_generate_through_the_queue(fake, make_engine):
    engine = make_engine("fal")
    updates = []
    images = engine.generate(hosted_recipe("fal"), 2, progress=updates.append)
    works = fake.works_of("fal:fal-ai/flux-lora")
    assert len(works) == 2
    assert works[0].body["input"] == {
        "prompt": "zkx1, raw photo, a man in a park, zkx1 portrait, visible skin pores",
        "seed": 42,
        "num_inference_steps": 28,
        "guidance_scale": 3.5,
        "image_size": {"width": 832, "height": 1248},
        "loras": [
            {"path": "https://huggingface.co/me/zk1-flux/resolve/main/lora.safetensors",
             "scale": 0.8}
        ],
        "output_format": "png",
        "num_images": 1,
        "enable_safety_checker": True,
    }  # fmt: skip
    stages = [u.stage for u in updates]
    assert "queued" in stages and "sample" in stages
    assert any(u.step == 14 and u.steps == 28 for u in updates)  # parsed from the logs
    prov = images[1].provenance
    assert prov["hosted"]["request_id"] == works[1].id and prov["seed"] == 43
    assert prov["hosted"]["predict_time"] == 1.7
    megapixels = prov["width"] * prov["height"] / 1e6
    assert prov["hosted"]["cost_usd"] == pytest.approx(0.035 * megapixels, abs=1e-6)
    assert read_pnginfo(images[1].png).provenance["hosted"]["request_id"] == works[1].id
    paths = [(m, p) for m, p, _ in fake.log.api]
    rid = works[0].id
    assert ("GET", f"/fal-ai/flux-lora/requests/{rid}/status") in paths
    assert ("GET", f"/fal-ai/flux-lora/requests/{rid}") in paths
    assert all(auth == f"Key {TOKEN}" for _, _, auth in fake.log.api)
    assert all(auth is None for _, _, auth in fake.log.cdn)


def test_local_lora_is_uploaded_once_and_hashed(fake, make_engine, tmp_path):
    lora = tmp_path / "zk1.safetensors"
    lora.write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}      ")
    recipe = hosted_recipe("fal", **{"loras.0.path": str(lora)})
    engine = make_engine("fal")
    images = engine.generate(recipe, 2)
    uploads = [p for m, p, _ in fake.log.api if m == "PUT" and p.startswith("/upload/")]
    assert len(uploads) == 1 and fake.files[uploads[0]] == lora.read_bytes()
    sent = fake.works_of("fal:fal-ai/flux-lora")[0].body["input"]["loras"][0]["path"]
    assert sent.startswith(fake.cdn_url + "/files/")
    assert images[0].provenance["loras"][0]["sha256"] == sha256_file(lora)


def test_failed_request_is_one_line(fake, make_engine):
    fake.faults.fal_fail_next = "Could not download the LoRA weights"
    with pytest.raises(HostedError) as caught:
        make_engine("fal").generate(hosted_recipe("fal"), 1)
    rid = fake.works_of("fal:fal-ai/flux-lora")[0].id
    line = str(caught.value)
    assert line.startswith(f"fal request {rid} (fal-ai/flux-lora, seed 42) failed")
    assert "HTTP 422" in line and "loras.0.path: Could not download the LoRA weights" in line
    assert "\n" not in line


def test_ctrl_c_cancels_the_queued_request(fake, make_engine):
    fake.faults.hang = True
    pauses: list[float] = []

    def interrupt(seconds: float) -> None:
        pauses.append(seconds)
        if len(pauses) == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        make_engine("fal", sleep=interrupt).generate(hosted_recipe("fal"), 1)
    (work,) = fake.works_of("fal:fal-ai/flux-lora")
    assert work.cancelled
    assert ("PUT", f"/fal-ai/flux-lora/requests/{work.id}/cancel") in [
        (m, p) for m, p, _ in fake.log.api
    ]


def test_dropped_submit_is_not_sent_again(fake, make_engine):
    fake.faults.drop_next_create = 1
    with pytest.raises(HostedError) as caught:
        make_engine("fal").generate(hosted_recipe("fal"), 1)
    assert "was not sent again (no double billing)" in str(caught.value)
    assert len(fake.works_of("fal:fal-ai/flux-lora")) == 1
    assert [p for m, p, _ in fake.log.api if m == "POST"] == ["/fal-ai/flux-lora"]


def test_validation_error_body_is_one_line(fake, make_engine):
    recipe = hosted_recipe("fal", **{"engine_inputs.fal.strength": 0.5})
    with pytest.raises(HostedError) as caught:
        make_engine("fal").generate(recipe, 1)
    assert str(caught.value) == (
        "fal: POST /fal-ai/flux-lora answered HTTP 422: strength: extra fields not permitted"
    )
