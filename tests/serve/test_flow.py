"""The photoshoot through the server, as a browser drives it: photos in (the rules and
messages of `likeness add`), near duplicates set aside, a dataset version, generation
scored against the photos, review decisions into the next version, a model card, and the
audit trail of it all. The user's folder stays a workspace the CLI opens."""

from __future__ import annotations

import io
import json
import time
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from likeness.cli.main import app as cli
from likeness.data import FACES
from likeness.serve.engines import EngineProvider
from likeness.serve.work import Services

from .builder import face_bytes, lora_file
from .test_queue import GEN, job_state, wait_for


def near_copy(data: bytes) -> bytes:
    """The photo again at 80% size, JPEG quality 60: a near duplicate."""
    img = Image.open(io.BytesIO(data)).convert("RGB")
    img = img.resize((int(img.width * 0.8), int(img.height * 0.8)))
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=60)
    return buf.getvalue()


def test_the_photoshoot_through_the_server(server, tmp_path):
    app = server.app()
    client, headers = server.client(app, "ana")
    # 1. Photos: good ones, a near duplicate, and bad files; one line per rejected file.
    obama = face_bytes("obama.jpg")
    biden = (FACES / "biden.jpg").read_bytes()
    files = {
        "obama.jpg": obama,
        "obama3.jpg": face_bytes("obama3.jpg"),
        "obama-small.jpg": near_copy(obama),
        "truncated.jpg": biden[: len(biden) // 3],
        "notes.jpg": b"not a picture",
        "empty.jpg": b"",
    }
    upload = client.post(
        "/api/studio/photos",
        files=[("files", (n, d, "image/jpeg")) for n, d in files.items()],
        headers=headers,
    )
    assert upload.status_code == 200
    results = {r["path"]: r for r in upload.json()["results"]}
    # The same files through `likeness add --json` get the same verdicts and messages.
    folder = tmp_path / "photos"
    folder.mkdir()
    for name, data in files.items():
        (folder / name).write_bytes(data)
    runner = CliRunner()
    assert runner.invoke(cli, ["init", str(tmp_path / "cli-ws"), "--name", "Ana"]).exit_code == 0
    added = runner.invoke(
        cli,
        [
            "--workspace",
            str(tmp_path / "cli-ws"),
            "add",
            *[str(folder / n) for n in files],
            "--json",
        ],
    )
    by_cli = {Path(r["path"]).name: r for r in json.loads(added.stdout)}
    for name in files:
        assert results[name]["status"] == by_cli[name]["status"], name
        assert results[name]["reason"] == by_cli[name]["reason"], name
    assert [results[n]["status"] for n in files] == [
        "stored",
        "stored",
        "near_duplicate",
        "rejected",
        "rejected",
        "rejected",
    ]
    # 2. Near duplicates: shown as a group, then set aside.
    photos = client.get("/api/studio/photos").json()
    assert [[m["name"] for m in g["exclude"]] for g in photos["groups"]] == [["obama-small.jpg"]]
    assert "Set aside near duplicates" in client.get("/studio").text
    assert client.post("/api/studio/dedup", headers=headers).json()["changed"] == 1
    excluded = [
        p["name"] for p in client.get("/api/studio/photos").json()["images"] if p["excluded"]
    ]
    assert excluded == ["obama-small.jpg"]
    # 3. A dataset version of the photos not set aside.
    made = client.post("/api/studio/datasets", json={"name": "mara"}, headers=headers).json()
    assert (made["ref"], made["count"]) == ("mara@v1", 2)
    assert client.get("/studio/datasets/mara").status_code == 200
    # 4. Generation, scored against the photos: obama2 passes, biden does not.
    job = client.post("/api/studio/generate", json={**GEN, "n": 2}, headers=headers).json()["job"]
    wait_for(lambda: job_state(client, job["id"])["state"] == "done", "generation")
    made_images = job_state(client, job["id"])["result"]["images"]
    assert [i["pass"] for i in made_images] == [True, False]
    assert made_images[0]["match"] > made_images[1]["match"]
    page = client.get(f"/studio/jobs/{job['id']}").text
    assert made_images[0]["sha256"] in page and "match pass" in page
    # 5. Review: the queue shows the same scores; the accepted image makes mara@v2.
    queue = client.get("/api/queue", params={"origin": "synthetic"}).json()["items"]
    shown = {i["sha256"]: i["metrics"]["match"] for i in queue}
    assert shown == {i["sha256"]: i["match"] for i in made_images}
    best = made_images[0]["sha256"]
    assert (
        client.post(
            "/api/decide", json={"sha256": best, "decision": "accepted"}, headers=headers
        ).json()["reviewer"]
        == "ana"
    )
    v2 = client.post("/api/to-dataset", json={"name": "mara"}, headers=headers).json()
    assert v2["ref"] == "mara@v2"
    # 6. A model card of two shots.
    card = client.post(
        "/api/studio/card",
        json={**GEN, "label": "v1", "shots": ["front_neutral", "front_smiling"], "tries": 1},
        headers=headers,
    ).json()["job"]
    wait_for(lambda: job_state(client, card["id"])["state"] == "done", "card")
    result = client.get("/api/studio/cards/v1").json()
    assert [s["id"] for s in result["per_shot"]] == ["front_neutral", "front_smiling"]
    assert all(len(s["attempts"]) == 1 for s in result["per_shot"])
    assert "front_smiling" in client.get("/studio/cards/v1").text
    # 7. The audit trail: who did what, in ana's own workspace.
    trail = client.get("/api/studio/audit").json()["entries"]
    actions = [e["action"] for e in reversed(trail)]
    for expected in (
        "sign-in",
        "POST /api/studio/photos",
        "POST /api/studio/dedup",
        "POST /api/studio/datasets",
        "POST /api/studio/generate",
        "job.generate.started",
        "job.generate.done",
        "POST /api/decide",
        "POST /api/to-dataset",
        "POST /api/studio/card",
        "job.card.done",
    ):
        assert expected in actions, (expected, actions)
    assert {e["actor"] for e in trail} == {"ana"}
    upload_row = next(e for e in trail if e["action"] == "POST /api/studio/photos")
    assert upload_row["detail"]["counts"] == {"stored": 2, "near_duplicate": 1, "rejected": 3}
    decide_row = next(e for e in trail if e["action"] == "POST /api/decide")
    assert decide_row["target"] == best and decide_row["detail"]["body"]["decision"] == "accepted"
    # 8. The folder is a plain workspace: the CLI opens it.
    ws = server.root / "users" / "ana"
    jobs = runner.invoke(cli, ["--workspace", str(ws), "jobs", "--json"])
    assert jobs.exit_code == 0, jobs.output
    assert {j["kind"] for j in json.loads(jobs.stdout)} >= {"generate", "card"}
    listed = runner.invoke(cli, ["--workspace", str(ws), "dataset", "list", "--json"])
    assert listed.exit_code == 0 and "mara@v2" in listed.stdout


@pytest.mark.slow
def test_a_tiny_diffusers_model_shared_by_the_admin(server):
    """The admin's engine as configured (diffusers, no test double) runs a tiny random-weight
    SDXL from the shared folder."""
    from likeness.engines.diffusers.tiny import save_tiny_pipeline
    from likeness.metrics.analysis import Instruments

    save_tiny_pipeline("sdxl", server.root / "shared" / "tiny-real")
    services = Services(
        engines=EngineProvider(server.settings.serve),
        instruments=Instruments(expression=None, pose=None),
    )
    app = server.app(services=services)
    client, headers = server.client(app, "ana")
    files = [("files", ("obama.jpg", face_bytes("obama.jpg"), "image/jpeg"))]
    assert client.post("/api/studio/photos", files=files, headers=headers).status_code == 200
    body = {"model": "tiny-real", "n": 1, "width": 64, "height": 64, "steps": 2, "seed": 3}
    job = client.post("/api/studio/generate", json=body, headers=headers).json()["job"]
    started = time.monotonic()
    wait_for(lambda: job_state(client, job["id"])["state"] in ("done", "failed"), "tiny", 180)
    done = job_state(client, job["id"])
    assert done["state"] == "done", done["error"]
    image = done["result"]["images"][0]
    assert image["sha256"] and image["error"] is None, image
    assert "no_face" in image["flags"]  # random weights draw no face
    review = client.get(f"/api/review/{image['sha256']}")
    assert review.status_code == 200
    png = client.get(f"/img/{image['sha256']}")
    assert png.headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(png.content)).size == (64, 64)
    assert time.monotonic() - started < 180


