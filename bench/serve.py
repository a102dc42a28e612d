"""Service mode under load: three people working at once while a generation job runs.

A server folder with three accounts, each workspace holding `--images` scored images and two
source photos; the server runs under uvicorn with its default process worker, which runs a
generation job on a tiny random-weight SDXL from the shared folder (each image generated,
stored and scored against the photos) during every timed phase. Three clients, signed in as
the three users, loop over what a person does: open the studio, the review queue and a focus
view (pages), read the queue and the jobs (API), and decide (POST /api/decide).

Two setups take turns (four rounds, `--seconds` each in all), in the same run and under the
same running job: service mode, three users on their own workspaces; and the baseline, the
single-user review app (`likeness review`) on a workspace of the same size with three clients
doing the same review work (`bench/review.py` measures that app alone, without a job).

Targets: pages p95 < 100 ms; decisions as fast as in the single-user review app.

Run: .venv/bin/python bench/serve.py [--images 1000] [--seconds 15]
"""

from __future__ import annotations

import argparse
import random
import re
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).parent))
from likeness.data import FACES  # noqa: E402
from likeness.serve import accounts  # noqa: E402
from likeness.serve.serverdb import open_server_db  # noqa: E402
from likeness.workspace import Workspace  # noqa: E402
from review import fill_images, make_workspace, percentile  # noqa: E402
from review import serve as serve_review  # noqa: E402

PAGE_P95_TARGET_MS = 100.0
USERS = ("ana", "ben", "cai")
ROUNDS = 4


def make_server(root: Path, images: int) -> dict[str, tuple[str, list[str]]]:
    """Accounts with filled workspaces, the shared tiny model and serve.toml; name -> (token,
    shas)."""
    from likeness.engines.diffusers.tiny import save_tiny_pipeline

    save_tiny_pipeline("sdxl", root / "shared" / "tiny-sdxl")
    # Plain HTTP on loopback, as behind a TLS proxy: the cookies cannot be Secure here.
    (root / "serve.toml").write_text(
        f'[serve]\nshared_models = ["{root / "shared"}"]\nworker_mode = "process"\n'
        "cookie_secure = false\n"
    )
    conn = open_server_db(root)
    made = {}
    for seed, name in enumerate(USERS):
        user, token = accounts.add_user(conn, root, name)
        with Workspace.open(root / user.folder) as ws:
            add_sources(ws)
            made[name] = (token, fill_images(ws, images, seed))
    conn.close()
    return made


def add_sources(ws: Workspace) -> None:
    from likeness.curate.ingest import Ingester

    for photo in ("obama.jpg", "obama3.jpg"):
        Ingester(ws, "source").ingest_file(FACES / photo)


def sign_in(http: httpx.Client, name: str, token: str) -> dict[str, str]:
    page = http.get("/login").text
    csrf = re.search(r'name="csrf" value="([^"]+)"', page).group(1)
    origin = {"origin": str(http.base_url).rstrip("/")}
    http.post("/login", data={"name": name, "token": token, "csrf": csrf}, headers=origin)
    studio = http.get("/studio").text
    return {**origin, "X-CSRF-Token": re.search(r'data-csrf="([^"]+)"', studio).group(1)}


class Timings:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.kinds: dict[str, list[float]] = {}

    def add(self, kind: str, seconds: float) -> None:
        with self.lock:
            self.kinds.setdefault(kind, []).append(seconds)

    def merge(self, other: Timings) -> None:
        for kind, values in other.kinds.items():
            self.kinds.setdefault(kind, []).extend(values)


Steps = Callable[[str], list[tuple[str, str, str, dict | None]]]


def serve_steps(sha: str) -> list[tuple[str, str, str, dict | None]]:
    return [
        ("studio page", "GET", "/studio", None),
        ("review pages", "GET", "/?size=100", None),
        ("review pages", "GET", f"/focus/{sha}", None),
        ("api", "GET", "/api/queue?size=100", None),
        ("api", "GET", "/api/studio/jobs", None),
        ("decide", "POST", "/api/decide", {"sha256": sha, "decision": "accepted"}),
        ("decide", "POST", "/api/decide", {"sha256": sha, "decision": "undecided"}),
    ]


def review_steps(sha: str) -> list[tuple[str, str, str, dict | None]]:
    return [s for s in serve_steps(sha) if s[0] != "studio page" and "jobs" not in s[2]]


def person(
    base: str,
    headers: Callable[[httpx.Client], dict[str, str]],
    steps: Steps,
    shas: list[str],
    until: float,
    out: Timings,
) -> None:
    """What one person does, over and over, until `until`."""
    rng = random.Random(len(shas) + id(out))
    with httpx.Client(base_url=base, timeout=60) as http:
        sent = headers(http)
        while time.monotonic() < until:
            for kind, method, url, body in steps(rng.choice(shas)):
                start = time.perf_counter()
                answer = http.request(method, url, json=body, headers=sent)
                out.add(kind, time.perf_counter() - start)
                answer.raise_for_status()


