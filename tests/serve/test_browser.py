"""Two people side by side in Debian chromium (Playwright), each signed in to their own
workspace: upload photos (a bad file gets its one line), make a dataset version, generate
(the test engine under `diffusers`), watch the job over its WebSocket, see the scored
results, and review with the keys. Neither page ever shows the other's images. Screenshots
go to test-artifacts/."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.review.live import serve
from tests.review.test_browser import ARGS, ARTIFACTS, CHROMIUM, wait_until

from .builder import face_bytes, lora_file, settings_for
from .conftest import Server

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian chromium at /usr/bin/chromium"),
]
# Ana's character is Obama, Ben's is Biden; the test engine makes one of each for both.
PHOTOS = {"ana": ("obama.jpg", "obama3.jpg"), "ben": ("biden.jpg",)}


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=ARGS)
        yield b
        b.close()


@pytest.fixture
def site(make_server_folder) -> Iterator[tuple[Server, str]]:
    server = make_server_folder(("ana", "ben"))
    server.settings = settings_for(server.root, hosts=["localhost"])
    with serve(server.app(), lifespan="on") as url:
        # localhost, not 127.0.0.1: browsers keep Secure cookies for localhost over HTTP.
        yield server, url.replace("127.0.0.1", "localhost")


def decision(server: Server, user: str, sha: str) -> str | None:
    conn = sqlite3.connect(server.root / "users" / user / "likeness.db")
    try:
        row = conn.execute(
            "SELECT decision, reviewer FROM reviews WHERE image_sha = ?", (sha,)
        ).fetchone()
        return f"{row[0]} by {row[1]}" if row else None
    finally:
        conn.close()


def test_two_people_run_a_photoshoot_side_by_side(site, browser, tmp_path):
    server, url = site
    ARTIFACTS.mkdir(exist_ok=True)
    pages, errors = {}, []
    for user in ("ana", "ben"):
        context = browser.new_context(viewport={"width": 1280, "height": 1000})
        page = context.new_page()
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        pages[user] = page
    # 1. Sign in: the studio sends an anonymous visitor to the sign-in page and back.
    for user, page in pages.items():
        page.goto(f"{url}/studio")
        assert "/login?next=" in page.url
        page.fill("#name", user)
        page.fill("#token", server.tokens[user])
        page.click("#sign-in")
        page.wait_for_url(f"{url}/studio")
        cookie = next(c for c in page.context.cookies() if c["name"] == "__Host-likeness_session")
        assert cookie["secure"] and cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    # 2. Photos, with a file that is not an image.
    for user, page in pages.items():
        paths = []
        for name in PHOTOS[user]:
            path = tmp_path / f"{user}-{name}"
            path.write_bytes(face_bytes(name))
            paths.append(str(path))
        bad = tmp_path / f"{user}-notes.jpg"
        bad.write_text("not a picture")
        page.set_input_files("#files", [*paths, str(bad)])
        page.click("#upload button")
        page.wait_for_selector("#upload-results li[data-status=rejected]")
        lines = page.locator("#upload-results li").all_inner_texts()
        assert sorted(t.split(" ", 1)[1] for t in lines) == [
            "rejected: not an image (unknown or unreadable format)",
            *["stored"] * len(PHOTOS[user]),
        ]
        # (Locators, not wait_for_function: the page's CSP forbids evaluating strings.)
        page.locator("#photo-grid figure").nth(len(PHOTOS[user]) - 1).wait_for()
        assert page.locator("#photo-grid figure").count() == len(PHOTOS[user])
    # 3. A dataset version each.
    for user, page in pages.items():
        page.fill("#dataset-name", user)
        page.click("#make-dataset button")
        page.wait_for_selector(f"#versions a:text('{user}@v1')")
    # Ana adds a LoRA trained elsewhere; it becomes the LoRA of her generation.
    ana = pages["ana"]
    lora = lora_file(tmp_path / "mara_v1.safetensors", seed=3)
    ana.set_input_files("#lora-file", str(lora))
    ana.select_option("#lora-form [name=dataset]", "ana@v1")
    ana.select_option("#lora-form [name=family]", "sdxl")
    ana.click("#lora-form button")
    ana.locator("#generate-form [name=lora] option").nth(1).wait_for(state="attached")
    assert (
        ana.locator("#generate-form [name=lora] option").nth(1).inner_text() == "mara_v1 (ana@v1)"
    )
    assert ana.input_value("#generate-form [name=lora]") != ""
    # 4. Generation for both at once, progress over the WebSocket, then the scored results.
    for page in pages.values():
        for field, value in (("n", "2"), ("width", "64"), ("height", "64"), ("steps", "2")):
            page.fill(f"#generate-form [name={field}]", value)
        page.fill("#generate-form [name=seed]", "20")
        page.click("#generate-button")
    for user, page in pages.items():
        page.wait_for_selector("#job-list .progress[data-state=done]", timeout=120_000)
        page.locator("#result-grid .result").nth(1).wait_for()
        assert page.locator("#result-grid .result").count() == 2
        # Each sees their own character pass and the other person fail.
        assert page.locator("#result-grid .match.pass").count() == 1
        assert page.locator("#result-grid .match.fail").count() == 1
        page.screenshot(path=str(ARTIFACTS / f"serve-studio-{user}.png"), full_page=True)
    conn = sqlite3.connect(server.root / "server.db")
    recipes = dict(conn.execute("SELECT user_id, params FROM queue").fetchall())
    conn.close()
    assert "mara_v1.safetensors" in recipes[1] and "safetensors" not in recipes[2]
    # 5. Review with the keys: the first candidate accepted, stored under the account's name.
    shas = {}
    for user, page in pages.items():
        page.click("#results a:text('review them')")
        page.wait_for_selector(".card.cursor")
        shas[user] = page.eval_on_selector_all(".card", "cs => cs.map(c => c.dataset.sha)")
        assert len(shas[user]) == 2
        page.keyboard.press("a")
        wait_until(
            lambda u=user: decision(server, u, shas[u][0]) == f"accepted by {u}", f"{user}'s key"
        )
        assert page.locator("nav.account .who").inner_text() == user
        page.screenshot(path=str(ARTIFACTS / f"serve-review-{user}.png"))
    # 6. Neither saw the other's images, and naming one gets nothing.
    ben = pages["ben"]
    ana_sources = ana.eval_on_selector_all("img", "xs => xs.map(x => x.src)")
    for page, other in ((ana, "ben"), (ben, "ana")):
        page.goto(f"{url}/studio")
        html = page.content()
        for sha in shas[other]:
            if sha not in shas["ana" if other == "ben" else "ben"]:
                assert sha not in html
        theirs = server.root / "users" / other / "likeness.db"
        conn = sqlite3.connect(theirs)
        sources = [r[0] for r in conn.execute("SELECT sha256 FROM images WHERE origin = 'source'")]
        conn.close()
        for sha in sources:
            assert sha not in html
            answer = page.request.get(f"{url}/img/{sha}")
            assert answer.status == 404 and answer.body() == b'{"detail":"no such image"}'
    assert ana_sources
    for page in pages.values():
        page.context.close()
    assert errors == [], errors
    assert Path(ARTIFACTS / "serve-studio-ana.png").is_file()
