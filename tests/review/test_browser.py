"""The review app driven by a real browser (Debian chromium through Playwright): keys decide,
the database changes after each key, accepted images become a dataset version, and the queue and
focus views are saved as screenshots under test-artifacts/."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from likeness.review import create_app
from likeness.store.db import connect
from likeness.workspace import DB_FILE

from .builder import ReviewWorkspace
from .live import serve

CHROMIUM = Path("/usr/bin/chromium")
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian chromium at /usr/bin/chromium"),
]


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=ARGS)
        yield b
        b.close()


@pytest.fixture
def site(review_ws: ReviewWorkspace) -> Iterator[tuple[ReviewWorkspace, str]]:
    rw = review_ws
    with serve(create_app(rw.root, reviewer="browser")) as url:
        yield rw, url


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    pg = context.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda exc: errors.append(str(exc)))
    yield pg
    context.close()
    assert errors == [], errors


class Db:
    """Reads the workspace database the way a second process would."""

    def __init__(self, root: Path):
        self.path = root / DB_FILE

    def query(self, sql: str, *params: object) -> list[tuple]:
        conn = connect(self.path, migrate=False)
        try:
            return [tuple(r) for r in conn.execute(sql, params).fetchall()]
        finally:
            conn.close()

    def decision(self, sha: str) -> str:
        rows = self.query("SELECT decision FROM reviews WHERE image_sha = ?", sha)
        return rows[0][0] if rows else "undecided"

    def history_count(self) -> int:
        return self.query("SELECT COUNT(*) FROM review_history")[0][0]


def wait_until(check: Callable[[], bool], what: str, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.03)


def cards(page) -> list[str]:
    return page.eval_on_selector_all(".card", "cs => cs.map(c => c.dataset.sha)")


def cursor(page) -> str:
    return page.eval_on_selector(".card.cursor", "c => c.dataset.sha")


def test_queue_keys_decide_undo_and_move(site, page):
    rw, url = site
    db = Db(rw.root)
    page.goto(f"{url}/?origin=synthetic")
    order = cards(page)
    assert set(order) == set(rw.candidates)
    assert order[0] == max(rw.scored, key=rw.scored.get)  # best match first
    assert cursor(page) == order[0]
    assert page.inner_text("#left") == str(len(rw.candidates))

    page.keyboard.press("a")
    wait_until(lambda: db.decision(order[0]) == "accepted", "a to accept")
    wait_until(lambda: cursor(page) == order[1], "cursor to advance")
    assert "d-accepted" in page.get_attribute(f'.card[data-sha="{order[0]}"]', "class")

    page.keyboard.press("r")
    wait_until(lambda: db.decision(order[1]) == "rejected", "r to reject")
    assert db.history_count() == 2

    page.keyboard.press("u")
    wait_until(lambda: db.decision(order[1]) == "undecided", "u to undo the reject")
    assert db.history_count() == 3
    assert db.decision(order[0]) == "accepted"
    wait_until(lambda: cursor(page) == order[1], "cursor back on the undone card")

    page.keyboard.press("ArrowRight")
    wait_until(lambda: cursor(page) == order[2], "ArrowRight")
    page.keyboard.press("j")
    wait_until(lambda: cursor(page) == order[3], "j")
    page.keyboard.press("k")
    wait_until(lambda: cursor(page) == order[2], "k")
    page.keyboard.press("ArrowLeft")
    wait_until(lambda: cursor(page) == order[1], "ArrowLeft")
    assert db.history_count() == 3  # moving decides nothing

    page.keyboard.press("ArrowDown")
    columns = page.evaluate(
        "() => { const cs = [...document.querySelectorAll('.card')];"
        " return cs.filter(c => c.offsetTop === cs[0].offsetTop).length; }"
    )
    wait_until(lambda: cursor(page) == order[min(1 + columns, len(order) - 1)], "ArrowDown")
    page.keyboard.press("ArrowUp")
    wait_until(lambda: cursor(page) == order[1], "ArrowUp")

    page.keyboard.press("a")
    wait_until(lambda: db.decision(order[1]) == "accepted", "a on the second card")
    wait_until(lambda: page.inner_text("#left") == str(len(rw.candidates) - 2), "counter")
    assert page.inner_text("#n-accepted") == "2"

    page.keyboard.press("?")
    assert page.is_visible("#help")
    page.keyboard.press("Escape")
    assert not page.is_visible("#help")

    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "review-queue.png"))

    # The accepted images become the next dataset version, with the reviews that made it.
    page.fill("#dataset-name", "mara")
    page.click("#to-dataset button")
    wait_until(lambda: "mara@v1" in page.inner_text("#toast"), "the dataset toast")
    items = db.query(
        "SELECT i.image_sha FROM dataset_items i JOIN dataset_versions v ON v.id = i.version_id "
        "JOIN datasets d ON d.id = v.dataset_id WHERE d.name = 'mara' AND v.version = 1"
    )
    assert {r[0] for r in items} == {order[0], order[1]}
    links = db.query("SELECT image_sha FROM dataset_version_reviews")
    assert {r[0] for r in links} == {order[0], order[1]}


def test_focus_keys_decide_tag_undo_and_move(site, page):
    rw, url = site
    db = Db(rw.root)
    page.goto(f"{url}/?origin=synthetic")
    order = cards(page)
    page.keyboard.press("Enter")
    page.wait_for_url(f"**/focus/{order[0]}?origin=synthetic")
    assert page.is_visible("#main-image")
    assert page.locator(".faces img").count() == 2  # this face and the reference

    page.keyboard.press("1")  # bad_hands
    page.keyboard.press("n")
    page.keyboard.type("fingers merge")
    page.keyboard.press("Enter")
    page.keyboard.press("r")
    wait_until(lambda: db.decision(order[0]) == "rejected", "r in focus")
    page.wait_for_url(f"**/focus/{order[1]}?origin=synthetic")
    tags, note = db.query("SELECT tags, note FROM reviews WHERE image_sha = ?", order[0])[0]
    assert tags == '["bad_hands"]' and note == "fingers merge"

    page.keyboard.press("a")
    wait_until(lambda: db.decision(order[1]) == "accepted", "a in focus")
    page.wait_for_url(f"**/focus/{order[2]}?origin=synthetic")

    page.keyboard.press("u")  # undoes the accept on the previous image and goes back to it
    wait_until(lambda: db.decision(order[1]) == "undecided", "u in focus")
    page.wait_for_url(f"**/focus/{order[1]}?origin=synthetic")
    assert db.decision(order[0]) == "rejected"

    page.keyboard.press("ArrowRight")
    page.wait_for_url(f"**/focus/{order[2]}?origin=synthetic")
    page.keyboard.press("k")
    page.wait_for_url(f"**/focus/{order[1]}?origin=synthetic")
    page.keyboard.press("j")
    page.wait_for_url(f"**/focus/{order[2]}?origin=synthetic")
    page.keyboard.press("ArrowLeft")
    page.wait_for_url(f"**/focus/{order[1]}?origin=synthetic")
    assert db.history_count() == 3

    page.goto(f"{url}/focus/{order[0]}?origin=synthetic")
    assert page.inner_text("#decision-pill").lower() == "rejected"
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "review-focus.png"))

    page.keyboard.press("Escape")
    page.wait_for_url(f"{url}/?origin=synthetic")
    assert cursor(page) == order[0]  # the queue comes back where the focus view was


def test_undo_twice_walks_back_this_tabs_decisions_on_one_image(site, page):
    rw, url = site
    db = Db(rw.root)
    page.goto(f"{url}/?origin=synthetic")
    first = cards(page)[0]
    page.keyboard.press("a")
    wait_until(lambda: db.decision(first) == "accepted", "accept")
    page.keyboard.press("ArrowLeft")
    page.keyboard.press("r")
    wait_until(lambda: db.decision(first) == "rejected", "reject the same image")
    page.keyboard.press("u")
    wait_until(lambda: db.decision(first) == "accepted", "first undo back to accepted")
    page.keyboard.press("u")
    wait_until(lambda: db.decision(first) == "undecided", "second undo back to undecided")
    assert "error" not in (page.get_attribute("#toast", "class") or "")
    assert [r[0] for r in db.query("SELECT action FROM review_history ORDER BY id")] == [
        "decide",
        "decide",
        "undo",
        "undo",
    ]