def test_a_lora_trained_elsewhere_joins_the_users_list(server, tmp_path):
    app = server.app(workers=False)
    client, headers = server.client(app, "ana")
    files = [("files", ("obama.jpg", face_bytes("obama.jpg"), "image/jpeg"))]
    client.post("/api/studio/photos", files=files, headers=headers)
    client.post("/api/studio/datasets", json={"name": "mara"}, headers=headers)
    data = lora_file(tmp_path / "mara_v1.safetensors", seed=4).read_bytes()
    added = client.post(
        "/api/studio/loras",
        files={"file": ("mara_v1.safetensors", data)},
        data={"dataset": "mara@v1", "family": "sdxl"},
        headers=headers,
    )
    assert added.status_code == 201, added.text
    lora = added.json()
    assert (lora["name"], lora["dataset"], lora["new"]) == ("mara_v1", "mara@v1", True)
    assert "path" not in lora
    stored = server.root / "users" / "ana" / "loras" / "mara_v1.safetensors"
    assert stored.read_bytes() == data
    assert [p.name for p in stored.parent.iterdir()] == ["mara_v1.safetensors"]  # no leftovers
    job = client.post(
        "/api/studio/generate",
        json={**GEN, "n": 1, "loras": [{"sha256": lora["sha256"], "strength": 0.8}]},
        headers=headers,
    )
    assert job.status_code == 202
    assert job.json()["job"]["params"]["recipe"]["loras"] == [
        {"path": str(stored), "strength": 0.8}
    ]
    # Not a LoRA: one line naming the file as uploaded, never a path on the server.
    bad = client.post(
        "/api/studio/loras", files={"file": ("notes.safetensors", b"hello")}, headers=headers
    )
    assert bad.status_code == 422
    assert (
        bad.json()["error"].startswith("notes.safetensors: ") and str(server.root) not in bad.text
    )
    pickle = client.post(
        "/api/studio/loras", files={"file": ("old.ckpt", b"x" * 64)}, headers=headers
    )
    assert pickle.status_code == 422 and "only .safetensors" in pickle.json()["error"]