def run_people(people: list[tuple], seconds: float) -> Timings:
    timings = Timings()
    until = time.monotonic() + seconds
    threads = [threading.Thread(target=person, args=(*p, until, timings)) for p in people]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return timings


def serve_app(root: Path):
    import uvicorn

    from likeness.serve.app import create_server_app

    app = create_server_app(root)
    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    port = server.servers[0].sockets[0].getsockname()[1]
    return f"http://127.0.0.1:{port}", server, thread


def summary(values: list[float]) -> str:
    return (
        f"p50 {statistics.median(values) * 1000:6.1f} ms, "
        f"p95 {percentile(values, 0.95) * 1000:6.1f} ms (n={len(values)})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=1000, help="images per workspace")
    parser.add_argument("--seconds", type=float, default=15.0, help="length of each phase")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "server"
        made = make_server(root, args.images)
        single = Path(tmp) / "single"
        single_shas = make_workspace(single, args.images)
        with Workspace.open(single) as ws:  # the same source photos as each user's
            add_sources(ws)
        base, server, thread = serve_app(root)
        from likeness.review import create_app

        review_base, review_server, review_thread = serve_review(create_app(single))
        try:
            with httpx.Client(base_url=base, timeout=120) as http:
                # The job: tiny SDXL images, each stored and scored, for the whole run.
                headers = sign_in(http, "ana", made["ana"][0])
                body = {
                    "model": "tiny-sdxl",
                    "n": 64,
                    "width": 64,
                    "height": 64,
                    "steps": 4,
                    "recipe": {"refiner": {"enabled": False}},
                }
                job = http.post("/api/studio/generate", json=body, headers=headers).json()["job"]
                while http.get(f"/api/studio/jobs/{job['id']}").json()["done"] < 1:
                    time.sleep(0.2)  # the worker has loaded the model and scored an image
                for name, (token, _shas) in made.items():  # each user's index, built once
                    with httpx.Client(base_url=base, timeout=120) as warm:
                        sign_in(warm, name, token)
                        warm.get("/api/queue?size=1").raise_for_status()
                httpx.get(f"{review_base}/api/queue?size=1", timeout=120).raise_for_status()
                before = http.get(f"/api/studio/jobs/{job['id']}").json()["done"]

                # Service mode and the single-user review app (the same review work, the
                # same job running) take turns, so neither gets the quieter moments.
                serve_people = [
                    (base, lambda h, n=n, t=t: sign_in(h, n, t), serve_steps, shas)
                    for n, (t, shas) in made.items()
                ]
                origin = {"origin": review_base}
                review_people = [
                    (review_base, lambda h: origin, review_steps, single_shas) for _ in USERS
                ]
                served, alone = Timings(), Timings()
                for _round in range(ROUNDS):
                    served.merge(run_people(serve_people, args.seconds / ROUNDS))
                    alone.merge(run_people(review_people, args.seconds / ROUNDS))
                state = http.get(f"/api/studio/jobs/{job['id']}").json()
                http.post(f"/api/studio/jobs/{job['id']}/cancel", headers=headers)
        finally:
            review_server.should_exit = True
            review_thread.join(timeout=10)
            server.should_exit = True
            thread.join(timeout=30)

    k = served.kinds
    pages = k["studio page"] + k["review pages"]
    verdict = "ok" if percentile(pages, 0.95) * 1000 < PAGE_P95_TARGET_MS else "MISSED"
    made_meanwhile = state["done"] - before
    print(
        f"{len(USERS)} users at once, {args.images} images each, a generation job running "
        f"({made_meanwhile} images generated and scored during the {2 * args.seconds:.0f} s; "
        "the worker runs at a lower CPU priority, serve.worker_nice):"
    )
    print(f"service mode  pages, all      {summary(pages)}  target p95 < "
          f"{PAGE_P95_TARGET_MS:.0f} ms: {verdict}")  # fmt: skip
    print(f"              studio page     {summary(k['studio page'])}")
    print(f"              review pages    {summary(k['review pages'])}")
    print(f"              API reads       {summary(k['api'])}")
    print(f"              decisions       {summary(k['decide'])}")
    a = alone.kinds
    print(f"review app    review pages    {summary(a['review pages'])}  (single user, same load)")
    print(f"              API reads       {summary(a['api'])}")
    print(f"              decisions       {summary(a['decide'])}")
    ratio = percentile(k["decide"], 0.95) / percentile(a["decide"], 0.95)
    pages_ratio = percentile(k["review pages"], 0.95) / percentile(a["review pages"], 0.95)
    print(f"p95 service/review: decisions {ratio:.2f}x, review pages {pages_ratio:.2f}x")


if __name__ == "__main__":
    main()
