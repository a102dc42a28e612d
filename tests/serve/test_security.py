"""Who may talk to the server: sign-in by token (stored as a sha256, compared in constant
time), server-side sessions in Secure HttpOnly SameSite=Strict cookies, a CSRF token on every
change, the Host and Origin guards, and every non-public route closed without a session.
Routes are read from `app.routes`, so a new one is covered."""

from __future__ import annotations

import hmac
import re
import sqlite3
from http.cookies import SimpleCookie

import pytest
from fastapi.routing import APIRoute, APIWebSocketRoute, iter_route_contexts
from fastapi.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from likeness.serve import accounts
from likeness.serve.serverdb import SERVER_DB, open_server_db
from likeness.serve.sessions import create_session, lookup_session

from .builder import BASE, HOST, ORIGIN

PUBLIC = {("GET", "/login"), ("POST", "/login"), ("GET", "/assets/{name}"), ("GET", "/healthz")}
UNSAFE = {"POST", "PUT", "PATCH", "DELETE"}


def routes(app):
    """(method, path) of every HTTP route, and the WebSocket paths."""
    http, sockets = [], []
    for context in iter_route_contexts(app.routes):
        if isinstance(context.original_route, APIWebSocketRoute):
            sockets.append(context.path)
        elif isinstance(context.original_route, APIRoute):
            http += [(m, context.path) for m in sorted(context.methods - {"HEAD"})]
    return http, sockets


def concrete(path: str) -> str:
    """A path with every parameter filled (ids that exist nowhere: the route must not care)."""
    return re.sub(r"\{[a-z_]+\}", lambda m: "1" if m.group() == "{job_id}" else "0" * 64, path)


def set_cookie_headers(response) -> dict[str, str]:
    return {c.split("=", 1)[0]: c for c in response.headers.get_list("set-cookie")}


def test_session_cookie_flags(server):
    app = server.app(workers=False)
    client, _ = server.client(app)
    page = client.get("/login")
    login = set_cookie_headers(page)["__Host-likeness_login"]
    csrf = re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)
    answer = client.post(
        "/login",
        data={"name": "ana", "token": server.tokens["ana"], "csrf": csrf},
        headers=ORIGIN,
        follow_redirects=False,
    )
    assert answer.status_code == 303 and answer.headers["location"] == "/studio"
    cookie = set_cookie_headers(answer)["__Host-likeness_session"]
    for flag in ("Secure", "HttpOnly", "SameSite=strict", "Path=/"):
        assert flag in cookie and flag in login, (flag, cookie, login)
    assert "Domain" not in cookie  # __Host-: no domain, so no subdomain shares it
    parsed = SimpleCookie()
    parsed.load(cookie)
    value = parsed["__Host-likeness_session"].value
    assert len(value) >= 40
    # The server keeps the session by the sha256 of the value only.
    assert value.encode() not in (server.root / SERVER_DB).read_bytes()


def test_tokens_are_stored_as_sha256_only(server, tmp_path):
    conn = open_server_db(server.root)
    try:
        row = conn.execute("SELECT token_sha256 FROM users WHERE name = 'ana'").fetchone()
        assert row[0] == accounts.token_digest(server.tokens["ana"])
        user, token = accounts.add_user(conn, server.root, "dee")
        assert accounts.verify_token(conn, "dee", token) == user
        assert accounts.verify_token(conn, "dee", token[:-1] + "x") is None
        assert accounts.verify_token(conn, "ana", token) is None
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()
    # Nowhere in the server folder (database, WAL, workspaces) is any token written.
    files = [p for p in server.root.rglob("*") if p.is_file()]
    assert any(p.name == SERVER_DB for p in files)
    for path in files:
        data = path.read_bytes()
        for secret in (*server.tokens.values(), token):
            assert secret.encode() not in data, path


