"""The job queue: jobs run in workers (never on the event loop: pages answer while one runs),
survive a restart (a job cut short resumes without making an image twice), can be cancelled,
fail with one line, and reach a trainer through the same queue."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from likeness.serve import queue
from likeness.serve.serverdb import open_server_db
from likeness.store.db import connect
from likeness.train.lora_files import add_lora
from tests.evaluate.photo_engine import PhotoEngine
from tests.review.test_browser import wait_until

from .builder import HOST, face_bytes, lora_file
from .conftest import Server, services_for
from .engines import GENERATED, GatedEngine


def wait_for(check: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    wait_until(check, what, timeout)


def with_photos(server: Server, app, name: str = "ana"):
    client, headers = server.client(app, name)
    files = [("files", (n, face_bytes(n), "image/jpeg")) for n in ("obama.jpg", "obama3.jpg")]
    assert client.post("/api/studio/photos", files=files, headers=headers).status_code == 200
    return client, headers


def job_state(client, job_id: int) -> dict:
    return client.get(f"/api/studio/jobs/{job_id}").json()


def images(server: Server, name: str = "ana") -> list[tuple]:
    conn = connect(server.root / "users" / name / "likeness.db", migrate=False)
    try:
        return conn.execute(
            "SELECT sha256, original_name FROM images WHERE origin = 'synthetic' ORDER BY sha256"
        ).fetchall()
    finally:
        conn.close()


GEN = {"model": "tiny-sdxl", "width": 64, "height": 64, "steps": 2, "seed": 10}


def test_pages_answer_while_a_job_runs_and_cancel_keeps_what_was_made(server):
    engine = GatedEngine()
    app = server.app(services=services_for(server.settings, engine=lambda: engine))
    client, headers = with_photos(server, app)
    job = client.post("/api/studio/generate", json={**GEN, "n": 3}, headers=headers).json()["job"]
    assert engine.waiting.wait(30)
    # The worker is inside the engine: the job is running, and every page still answers.
    assert job_state(client, job["id"])["state"] == "running"
    for path in ("/studio", "/", "/api/queue", f"/studio/jobs/{job['id']}", "/api/studio/jobs"):
        assert client.get(path).status_code == 200, path
    assert job_state(client, job["id"])["state"] == "running"
    # Cancel: the image being made is stored, then the job stops.
    cancelled = client.post(f"/api/studio/jobs/{job['id']}/cancel", headers=headers).json()
    assert cancelled["cancel"] is True and cancelled["state"] == "running"
    engine.gate.set()
    wait_for(lambda: job_state(client, job["id"])["state"] == "cancelled", "cancelled")
    assert len(images(server)) == 1


# The worker thread is meant to die (as a killed process would): its exception is expected.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_a_job_cut_short_resumes_after_a_restart_without_duplicates(server):
    # 1. A worker dies inside the second image.
    dying = PhotoEngine(lambda recipe, seed: GENERATED[seed % 2], fail_after=1)
    first = server.app(services=services_for(server.settings, engine=lambda: dying))
    client, headers = with_photos(server, first)
    job = client.post("/api/studio/generate", json={**GEN, "n": 3}, headers=headers).json()["job"]
    wait_for(lambda: len(dying.calls) == 1 and job_state(client, job["id"])["done"] >= 1, "1 image")
    time.sleep(0.3)
    assert job_state(client, job["id"])["state"] == "running"  # nobody will finish it
    assert len(images(server)) == 1
    server.close()
    # 2. The server starts again: the job goes back to the queue and finishes.
    fresh = PhotoEngine(lambda recipe, seed: GENERATED[seed % 2])
    second = server.app(services=services_for(server.settings, engine=lambda: fresh))
    client, _ = server.client(second, "ana")
    wait_for(lambda: job_state(client, job["id"])["state"] == "done", "resumed job")
    finished = job_state(client, job["id"])
    assert finished["attempts"] == 2
    assert [i["seed"] for i in finished["result"]["images"]] == [10, 11, 12]
    # The image made before the stop was not made again; the others were made once each.
    assert [seed for _name, seed in fresh.calls] == [11, 12]
    stored = images(server)
    assert len(stored) == len({sha for sha, _ in stored})
    assert {i["sha256"] for i in finished["result"]["images"]} <= {sha for sha, _ in stored}


def test_stopping_the_server_puts_the_running_job_back_and_the_next_start_finishes_it(server):
    engine = GatedEngine()
    first = server.app(services=services_for(server.settings, engine=lambda: engine))
    client, headers = with_photos(server, first)
    job = client.post("/api/studio/generate", json={**GEN, "n": 3}, headers=headers).json()["job"]
    assert engine.waiting.wait(30)
    stopping = threading.Thread(target=server.close)  # the lifespan ends: workers stop
    stopping.start()
    time.sleep(0.2)
    engine.gate.set()  # the image being made is stored; the job stops at its next report
    stopping.join(30)
    assert not stopping.is_alive()
    conn = open_server_db(server.root)
    state, done = conn.execute(
        "SELECT state, done FROM queue WHERE id = ?", (job["id"],)
    ).fetchone()
    conn.close()
    assert (state, done) == ("queued", 0) and len(images(server)) == 1
    fresh = PhotoEngine(lambda recipe, seed: GENERATED[seed % 2])
    client, _ = server.client(
        server.app(services=services_for(server.settings, engine=lambda: fresh)), "ana"
    )
    wait_for(lambda: job_state(client, job["id"])["state"] == "done", "finished after the restart")
    assert [seed for _name, seed in fresh.calls] == [11, 12]
    assert len(images(server)) == 2  # seeds 10 and 12 make the same photo: stored once
    trail = [e["action"] for e in client.get("/api/studio/audit").json()["entries"]]
    assert "job.generate.interrupted" in trail


def test_a_job_whose_model_went_away_fails_with_one_line(server):
    # Queued while the model is there (no worker yet), run after it was removed.
    model = server.root / "shared" / "gone-sdxl"
    model.mkdir()
    (model / "model_index.json").write_text("{}")
    client, headers = with_photos(server, server.app(workers=False))
    answer = client.post(
        "/api/studio/generate", json={**GEN, "model": "gone-sdxl", "n": 1}, headers=headers
    )
    assert answer.status_code == 202
    job_id = answer.json()["job"]["id"]
    (model / "model_index.json").unlink()
    model.rmdir()
    client, _ = server.client(server.app(), "ana")
    wait_for(lambda: job_state(client, job_id)["state"] in ("done", "failed"), "job end")
    failed = job_state(client, job_id)
    assert failed["state"] == "failed"
    assert failed["error"].startswith("RecipeRefused: model:"), failed["error"]
    assert "\n" not in failed["error"]
    trail = client.get("/api/studio/audit").json()["entries"]
    assert any(e["action"] == "job.generate.failed" and e["target"] == str(job_id) for e in trail)


def test_training_runs_through_the_queue(server):
    """A train job calls the trainer as a library function with the user's workspace; what
    it records (a LoRA on the dataset version) is the user's to pick for generation."""
    seen: list[tuple[str, str]] = []

    def trainer(ctx):
        recipe = ctx.params["recipe"]
        seen.append((recipe["dataset"], recipe["model"]))
        ctx.progress(0, 2, "step 1")
        path = lora_file(Path(ctx.ws.root) / "trained.safetensors", seed=5)
        added = add_lora(
            ctx.ws, path, dataset=recipe["dataset"], family="sdxl", name=recipe["name"]
        )
        ctx.progress(2, 2, "done")
        return {"final_lora": added.row.path}

    app = server.app(services=services_for(server.settings, train=trainer))
    client, headers = with_photos(server, app)
    assert (
        client.post("/api/studio/datasets", json={"name": "mara"}, headers=headers).status_code
        == 201
    )
    page = client.get("/studio").text
    assert 'id="train-form"' in page
    answer = client.post(
        "/api/studio/train", json={"dataset": "mara@v1", "model": "tiny-sdxl"}, headers=headers
    )
    assert answer.status_code == 202, answer.text
    job_id = answer.json()["job"]["id"]
    wait_for(lambda: job_state(client, job_id)["state"] == "done", "training")
    assert seen == [("mara@v1", str(server.root / "shared" / "tiny-sdxl"))]
    loras = client.get("/api/studio/loras").json()["loras"]
    assert [(x["name"], x["dataset"]) for x in loras] == [("mara-v1", "mara@v1")]
    assert "path" not in loras[0]
    foreign = client.post(
        "/api/studio/train", json={"dataset": "nobody@v1", "model": "tiny-sdxl"}, headers=headers
    )
    assert foreign.status_code == 404


