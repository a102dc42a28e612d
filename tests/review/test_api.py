"""The review app over HTTP: pages, decisions, datasets, and the safety rules."""

from __future__ import annotations

import json
import threading

import httpx
from fastapi.testclient import TestClient

from likeness.review import create_app
from likeness.review.app import get_db
from likeness.review.security import TOKEN_HEADER, is_loopback, token_for_bind
from likeness.store.db import connect
from likeness.workspace import DB_FILE

from .builder import LOCAL
from .live import serve


def decide(client, sha, decision, **extra):
    return client.post("/api/decide", json={"sha256": sha, "decision": decision, **extra})


# ---- pages and queue -------------------------------------------------------------------------


def test_queue_page_shows_numbers_flags_and_counter(client, review_ws):
    page = client.get("/")
    assert page.status_code == 200
    html = page.text
    best = max(review_ws.scored, key=review_ws.scored.get)
    assert f'data-sha="{best}"' in html
    assert f"{review_ws.scored[best]:.1f}" in html
    assert "face too small" in html and "multiple faces" in html
    total = len(review_ws.candidates) + len(review_ws.sources)
    assert f"of {total}" in html


def test_queue_sorts_by_match_with_unscored_last(client, review_ws):
    items = client.get("/api/queue", params={"origin": "synthetic"}).json()["items"]
    matches = [i["metrics"].get("match") for i in items]
    scored = [m for m in matches if m is not None]
    assert scored == sorted(scored, reverse=True)
    assert matches[len(scored) :] == [None] * (len(matches) - len(scored))
    ascending = client.get("/api/queue", params={"sort": "grain", "order": "asc"}).json()
    grains = [i["metrics"]["grain"] for i in ascending["items"] if "grain" in i["metrics"]]
    assert grains == sorted(grains) and grains


def test_queue_filters_and_counter(client, review_ws):
    first, second = review_ws.candidates[:2]
    decide(client, first, "accepted")
    decide(client, second, "rejected")
    everything = client.get("/api/queue").json()
    assert everything["tally"] == {
        "accepted": 1,
        "rejected": 1,
        "undecided": len(review_ws.candidates) + len(review_ws.sources) - 2,
    }
    accepted = client.get("/api/queue", params={"state": "accepted"}).json()
    assert [i["sha256"] for i in accepted["items"]] == [first]
    flagged = client.get("/api/queue", params={"flag": "face_too_small"}).json()["items"]
    assert flagged and all("face_too_small" in i["flags"] for i in flagged)
    clean = client.get("/api/queue", params={"flag": "none"}).json()["items"]
    assert all(not i["flags"] for i in clean)
    sources = client.get("/api/queue", params={"origin": "source"}).json()
    assert {i["sha256"] for i in sources["items"]} == set(review_ws.sources)
    assert client.get("/api/queue", params={"origin": "nowhere"}).status_code == 400
    assert client.get("/api/queue", params={"dataset": "missing"}).status_code == 400
    client.post("/api/to-dataset", json={"name": "mara"})
    in_dataset = client.get("/api/queue", params={"dataset": "mara@v1"}).json()["items"]
    assert [i["sha256"] for i in in_dataset] == [first]


def test_paging_keeps_the_order(client, review_ws):
    whole = [i["sha256"] for i in client.get("/api/queue", params={"size": 100}).json()["items"]]
    paged = []
    for page in (1, 2, 3, 4):
        batch = client.get("/api/queue", params={"size": 4, "page": page}).json()["items"]
        paged += [i["sha256"] for i in batch]
    assert paged == whole
    html = client.get("/", params={"size": 4, "page": 2}).text
    assert html.count('class="card ') == 4 and "page 2 of" in html


def test_focus_page_shows_reference_numbers_and_neighbours(client, review_ws):
    sha = review_ws.candidates[0]
    html = client.get(f"/focus/{sha}").text
    assert f"/face/{review_ws.sources[0]}?size=384" in html  # the nearest reference
    assert "nearest reference" in html
    assert 'data-next="/focus/' in html
    assert client.get(f"/focus/{'f' * 64}").status_code == 404


