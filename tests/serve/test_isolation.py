"""Three users on one server: every route and WebSocket, tried by each user with every other
user's identifiers (image hashes, review ids, dataset names, LoRA hashes, card labels, job
ids), answers exactly as for an id that never existed: 404 for an id in the path or body,
the same status and body (the id itself blanked) everywhere, so nothing leaks: no bytes, no
names, no counts.

The routes are read from `app.routes`: a new route that takes an id this test does not know
fails the test until it is covered.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import pytest
from fastapi import params as fastapi_params
from fastapi.routing import APIRoute, APIWebSocketRoute, iter_route_contexts
from fastapi.testclient import TestClient
from starlette.testclient import WebSocketDenialResponse

from .builder import BASE, ORIGIN, Holdings, fill_workspace, lora_file
from .conftest import Server, services_for

USERS = ("ana", "ben", "cai")
LORA_BYTES = b""  # filled once the fixture has made a LoRA file
# Path parameters that name a user's data, and the kind of data they name.
PATH_KINDS = {
    "sha": "images",
    "lora_sha": "loras",
    "dataset": "datasets",
    "label": "cards",
    "job_id": "jobs",
}
# Path parameters that name the app's own files (the same for everyone), not a user's data.
APP_FILES = {("/static/{name}", "name"), ("/assets/{name}", "name")}
# Body fields that name a user's data; each body model that has one needs a template here.
BODY_KINDS = {"sha256": "images", "loras": "loras", "dataset": "datasets"}
BODY_TEMPLATES: dict[str, dict[str, Any]] = {
    "DecideBody": {"decision": "accepted"},
    "UndoBody": {},
    "GenerateBody": {"model": "tiny-sdxl", "n": 1},
    "CardBody": {"model": "tiny-sdxl", "label": "probe", "shots": ["front_neutral"]},
    "TrainBody": {"model": "tiny-sdxl"},
}
# Multipart form fields that name a user's data; each such route needs its files here.
FORM_FILES: dict[str, Any] = {
    "/api/studio/loras": lambda: {"file": ("probe.safetensors", LORA_BYTES)},
}
# Query parameters that name a user's data (filters: a foreign name must filter like none).
QUERY_KINDS = {"dataset": "datasets"}


def never(kind: str) -> Any:
    """An identifier of `kind` that no user has."""
    if kind in ("images", "loras"):
        return secrets.token_hex(32)
    if kind == "jobs":
        return 900_000 + secrets.randbelow(99_999)
    return f"nobody-{secrets.token_hex(4)}"


@dataclass
class Params:
    path: list[Any]
    query: list[Any]
    body: list[Any]


def flat_params(dependant: Any) -> Params:
    """The parameters of a route and of every dependency it pulls in (e.g. the review
    queue's filter, whose `dataset` is a query parameter of a sub-dependency)."""
    found = Params(list(dependant.path_params), list(dependant.query_params), [])
    found.body = list(dependant.body_params)
    for sub in dependant.dependencies:
        more = flat_params(sub)
        found.path += more.path
        found.query += more.query
        found.body += more.body
    return found


@dataclass
class Attempt:
    method: str
    path: str
    where: str  # path, body, query or websocket
    kind: str
    body_model: str | None = None
    param: str | None = None


def attempts_for(app: Any) -> list[Attempt]:
    """Every (route, identifier slot) of the app, read from app.routes (included routers
    expanded to the routes they hold, with their prefixes)."""
    found: list[Attempt] = []
    for context in iter_route_contexts(app.routes):
        route = context.original_route
        path = context.path
        if isinstance(route, APIWebSocketRoute):
            params = [p.name for p in flat_params(route.dependant).path]
            for name in params:
                assert name in PATH_KINDS, f"WebSocket {path}: unknown id {name!r}"
                found.append(Attempt("WS", path, "websocket", PATH_KINDS[name], param=name))
            continue
        if not isinstance(route, APIRoute):
            continue
        flat = flat_params(route.dependant)
        for method in sorted((context.methods or set()) - {"HEAD"}):
            for p in flat.path:
                if (path, p.name) in APP_FILES:
                    continue
                assert p.name in PATH_KINDS, (
                    f"{method} {path}: path parameter {p.name!r} is not known to the "
                    "isolation test; add its kind to PATH_KINDS"
                )
                found.append(Attempt(method, path, "path", PATH_KINDS[p.name], param=p.name))
            for q in flat.query:
                if q.name in QUERY_KINDS:
                    found.append(Attempt(method, path, "query", QUERY_KINDS[q.name], param=q.name))
            for b in flat.body:
                if isinstance(b.field_info, fastapi_params.Form):  # multipart: File is a Form too
                    if b.name in BODY_KINDS:
                        assert path in FORM_FILES, f"{method} {path}: form field {b.name!r}"
                        found.append(
                            Attempt(method, path, "form", BODY_KINDS[b.name], param=b.name)
                        )
                    continue
                model = getattr(b.field_info.annotation, "__name__", "")
                fields = getattr(b.field_info.annotation, "model_fields", {})
                for name in fields:
                    if name in BODY_KINDS:
                        assert model in BODY_TEMPLATES, (
                            f"{method} {path}: body {model} names {name!r}; add a template"
                        )
                        found.append(Attempt(method, path, "body", BODY_KINDS[name], model, name))
    return found


@pytest.fixture
def three(make_server_folder: Any) -> Iterator[tuple[Server, dict[str, Holdings], Any]]:
    server = make_server_folder(USERS)
    global LORA_BYTES
    LORA_BYTES = lora_file(server.root / "probe.safetensors", seed=99).read_bytes()
    held = {name: fill_workspace(server.root, name, seed) for seed, name in enumerate(USERS, 1)}
    # Training available (its runner is never reached: no worker runs), jobs stay queued.
    app = server.app(workers=False, services=services_for(server.settings, train=lambda ctx: {}))
    yield server, held, app


def send(
    client: TestClient, headers: dict[str, str], attempt: Attempt, value: Any, own: Holdings
) -> Any:
    """One request with `value` in the attempt's slot (other path ids: the user's own);
    (status, content type, body)."""
    path = attempt.path
    body: dict[str, Any] | None = None
    params: dict[str, Any] = {}
    if attempt.where in ("path", "websocket"):
        path = path.replace("{" + (attempt.param or "") + "}", quote(str(value), safe=""))
    for name, kind in PATH_KINDS.items():
        path = path.replace("{" + name + "}", quote(str(getattr(own, kind)[0]), safe=""))
    if attempt.where == "query":
        params[attempt.param or ""] = value
    if attempt.where == "body":
        body = dict(BODY_TEMPLATES[attempt.body_model or ""])
        body[attempt.param or ""] = (
            [{"sha256": value, "strength": 0.7}] if attempt.param == "loras" else value
        )
    if attempt.where == "form":
        answer = client.post(
            path,
            data={attempt.param or "": value},
            files=FORM_FILES[attempt.path](),
            headers=headers,
        )
        return (answer.status_code, answer.headers.get("content-type"), answer.content)
    if attempt.where == "websocket":
        try:
            with client.websocket_connect(f"wss://{BASE[8:]}{path}", headers=ORIGIN) as ws:
                return ("opened", None, ws.receive_text())
        except WebSocketDenialResponse as denied:
            return (denied.status_code, denied.headers.get("content-type"), denied.content)
    if attempt.method in ("POST", "PUT", "PATCH", "DELETE"):
        answer = client.request(attempt.method, path, json=body, params=params, headers=headers)
    else:
        answer = client.request(attempt.method, path, params=params, follow_redirects=False)
    return (answer.status_code, answer.headers.get("content-type"), answer.content)


def blank(result: Any, value: Any) -> Any:
    status, kind, content = result
    if isinstance(content, str):
        content = content.encode()
    for form in {str(value), quote(str(value), safe="")}:
        content = content.replace(form.encode(), b"<id>")
    return status, kind, content


def test_every_route_answers_another_users_ids_as_never_existing(three):
    server, held, app = three
    attempts = attempts_for(app)
    kinds = {a.kind for a in attempts}
    assert kinds == {"images", "loras", "datasets", "cards", "jobs"}, kinds
    assert any(a.where == "websocket" for a in attempts)
    sessions = {name: server.client(app, name) for name in USERS}
    tried = 0
    for attacker, (client, headers) in sessions.items():
        for victim in USERS:
            if victim == attacker:
                continue
            for attempt in attempts:
                for value in getattr(held[victim], attempt.kind):
                    foreign = blank(send(client, headers, attempt, value, held[attacker]), value)
                    absent_value = never(attempt.kind)
                    absent = blank(
                        send(client, headers, attempt, absent_value, held[attacker]), absent_value
                    )
                    where = f"{attacker} -> {victim}'s {attempt.kind} {value!r} at {attempt}"
                    assert foreign == absent, where
                    if attempt.where in ("path", "body", "form", "websocket"):
                        assert foreign[0] == 404, where
                    tried += 1
    assert tried >= 200, tried


def test_the_same_routes_do_answer_a_users_own_ids(three):
    """The control: with the user's own ids the routes find things (the 404s above are not
    those of routes that find nothing for anyone)."""
    server, held, app = three
    client, headers = server.client(app, "ana")
    own = held["ana"]
    for attempt in attempts_for(app):
        if attempt.where != "path" or attempt.method != "GET":
            continue
        value = getattr(own, attempt.kind)[0]
        status, _kind, _content = send(client, headers, attempt, value, own)
        assert status == 200, (attempt, status)


def test_a_foreign_job_cannot_be_cancelled_or_watched(three):
    server, held, app = three
    client, headers = server.client(app, "ana")
    ben_waiting = held["ben"].jobs[1]
    assert client.post(f"/api/studio/jobs/{ben_waiting}/cancel", headers=headers).status_code == 404
    ben, ben_headers = server.client(app, "ben")
    assert ben.get(f"/api/studio/jobs/{ben_waiting}").json()["state"] == "queued"
    assert (
        ben.post(f"/api/studio/jobs/{ben_waiting}/cancel", headers=ben_headers).json()["state"]
        == "cancelled"
    )


def test_lists_hold_only_the_users_own_data(three):
    server, held, app = three
    client, _ = server.client(app, "ana")
    everything = b"".join(
        client.get(path).content
        for path in (
            "/",
            "/studio",
            "/api/queue",
            "/api/studio/photos",
            "/api/studio/datasets",
            "/api/studio/loras",
            "/api/studio/jobs",
            "/api/studio/cards",
            "/api/studio/audit",
            "/export/corrections.jsonl",
        )
    )
    for other in ("ben", "cai"):
        for kind in ("images", "datasets", "loras", "cards"):
            for value in getattr(held[other], kind):
                assert str(value).encode() not in everything, (other, kind, value)
        assert other.encode() not in everything
    assert all(sha.encode() in everything for sha in held["ana"].images)


def test_users_working_at_once_each_write_only_their_own_workspace(three):
    """Three clients deciding at the same time, on a server whose requests run on a thread
    pool: every decision lands in its user's database, under its user's name."""
    import sqlite3
    import threading

    server, held, app = three
    sessions = {name: server.client(app, name) for name in USERS}
    failures: list[str] = []

    def decide(name: str) -> None:
        client, headers = sessions[name]
        for i in range(30):
            sha = held[name].images[i % 3]
            state = ("accepted", "rejected", "undecided")[i % 3]
            answer = client.post(
                "/api/decide", json={"sha256": sha, "decision": state}, headers=headers
            )
            if answer.status_code != 200:
                failures.append(f"{name}: {answer.status_code} {answer.text}")

    threads = [threading.Thread(target=decide, args=(name,)) for name in USERS]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == []
    for name in USERS:
        db = sqlite3.connect(server.root / "users" / name / "likeness.db")
        reviewers = db.execute(
            "SELECT reviewer, COUNT(*) FROM review_history GROUP BY 1"
        ).fetchall()
        images = {r[0] for r in db.execute("SELECT DISTINCT image_sha FROM review_history")}
        audit = db.execute(
            "SELECT COUNT(*) FROM audit WHERE action = 'POST /api/decide' AND actor = ?", (name,)
        ).fetchone()[0]
        db.close()
        assert reviewers == [(name, 31)]  # the builder's decision plus these 30
        assert images == set(held[name].images)
        assert audit == 30