def test_without_a_trainer_the_studio_offers_no_training(server):
    app = server.app(workers=False)
    client, headers = server.client(app, "ana")
    assert 'id="no-train"' in client.get("/studio").text
    answer = client.post(
        "/api/studio/train", json={"dataset": "x", "model": "tiny-sdxl"}, headers=headers
    )
    assert answer.status_code == 501


def test_queue_rows_are_scoped_and_claimed_fairly(tmp_path):
    from likeness.serve import accounts

    conn = open_server_db(tmp_path)
    ana, _ = accounts.add_user(conn, tmp_path, "ana")
    ben, _ = accounts.add_user(conn, tmp_path, "ben")
    a1 = queue.enqueue(conn, ana.id, "generate", {}, total=1)
    a2 = queue.enqueue(conn, ana.id, "generate", {}, total=1)
    b1 = queue.enqueue(conn, ben.id, "generate", {}, total=1)
    assert queue.get_job(conn, ben.id, a1.id) is None
    assert queue.request_cancel(conn, ben.id, a1.id) is None
    # Ana's first job runs; the next worker takes Ben's before Ana's second.
    assert queue.claim_next(conn, "w1").id == a1.id
    assert queue.claim_next(conn, "w2").id == b1.id
    assert queue.claim_next(conn, "w3").id == a2.id
    assert queue.requeue_interrupted(conn) == 3
    assert {j.state for j in queue.list_jobs(conn, ana.id)} == {"queued"}
    conn.close()


@pytest.mark.slow
def test_jobs_run_in_a_worker_process(make_server_folder):
    """The default worker mode: a separate process builds the engines from serve.toml's
    settings (here a factory of the tests) and runs the job; the server only reads rows."""
    server = make_server_folder(("ana",))
    (server.root / "serve.toml").write_text(
        "[serve]\n"
        f'shared_models = ["{server.root / "shared"}"]\n'
        f'hosts = ["{HOST}"]\n'
        'engine_factories = { diffusers = "tests.serve.engines:photo_engine" }\n'
    )
    from likeness.serve.app import create_server_app

    app = create_server_app(server.root)  # settings from serve.toml: process workers
    client, headers = with_photos(server, app)
    job = client.post("/api/studio/generate", json={**GEN, "n": 1}, headers=headers).json()["job"]
    wait_for(lambda: job_state(client, job["id"])["state"] in ("done", "failed"), "job", 120)
    done = job_state(client, job["id"])
    assert done["state"] == "done", done["error"]
    assert done["result"]["images"][0]["match"] is not None
    conn = open_server_db(server.root)
    assert conn.execute("SELECT worker FROM queue").fetchone()[0] == "process-0"
    conn.close()