def test_thumbnails_are_cached_once(client, review_ws):
    sha = review_ws.candidates[0]
    first = client.get(f"/thumb/{sha}", params={"size": 256})
    assert first.status_code == 200 and first.headers["content-type"] == "image/webp"
    cached = review_ws.root / "cache" / "thumbs" / f"{sha}_256.webp"
    assert cached.is_file()
    stamp = cached.stat().st_mtime_ns
    assert client.get(f"/thumb/{sha}", params={"size": 256}).content == first.content
    assert cached.stat().st_mtime_ns == stamp
    assert client.get(f"/thumb/{sha}", params={"size": 999}).status_code == 404
    original = client.get(f"/img/{sha}")
    assert original.headers["content-type"] == "image/png"


# ---- decisions -------------------------------------------------------------------------------


def test_decide_and_undo_over_http(client, review_ws):
    sha = review_ws.candidates[0]
    made = decide(client, sha, "rejected", tags=["bad_hands"], note="six fingers").json()
    assert made["revision"] == 1 and made["reviewer"] == "tester"
    assert decide(client, sha, "maybe").status_code == 422
    assert decide(client, "a" * 64, "accepted").status_code == 404
    stale = client.post("/api/undo", json={"sha256": sha, "expected_revision": 0})
    assert stale.status_code == 409 and stale.json()["current"]["decision"] == "rejected"
    undone = client.post("/api/undo", json={"sha256": sha, "expected_revision": 1}).json()
    assert undone["decision"] == "undecided"
    history = client.get(f"/api/review/{sha}").json()["history"]
    assert [h["action"] for h in history] == ["decide", "undo"]


def test_decisions_survive_a_restart(review_ws):
    sha = review_ws.candidates[3]
    with TestClient(create_app(review_ws.root), base_url=LOCAL) as first:
        decide(first, sha, "accepted", reviewer="ana", tags=["grain"])
    with TestClient(create_app(review_ws.root), base_url=LOCAL) as second:
        review = second.get(f"/api/review/{sha}").json()["review"]
    assert (review["decision"], review["reviewer"], review["tags"]) == (
        "accepted",
        "ana",
        ["grain"],
    )