@pytest.mark.slow
def test_the_real_trainer_runs_from_the_studio(server):
    """The server's own trainer (`likeness.train`) trains a tiny SD1.5 LoRA on a user's dataset
    version; the LoRA lands in that user's list, with its lineage, and nowhere else."""
    from likeness.engines.diffusers.tiny import save_tiny_pipeline
    from likeness.metrics.analysis import Instruments
    from likeness.serve.work import default_train_runner

    save_tiny_pipeline("sd15", server.root / "shared" / "tiny-sd15")
    runner = default_train_runner()
    assert runner is not None
    services = Services(
        engines=EngineProvider(server.settings.serve),
        instruments=Instruments(expression=None, pose=None),
        train=runner,
    )
    app = server.app(services=services)
    client, headers = server.client(app, "ana")
    files = [("files", (n, face_bytes(n), "image/jpeg")) for n in ("obama.jpg", "obama3.jpg")]
    assert client.post("/api/studio/photos", files=files, headers=headers).status_code == 200
    assert client.post("/api/studio/datasets", json={"name": "mara"}, headers=headers).is_success
    tiny = {"resolution": 64, "rank": 4, "alpha": 2.0, "warmup_steps": 0, "batch": 1,
            "checkpoint_every": 2, "mixed_precision": "no", "gradient_checkpointing": False,
            "save_precision": "fp32", "learning_rate": 1e-3,
            # one small probe judged per checkpoint; the shipped probes are card-sized
            "judge": {"probes": ["front_neutral"], "seeds": [1], "steps": 2,
                      "width": 64, "height": 64}}  # fmt: skip
    body = {"dataset": "mara@v1", "model": "tiny-sd15", "family": "sd15", "steps": 2,
            "recipe": tiny}  # fmt: skip
    answer = client.post("/api/studio/train", json=body, headers=headers)
    assert answer.status_code == 202, answer.text
    job_id = answer.json()["job"]["id"]
    wait_for(lambda: job_state(client, job_id)["state"] in ("done", "failed"), "training", 120)
    done = job_state(client, job_id)
    assert done["state"] == "done", done["error"]
    loras = client.get("/api/studio/loras").json()["loras"]
    assert [(x["name"], x["dataset"]) for x in loras] == [("mara-v1-step000002", "mara@v1")]
    assert "path" not in loras[0]
    ben, ben_headers = server.client(app, "ben")
    assert ben.get("/api/studio/loras", headers=ben_headers).json()["loras"] == []