def test_tokens_are_compared_in_constant_time(server, monkeypatch):
    """Every check goes through hmac.compare_digest on digests of equal length, for a known
    name and an unknown one alike (an unknown name costs what a wrong token costs)."""
    calls: list[tuple[int, int]] = []
    original = hmac.compare_digest

    def spy(a, b):
        calls.append((len(a), len(b)))
        return original(a, b)

    monkeypatch.setattr(accounts.hmac, "compare_digest", spy)
    conn = open_server_db(server.root)
    try:
        assert accounts.verify_token(conn, "ana", server.tokens["ana"]) is not None
        assert accounts.verify_token(conn, "ana", "wrong") is None
        assert accounts.verify_token(conn, "nobody", server.tokens["ana"]) is None
        assert accounts.verify_token(conn, "../etc", "") is None
    finally:
        conn.close()
    assert calls == [(64, 64)] * 4


def test_sign_in_refuses_wrong_tokens_and_forged_forms(server):
    app = server.app(workers=False)
    client, _ = server.client(app)
    page = client.get("/login")
    csrf = re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)
    wrong = client.post(
        "/login", data={"name": "ana", "token": "x" * 43, "csrf": csrf}, headers=ORIGIN
    )
    csrf = re.search(r'name="csrf" value="([^"]+)"', wrong.text).group(1)  # a fresh form
    unknown = client.post(
        "/login", data={"name": "zed", "token": "x" * 43, "csrf": csrf}, headers=ORIGIN
    )
    csrf = re.search(r'name="csrf" value="([^"]+)"', unknown.text).group(1)
    assert wrong.status_code == unknown.status_code == 401
    assert "name or token is wrong" in wrong.text and "name or token is wrong" in unknown.text
    # A form posted without the sign-in page's cookie (another site's form) is refused.
    other = TestClient(app, base_url=BASE)
    forged = other.post(
        "/login",
        data={"name": "ana", "token": server.tokens["ana"], "csrf": csrf},
        follow_redirects=False,
    )
    assert forged.status_code == 403 and "__Host-likeness_session" not in forged.headers.get(
        "set-cookie", ""
    )
    # After signing in, `next` stays on this server.
    answer = client.post(
        "/login",
        data={"name": "ana", "token": server.tokens["ana"], "csrf": csrf, "next": "//evil.test/x"},
        headers=ORIGIN,
        follow_redirects=False,
    )
    assert answer.headers["location"] == "/studio"


def test_every_route_but_sign_in_needs_a_session(server):
    app = server.app(workers=False)
    client, _ = server.client(app)
    http, sockets = routes(app)
    assert len(http) > 25
    for method, path in http:
        if (method, path) in PUBLIC:
            continue
        answer = client.request(method, concrete(path), headers=ORIGIN, follow_redirects=False)
        if method == "GET" and not path.startswith("/api/"):
            assert answer.status_code == 303, (method, path, answer.status_code)
            assert answer.headers["location"].startswith("/login?next=")
        else:
            assert answer.status_code == 401, (method, path, answer.status_code)
            assert answer.json() == {"detail": "sign in first"}
    for path in sockets:
        url = f"wss://{HOST}{concrete(path)}"
        with (
            pytest.raises(WebSocketDisconnect) as closed,
            client.websocket_connect(url, headers=ORIGIN),
        ):
            pass
        assert closed.value.code == 1008


def test_every_change_needs_the_csrf_token_and_our_origin(server):
    app = server.app(workers=False)
    client, headers = server.client(app, "ana")
    http, sockets = routes(app)
    changes = [(m, p) for m, p in http if m in UNSAFE and (m, p) not in PUBLIC]
    assert len(changes) >= 10
    for method, path in changes:
        url = concrete(path)
        no_token = client.request(method, url, headers=ORIGIN, json={})
        assert no_token.status_code == 403, (method, path, no_token.status_code)
        assert "CSRF" in no_token.text
        wrong = client.request(method, url, headers={**ORIGIN, "X-CSRF-Token": "x" * 43}, json={})
        assert wrong.status_code == 403, (method, path)
        foreign = client.request(
            method, url, headers={**headers, "origin": "https://evil.test"}, json={}
        )
        assert foreign.status_code == 403 and "origin" in foreign.text, (method, path)
        cross = client.request(
            method,
            url,
            headers={"X-CSRF-Token": headers["X-CSRF-Token"], "sec-fetch-site": "cross-site"},
            json={},
        )
        assert cross.status_code == 403, (method, path)
    # Sign-in itself: another site's Origin is refused before the form is read.
    assert (
        client.post("/login", data={}, headers={"origin": "https://evil.test"}).status_code == 403
    )
    # A WebSocket from another site's page is refused (cross-site WebSocket hijacking).
    for path in sockets:
        with (
            pytest.raises(WebSocketDisconnect) as closed,
            client.websocket_connect(
                f"wss://{HOST}{concrete(path)}", headers={"origin": "https://evil.test"}
            ),
        ):
            pass
        assert closed.value.code == 1008
    # With the token and our Origin, a change goes through.
    made = client.post("/api/studio/dedup", headers=headers)
    assert made.status_code == 200