def test_two_clients_deciding_at_once_lose_nothing(review_ws):
    shas = review_ws.candidates
    start = threading.Barrier(2)
    failures: list[str] = []

    def reviewer(base: str, name: str, decision: str) -> None:
        with httpx.Client(base_url=base, timeout=30) as http:
            start.wait()
            for sha in shas:
                r = http.post(
                    "/api/decide", json={"sha256": sha, "decision": decision, "reviewer": name}
                )
                if r.status_code != 200:
                    failures.append(f"{name} {sha[:8]} {r.status_code} {r.text}")

    with serve(create_app(review_ws.root)) as base:
        threads = [
            threading.Thread(target=reviewer, args=(base, "ana", "accepted")),
            threading.Thread(target=reviewer, args=(base, "ben", "rejected")),
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert failures == []
    conn = connect(review_ws.root / DB_FILE)
    try:
        rows = conn.execute(
            "SELECT image_sha, reviewer, revision FROM review_history ORDER BY id"
        ).fetchall()
        current = dict(conn.execute("SELECT image_sha, revision FROM reviews").fetchall())
    finally:
        conn.close()
    assert len(rows) == 2 * len(shas)
    for sha in shas:
        assert sorted(r[1] for r in rows if r[0] == sha) == ["ana", "ben"]
        assert current[sha] == 2


def test_to_dataset_and_corrections_over_http(client, review_ws):
    a, b, c = review_ws.candidates[:3]
    decide(client, a, "accepted")
    decide(client, b, "accepted")
    decide(client, c, "rejected", tags=["wrong_angle"])
    made = client.post("/api/to-dataset", json={"name": "mara", "note": "first pass"})
    assert made.status_code == 200
    body = made.json()
    assert body["ref"] == "mara@v1" and body["count"] == 2
    assert {r["sha256"] for r in body["reviews"]} == {a, b}
    bad = client.post("/api/to-dataset", json={"name": "no spaces allowed"})
    assert bad.status_code == 400 and "dataset name" in bad.json()["error"]
    lines = client.get("/export/corrections.jsonl").text.splitlines()
    assert [json.loads(line)["tags"] for line in lines] == [["wrong_angle"]]


def test_db_dependency_can_be_overridden(review_ws):
    app = create_app(review_ws.root)
    opened: list[int] = []

    def counting_db():
        conn = connect(review_ws.root / DB_FILE, migrate=False)
        opened.append(1)
        try:
            yield conn
        finally:
            conn.close()

    app.dependency_overrides[get_db] = counting_db
    with TestClient(app, base_url=LOCAL) as c:
        assert c.get("/api/counts").status_code == 200
    assert opened == [1]


# ---- safety ----------------------------------------------------------------------------------


def test_non_local_bind_gets_a_token_and_requests_without_it_get_401(review_ws):
    assert token_for_bind("127.0.0.1", None) is None
    assert token_for_bind("localhost", None) is None
    token = token_for_bind("0.0.0.0", None)
    assert token and len(token) >= 24 and token != token_for_bind("0.0.0.0", None)
    assert is_loopback("::1") and not is_loopback("192.168.1.20")
    sha = review_ws.candidates[0]
    app = create_app(review_ws.root, token=token)
    with TestClient(app, base_url="http://192.168.1.20:8765") as c:
        for path in ("/", f"/focus/{sha}", f"/img/{sha}", f"/thumb/{sha}", "/api/queue"):
            assert c.get(path).status_code == 401, path
        assert decide(c, sha, "accepted").status_code == 401
        assert c.get("/", headers={TOKEN_HEADER: "wrong"}).status_code == 401
        assert c.get("/", headers={TOKEN_HEADER: token}).status_code == 200
        landing = c.get(f"/?token={token}&state=undecided", follow_redirects=False)
        assert landing.status_code == 303 and "token" not in landing.headers["location"]
        assert c.get("/api/queue").status_code == 200  # the cookie now carries the token
        assert decide(c, sha, "accepted").status_code == 200


def test_local_server_refuses_other_host_names(review_ws):
    app = create_app(review_ws.root)
    with TestClient(app, base_url="http://attacker.example:8765") as c:
        assert c.get("/api/queue").status_code == 403
    with TestClient(app, base_url="http://localhost:8765") as c:
        assert c.get("/api/queue").status_code == 200


def test_foreign_origin_gets_403(client, review_ws):
    sha = review_ws.candidates[0]
    for origin in ("http://evil.example", "http://127.0.0.1:9999", "null", "file://"):
        r = client.post(
            "/api/decide",
            json={"sha256": sha, "decision": "accepted"},
            headers={"Origin": origin},
        )
        assert r.status_code == 403, origin
        assert (
            client.post(
                "/api/to-dataset", json={"name": "x"}, headers={"Origin": origin}
            ).status_code
            == 403
        )
    cross = client.post(
        "/api/decide",
        json={"sha256": sha, "decision": "accepted"},
        headers={"Sec-Fetch-Site": "cross-site"},
    )
    assert cross.status_code == 403
    assert client.get("/api/counts").json()["accepted"] == 0
    own = client.post(
        "/api/decide",
        json={"sha256": sha, "decision": "accepted"},
        headers={"Origin": LOCAL},
    )
    assert own.status_code == 200


def test_allowed_origins_may_post(review_ws):
    app = create_app(review_ws.root, allowed_origins=["https://review.example"])
    with TestClient(app, base_url=LOCAL) as c:
        r = c.post(
            "/api/decide",
            json={"sha256": review_ws.candidates[0], "decision": "accepted"},
            headers={"Origin": "https://review.example"},
        )
        assert r.status_code == 200


def traversal_paths(sha: str) -> list[str]:
    targets = ["likeness.db", "likeness.toml", "../likeness.db", "../../etc/passwd"]
    encodings = [
        "..%2F..%2Flikeness.db",
        "%2e%2e/%2e%2e/likeness.toml",
        "%2e%2e%2f%2e%2e%2fetc%2fpasswd",
        "..%5c..%5clikeness.db",
        "..%252f..%252flikeness.db",
        "%c0%ae%c0%ae/likeness.db",
        "....//....//likeness.db",
        f"{sha}%2F..%2F..%2Flikeness.db",
        f"{sha}%00.png",
        f"{sha[:2]}%2F{sha}",
        "%2Fetc%2Fpasswd",
        sha.upper(),
        sha[:-1],
        sha + "0",
    ]
    paths = []
    for prefix in ("/img/", "/thumb/", "/face/"):
        paths += [prefix + t for t in targets[:2] + encodings]
    paths += ["/static/..%2F..%2Fapp.py", "/static/%2e%2e/decisions.py", "/static/review.css%00"]
    paths += ["/focus/..%2F..%2Flikeness.db", "/blobs/" + sha[:2] + "/" + sha, "/likeness.db"]
    return paths


def test_traversal_attempts_get_404(client, review_ws):
    sha = review_ws.candidates[0]
    paths = traversal_paths(sha)
    assert len(paths) >= 50
    secret = (review_ws.root / "likeness.toml").read_text()
    for path in paths:
        r = client.get(path)
        assert r.status_code == 404, (path, r.status_code)
        assert secret not in r.text and b"SQLite format" not in r.content


def test_run_filter_and_provenance_in_focus(client, review_ws):
    runs = sorted(set(review_ws.runs.values()))
    assert len(runs) == 2
    for run in runs:
        items = client.get("/api/queue", params={"run": run}).json()["items"]
        assert {i["sha256"] for i in items} == {s for s, r in review_ws.runs.items() if r == run}
        assert all(i["run"] == run for i in items)
    html = client.get("/").text
    assert all(f">{r}</option>" in html for r in runs)  # the run menu
    sha = next(iter(review_ws.runs))
    focus = client.get(f"/focus/{sha}").text
    for expected in (
        "bigLove_xl.safetensors",
        "zkx123_v1.safetensors@0.7",
        "dpmpp_2m",
        review_ws.runs[sha],
        "visible skin pores",
    ):
        assert expected in focus, expected
    plain = client.get(f"/focus/{review_ws.sources[0]}").text
    assert "bigLove_xl" not in plain


def test_pages_cannot_be_framed_or_sniffed(client, review_ws):
    for path in ("/", f"/img/{review_ws.candidates[0]}", "/nowhere"):
        headers = client.get(path).headers
        assert headers["x-frame-options"] == "DENY"
        assert headers["x-content-type-options"] == "nosniff"
        assert "frame-ancestors 'none'" in headers["content-security-policy"]


def test_notes_tags_and_file_names_are_escaped(client, review_ws):
    sha = review_ws.candidates[0]
    name = '"><img src=x onerror=alert(1)>.png'
    with connect(review_ws.root / DB_FILE, migrate=False) as conn:
        conn.execute("UPDATE images SET original_name = ? WHERE sha256 = ?", (name, sha))
        conn.commit()
    note = "</script><script>alert('note')</script>"
    made = decide(client, sha, "rejected", note=note, reviewer="<b>eve</b>")
    assert made.status_code == 200
    assert decide(client, sha, "rejected", tags=["<svg/onload=alert(1)>"]).status_code == 422
    for html in (client.get(f"/focus/{sha}").text, client.get("/").text):
        assert "<img src=x" not in html and "<script>alert" not in html and "<b>eve" not in html
    focus = client.get(f"/focus/{sha}").text
    assert "&lt;/script&gt;&lt;script&gt;alert(&#39;note&#39;)&lt;/script&gt;" in focus
    assert "&#34;&gt;&lt;img src=x onerror=alert(1)&gt;.png" in focus
    assert "&lt;b&gt;eve&lt;/b&gt;" in focus


def test_an_undecodable_blob_gets_one_line_not_a_crash(client, review_ws):
    sha = review_ws.candidates[0]
    blob = review_ws.root / "blobs" / sha[:2] / sha
    blob.chmod(0o644)
    blob.write_bytes(b"not an image at all")
    for path in (f"/thumb/{sha}", f"/face/{sha}"):
        r = client.get(path)
        assert r.status_code == 422, (path, r.status_code)
        assert "\n" not in r.json()["detail"]


def test_websockets_pass_the_same_guard(client, review_ws):
    import pytest
    from starlette.websockets import WebSocketDisconnect

    url = LOCAL.replace("http", "ws", 1) + "/ws"

    def close_code(headers: dict[str, str]) -> int:
        with (
            pytest.raises(WebSocketDisconnect) as closed,
            client.websocket_connect(url, headers=headers),
        ):
            pass
        return closed.value.code

    assert close_code({"origin": "https://evil.example"}) == 1008
    assert close_code({"host": "evil.example"}) == 1008
    assert close_code({"origin": LOCAL}) != 1008  # allowed through, but there is no such route
