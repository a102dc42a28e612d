"""Quotas refuse before any work starts: images (stored plus what queued jobs may add),
disk bytes, training runs, jobs at once, files per upload; a user's own quota overrides the
server's default."""

from __future__ import annotations

from likeness.serve import accounts
from likeness.serve.serverdb import open_server_db

from .builder import blob_png
from .conftest import services_for


def set_quota(server, name: str, **limits) -> None:
    conn = open_server_db(server.root)
    try:
        accounts.set_quota(conn, name, **limits)
    finally:
        conn.close()


def upload(client, headers, seeds):
    files = [("files", (f"p{s}.png", blob_png(s), "image/png")) for s in seeds]
    return client.post("/api/studio/photos", files=files, headers=headers)


def test_image_quota_refuses_uploads_and_generations(server):
    set_quota(server, "ana", images=4)
    app = server.app(workers=False)
    client, headers = server.client(app, "ana")
    assert upload(client, headers, [1, 2]).status_code == 200
    too_many = upload(client, headers, [3, 4, 5])
    assert too_many.status_code == 403 and "limit of 4" in too_many.json()["error"]
    photos = client.get("/api/studio/photos").json()["images"]
    assert len(photos) == 2  # nothing of the refused upload was stored
    generate = {"model": "tiny-sdxl", "width": 64, "height": 64}
    assert (
        client.post("/api/studio/generate", json={**generate, "n": 2}, headers=headers).status_code
        == 202
    )
    # 2 stored + 2 queued: one more image would pass 4, whether uploaded or generated.
    refused = client.post("/api/studio/generate", json={**generate, "n": 1}, headers=headers)
    assert refused.status_code == 403 and "queued jobs may add 2" in refused.json()["error"]
    assert upload(client, headers, [6]).status_code == 403
    # Ben has the server default and is not affected.
    ben, ben_headers = server.client(app, "ben")
    assert upload(ben, ben_headers, [7, 8, 9]).status_code == 200
    usage = client.get("/api/studio/usage").json()
    assert usage["usage"]["images"] == 2 and usage["usage"]["pending_images"] == 2
    assert usage["limits"]["images"] == 4


def test_disk_quota(server):
    set_quota(server, "ana", disk_bytes=1)
    app = server.app(workers=False)
    client, headers = server.client(app, "ana")
    refused = upload(client, headers, [1])
    assert refused.status_code == 403 and "disk" in refused.json()["error"]
    assert client.get("/api/studio/photos").json()["images"] == []


def test_queued_jobs_and_training_runs(make_server_folder):
    server = make_server_folder(
        ("ana",),
    )
    set_quota(server, "ana", queued_jobs=2, train_runs=1)
    app = server.app(workers=False, services=services_for(server.settings, train=lambda ctx: {}))
    client, headers = server.client(app, "ana")
    assert upload(client, headers, [1, 2]).status_code == 200
    assert (
        client.post("/api/studio/datasets", json={"name": "set"}, headers=headers).status_code
        == 201
    )
    train = {"dataset": "set", "model": "tiny-sdxl", "steps": 10}
    assert client.post("/api/studio/train", json=train, headers=headers).status_code == 202
    second = client.post("/api/studio/train", json=train, headers=headers)
    assert second.status_code == 403 and "training runs" in second.json()["error"]
    gen = {"model": "tiny-sdxl", "n": 1}
    assert client.post("/api/studio/generate", json=gen, headers=headers).status_code == 202
    third = client.post("/api/studio/generate", json=gen, headers=headers)
    assert third.status_code == 403 and "queued or running" in third.json()["error"]
    # Cancelling a queued job frees its place.
    job = client.get("/api/studio/jobs").json()["jobs"][0]["id"]
    assert (
        client.post(f"/api/studio/jobs/{job}/cancel", headers=headers).json()["state"]
        == "cancelled"
    )
    assert client.post("/api/studio/generate", json=gen, headers=headers).status_code == 202


def test_files_per_upload(make_server_folder):
    server = make_server_folder(("ana",))
    from dataclasses import replace

    server.settings = replace(server.settings, quota=replace(server.settings.quota, upload_files=2))
    app = server.app(workers=False)
    client, headers = server.client(app, "ana")
    refused = upload(client, headers, [1, 2, 3])
    assert refused.status_code == 403 and "at most 2" in refused.json()["error"]