def test_host_guard_and_security_headers(server):
    app = server.app(workers=False)
    client, _ = server.client(app)
    rebound = client.get("/login", headers={"host": "evil.test"})
    assert rebound.status_code == 403 and "host" in rebound.text
    answer = client.get("/login")
    assert answer.headers["x-frame-options"] == "DENY"
    assert "frame-ancestors 'none'" in answer.headers["content-security-policy"]
    assert answer.headers["strict-transport-security"].startswith("max-age=")
    assert answer.headers["cache-control"] == "no-store"


def test_sessions_end_on_sign_out_disable_new_token_and_expiry(server):
    app = server.app(workers=False)
    client, headers = server.client(app, "ana")
    cookie = client.cookies.get("__Host-likeness_session")
    assert client.get("/api/studio/jobs").status_code == 200
    assert client.post("/logout", headers=headers).status_code == 200
    replay = TestClient(app, base_url=BASE, cookies={"__Host-likeness_session": cookie})
    assert replay.get("/api/studio/jobs").status_code == 401
    # Disabling the account ends its sessions at once; so does a new token.
    for end in ("disable", "token"):
        client, _ = server.client(app, "ana") if end == "disable" else server.client(app, "ben")
        assert client.get("/api/studio/jobs").status_code == 200
        conn = open_server_db(server.root)
        try:
            if end == "disable":
                accounts.set_disabled(conn, "ana", True)
            else:
                accounts.set_token(conn, "ben")
        finally:
            conn.close()
        assert client.get("/api/studio/jobs").status_code == 401
    # An expired session is not found.
    conn = open_server_db(server.root)
    try:
        user = accounts.get_user(conn, "ben")
        value, _ = create_session(conn, user.id, hours=1)
        assert lookup_session(conn, value) is not None
        conn.execute("UPDATE sessions SET expires_at = '2000-01-01T00:00:00.000+00:00'")
        assert lookup_session(conn, value) is None
    finally:
        conn.close()


def test_a_user_name_cannot_reach_outside_the_server(server):
    conn = open_server_db(server.root)
    try:
        for bad in ("../ana", "a", "Ana", "ana/../../x", "a b"):
            with pytest.raises(accounts.AccountError):
                accounts.add_user(conn, server.root, bad)
        with pytest.raises(accounts.AccountError):
            accounts.add_user(conn, server.root, "ana")
    finally:
        conn.close()


def test_decisions_are_stored_under_the_signed_in_name(server):
    """The review page may send any reviewer name; the server stores the account's."""
    app = server.app(workers=False)
    client, headers = server.client(app, "ana")
    from .builder import blob_png

    files = [("files", ("a.png", blob_png(1), "image/png"))]
    sha = client.post("/api/studio/photos", files=files, headers=headers).json()["results"][0][
        "sha256"
    ]
    made = client.post(
        "/api/decide",
        json={"sha256": sha, "decision": "accepted", "reviewer": "ben"},
        headers=headers,
    )
    assert made.status_code == 200 and made.json()["reviewer"] == "ana"
    db = sqlite3.connect(server.root / "users" / "ana" / "likeness.db")
    assert db.execute("SELECT reviewer FROM review_history").fetchall() == [("ana",)]
    db.close()
