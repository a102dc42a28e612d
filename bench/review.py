"""Review app speed with 5,000 images in the queue.

Measures, against targets and against a baseline taken in the same run:
- decision round trip over HTTP (POST /api/decide through uvicorn), p50/p95, target p95 < 50 ms;
  baseline: the same `decide()` call made directly on a connection (no HTTP);
- a 200-thumbnail grid with thumbnails cached: the queue page plus its 200 thumbnails over
  HTTP (6 connections, like a browser), target < 1 s; baseline: reading the same 200 cached
  files from disk; and, when /usr/bin/chromium exists, the same page loaded in a real browser
  until its load event and every thumbnail on the first screen has decoded (the rest load
  lazily as the reviewer scrolls).

Run: .venv/bin/python bench/review.py [--images 5000] [--decisions 300]
"""

from __future__ import annotations

import argparse
import io
import json
import random
import socket
import statistics
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import uvicorn
from PIL import Image

from likeness.review import create_app
from likeness.review import decisions as dec
from likeness.store.db import connect, transaction, utc_now
from likeness.workspace import DB_FILE, Workspace

DECISION_P95_TARGET_MS = 50.0
GRID_TARGET_S = 1.0
GRID_SIZE = 200
CHROMIUM = Path("/usr/bin/chromium")
# Resolves once every thumbnail in the first screen has decoded (off-screen ones load lazily).
VISIBLE_DECODED = """() => Promise.all([...document.images]
    .filter(i => i.getBoundingClientRect().top < innerHeight)
    .map(i => i.decode().then(() => 1, () => 0))).then(r => r.length)"""


def make_workspace(root: Path, n: int, seed: int = 0) -> list[str]:
    """A workspace with `n` small synthetic images and a realistic analysis for each
    (scalars plus a 128-D descriptor and 68 landmarks, as face analyzers store)."""
    ws = Workspace.create(root, name="Bench Subject")
    try:
        return fill_images(ws, n, seed)
    finally:
        ws.close()


def fill_images(ws: Workspace, n: int, seed: int = 0) -> list[str]:
    """Add `n` synthetic images with their analyses to an open workspace; their sha256s."""
    rng = np.random.default_rng(seed)
    shas = []
    rows = []
    for i in range(n):
        small = rng.integers(0, 256, size=(4, 3, 3), dtype=np.uint8)
        img = Image.fromarray(small).resize((96, 128), Image.Resampling.BILINEAR)
        buffer = io.BytesIO()
        img.save(buffer, "PNG", compress_level=1)
        data = buffer.getvalue()
        sha = ws.blobs.put_bytes(data)
        shas.append(sha)
        rows.append((sha, i, len(data)))
    with transaction(ws.db):
        for sha, i, size in rows:
            ws.db.execute(
                "INSERT INTO images (sha256, origin, original_name, size_bytes, format, "
                "width, height, mode, ingested_at, phash, dhash, sharpness) "
                "VALUES (?, 'synthetic', ?, ?, 'PNG', 96, 128, 'RGB', ?, ?, ?, 100.0)",
                (sha, f"gen_{i:05d}.png", size, utc_now(), sha[:16], sha[16:32]),
            )
            match = float(rng.uniform(2, 10))
            result = {
                "match": round(match, 2),
                "distance": round(1 - match / 10, 3),
                "yaw": float(rng.uniform(-60, 60)),
                "angle": "front",
                "expression": "neutral",
                "body_pose": "standing",
                "grain": float(rng.uniform(0, 8)),
                "flags": ["face_too_small"] if i % 17 == 0 else [],
                "faces": [
                    {
                        "box": [10, 10, 60, 60],
                        "descriptor": rng.normal(size=128).round(5).tolist(),
                        "landmarks": rng.uniform(0, 96, size=(68, 2)).round(2).tolist(),
                    }
                ],
                "subject": 0,
            }
            ws.db.execute(
                "INSERT INTO analyses (image_sha, analyzer, version, result, created_at) "
                "VALUES (?, 'score', '1', ?, ?)",
                (sha, json.dumps(result), utc_now()),
            )
    return shas


# Copied from tests/review/live.py (a bench cannot import the test package).
def serve(app) -> tuple[str, uvicorn.Server, threading.Thread]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("review server did not start")
        time.sleep(0.02)
    return f"http://127.0.0.1:{port}", server, thread


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def bench_direct_decisions(root: Path, shas: list[str], n: int) -> list[float]:
    conn = connect(root / DB_FILE, migrate=False)
    times = []
    try:
        for sha in random.Random(1).sample(shas, n):
            start = time.perf_counter()
            dec.decide(conn, sha, "rejected", reviewer="bench")
            times.append(time.perf_counter() - start)
    finally:
        conn.close()
    return times


def bench_http_decisions(base: str, shas: list[str], n: int) -> list[float]:
    times = []
    with httpx.Client(base_url=base) as http:
        for i, sha in enumerate(random.Random(2).sample(shas, n)):
            start = time.perf_counter()
            r = http.post(
                "/api/decide",
                json={"sha256": sha, "decision": "accepted" if i % 3 else "rejected"},
            )
            times.append(time.perf_counter() - start)
            r.raise_for_status()
    return times


def grid_over_http(base: str) -> tuple[float, list[str]]:
    """Seconds to fetch the queue page and its 200 thumbnails with 6 connections."""
    with httpx.Client(base_url=base, limits=httpx.Limits(max_connections=6)) as http:
        start = time.perf_counter()
        html = http.get("/", params={"size": GRID_SIZE}).text
        urls = [
            part.split('"', 1)[0].replace("&amp;", "&")
            for part in html.split('src="')[1:]
            if part.startswith("/thumb/")
        ]
        with ThreadPoolExecutor(6) as pool:
            sizes = list(pool.map(lambda u: len(http.get(u).content), urls))
        elapsed = time.perf_counter() - start
    assert len(urls) == GRID_SIZE and all(sizes), "the grid should show 200 thumbnails"
    return elapsed, urls


def grid_in_browser(base: str) -> tuple[float, int] | None:
    if not CHROMIUM.exists():
        return None
    from playwright.sync_api import sync_playwright

    args = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run"]
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=args)
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.set_default_timeout(30_000)
        page.goto(f"{base}/?size={GRID_SIZE}")  # warm the browser's own caches once
        times = []
        for _ in range(3):
            start = time.perf_counter()
            page.goto(f"{base}/?size={GRID_SIZE}", wait_until="load")
            shown = page.evaluate(VISIBLE_DECODED)
            times.append(time.perf_counter() - start)
        assert shown > 0, "no thumbnail was visible"
        browser.close()
    return statistics.median(times), shown


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=5000)
    parser.add_argument("--decisions", type=int, default=300)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "ws"
        start = time.perf_counter()
        shas = make_workspace(root, args.images)
        print(f"workspace: {len(shas)} images in {time.perf_counter() - start:.1f} s")

        app = create_app(root, reviewer="bench")
        base, server, thread = serve(app)
        try:
            with httpx.Client(base_url=base, timeout=60) as http:
                start = time.perf_counter()
                http.get("/api/queue", params={"size": 1}).raise_for_status()
                print(
                    f"first queue read (index of {len(shas)} analyses): "
                    f"{(time.perf_counter() - start) * 1000:.0f} ms"
                )

            # 1. Decisions.
            direct = bench_direct_decisions(root, shas, args.decisions)
            over_http = bench_http_decisions(base, shas, args.decisions)
            p95_http, p95_direct = percentile(over_http, 0.95), percentile(direct, 0.95)
            verdict = "ok" if p95_http * 1000 < DECISION_P95_TARGET_MS else "MISSED"
            print(
                f"decision round trip: p50 {statistics.median(over_http) * 1000:.1f} ms, "
                f"p95 {p95_http * 1000:.1f} ms (target < {DECISION_P95_TARGET_MS:.0f} ms: "
                f"{verdict}); direct decide() p95 {p95_direct * 1000:.1f} ms; "
                f"http/direct: {p95_http / p95_direct:.1f}x"
            )

            # 2. The grid, thumbnails made once, then timed from the cache.
            start = time.perf_counter()
            _, urls = grid_over_http(base)
            print(f"grid with thumbnails made on the way: {time.perf_counter() - start:.2f} s")
            runs = [grid_over_http(base)[0] for _ in range(5)]
            grid = statistics.median(runs)
            start = time.perf_counter()
            for url in urls:
                sha = url.split("/thumb/")[1].split("?")[0]
                (root / "cache" / "thumbs" / f"{sha}_256.webp").read_bytes()
            disk = time.perf_counter() - start
            verdict = "ok" if grid < GRID_TARGET_S else "MISSED"
            print(
                f"{GRID_SIZE}-thumbnail grid, cached, over HTTP: {grid * 1000:.0f} ms median "
                f"(target < {GRID_TARGET_S:.0f} s: {verdict}); reading the 200 files: "
                f"{disk * 1000:.1f} ms; http/disk: {grid / disk:.0f}x"
            )
            in_browser = grid_in_browser(base)
            if in_browser is None:
                print("browser grid: skipped (no /usr/bin/chromium)")
            else:
                seconds, shown = in_browser
                verdict = "ok" if seconds < GRID_TARGET_S else "MISSED"
                print(
                    f"{GRID_SIZE}-card page in chromium, load event + the {shown} thumbnails "
                    f"on screen decoded: {seconds * 1000:.0f} ms median "
                    f"(target < {GRID_TARGET_S:.0f} s: {verdict})"
                )
        finally:
            server.should_exit = True
            thread.join(timeout=10)


if __name__ == "__main__":
    main()
