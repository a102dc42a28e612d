"""`likeness calibrate` on a real workspace: Obama's photos as the sources, other people's
photos as negatives; the JSON shape, the cache, --apply, an outlier source and the report."""

from __future__ import annotations

import html.parser
import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from likeness.cli.main import app
from likeness.config import load_settings
from likeness.curate.ingest import Ingester
from likeness.data import FACES
from likeness.store.db import connect
from likeness.workspace import DB_FILE, SETTINGS_FILE, Workspace

OBAMAS = ["obama.jpg", "obama2.jpg", "obama3.jpg", "obama_partial_face.jpg",
          "obama_partial_face2.jpg"]  # fmt: skip
OTHERS = ["biden.jpg", "Tom_Hanks_54745.png", "t1.jpg"]
CHROMIUM = Path("/usr/bin/chromium")
runner = CliRunner()


def calibrate(ws: Path, *args: str, code: int = 0):
    result = runner.invoke(
        app, ["--workspace", str(ws), "calibrate", "--no-body-pose", *args], catch_exceptions=False
    )
    assert result.exit_code == code, result.output + result.stderr
    return result


def make_workspace(root: Path, sources: list[str]) -> Path:
    ws = Workspace.create(root, name="barack")
    ingester = Ingester(ws, origin="source")
    for name in sources:
        ingester.ingest_file(FACES / name)
    ws.close()
    return root


def stamps(ws: Path) -> dict[tuple[str, str], str]:
    conn = connect(ws / DB_FILE, migrate=False)
    try:
        rows = conn.execute("SELECT image_sha, analyzer, created_at FROM analyses").fetchall()
    finally:
        conn.close()
    return {(r[0], r[1]): r[2] for r in rows}


@pytest.fixture(scope="module")
def negatives(tmp_path_factory) -> Path:
    from skimage import data

    folder = tmp_path_factory.mktemp("others")
    for name in OTHERS:
        shutil.copy(FACES / name, folder / name)
    Image.fromarray(data.astronaut()).save(folder / "astronaut.png")
    return folder


@pytest.fixture(scope="module")
def warm(tmp_path_factory, negatives) -> Path:
    """A workspace of the Obama photos whose analyses (and face prints) are cached."""
    root = make_workspace(tmp_path_factory.mktemp("warm") / "ws", OBAMAS)
    calibrate(root, "--negatives", str(negatives), "--json")
    return root


@pytest.fixture
def ws(warm, tmp_path) -> Iterator[Path]:
    copy = tmp_path / "ws"
    shutil.copytree(warm, copy)
    yield copy


def test_json_shape_bar_between_the_distributions_and_nothing_recomputed(ws, negatives):
    before_stamps = stamps(ws)
    settings_before = (ws / SETTINGS_FILE).read_bytes()
    result = calibrate(ws, "--negatives", str(negatives), "--json")
    data = json.loads(result.stdout)
    assert set(data) == {
        "backend", "threshold", "typical", "sources", "same_person", "near_duplicates",
        "different_person", "outliers", "current", "proposal", "warnings", "applied",
    }  # fmt: skip
    assert data["backend"]["name"] == "dlib" and data["threshold"] == 0.6
    assert data["sources"] == {"photos": 5, "with_face": 5, "shots": 3}
    same, other = data["same_person"], data["different_person"]
    assert same["count"] == len(same["pairs"]) == 7
    assert {frozenset((p["a"], p["b"])) for p in data["near_duplicates"]} == {
        frozenset(("obama.jpg", "obama_partial_face.jpg")),
        frozenset(("obama.jpg", "obama_partial_face2.jpg")),
        frozenset(("obama_partial_face.jpg", "obama_partial_face2.jpg")),
    }
    assert other["count"] == 9 and other["photos"] == 4
    assert set(other["faces"][0]) == {
        "name", "sha256", "face", "origin", "distance", "nearest", "nearest_sha256", "box",
    }  # fmt: skip
    proposal = data["proposal"]
    assert same["max"] < proposal["distance"] < other["min"]
    assert proposal["false_accept"] == 0.0 and proposal["false_reject"] == 0.0
    assert proposal["rule"] == "midpoint" and proposal["different_side"] == "samples"
    assert 5.0 < proposal["match"] < 8.0
    assert data["current"] == {
        "distance": 0.6, "match": 5.0, "false_reject": 0.0, "false_accept": 0.0,
    }  # fmt: skip
    assert data["warnings"] == [] and data["outliers"] == [] and data["applied"] is None
    # nothing written, nothing analysed again (every cached row keeps its time stamp)
    assert (ws / SETTINGS_FILE).read_bytes() == settings_before
    assert stamps(ws) == before_stamps
    analyzers = {analyzer for _, analyzer in before_stamps}
    assert analyzers == {"likeness.image", "likeness.face_print"}


def test_apply_writes_the_proposed_pass_match(ws, negatives):
    result = calibrate(ws, "--negatives", str(negatives), "--json", "--apply")
    data = json.loads(result.stdout)
    new = data["proposal"]["match"]
    assert data["applied"] == {
        "key": "identity.pass_match", "old": 5.0, "new": new, "file": str(ws / SETTINGS_FILE),
    }  # fmt: skip
    assert load_settings(ws / SETTINGS_FILE).identity.pass_match == new
    assert f"identity.pass_match: 5.0 -> {new}" in result.stderr
    # the written bar is now the current one
    again = json.loads(calibrate(ws, "--negatives", str(negatives), "--json").stdout)
    assert again["current"]["match"] == new
    assert again["current"]["distance"] == pytest.approx(data["proposal"]["distance"], abs=1e-3)


def test_without_negatives_the_bar_comes_from_the_source_photos(ws):
    result = calibrate(ws)
    assert "proposed" in result.stdout and "published threshold" in result.stdout
    assert "--apply" in result.stderr
    data = json.loads(calibrate(ws, "--json").stdout)
    assert data["different_person"]["count"] == 0
    assert data["proposal"]["different_side"] == "published"
    assert data["proposal"]["false_accept"] is None
    assert data["same_person"]["max"] < data["proposal"]["distance"] < 0.6


def test_an_outlier_source_is_named(ws, negatives):
    with Workspace.open(ws) as opened:
        Ingester(opened, origin="source").ingest_file(FACES / "biden.jpg")
    result = calibrate(ws, "--negatives", str(negatives), "--json")
    data = json.loads(result.stdout)
    assert [(o["name"], o["kind"]) for o in data["outliers"]] == [("biden.jpg", "someone_else")]
    assert "biden.jpg is far from the others" in result.stderr
    # Biden among the negatives is one of the sources now: left out, and said so
    assert "other photo biden.jpg is one of the source photos" in result.stderr
    assert data["proposal"] is not None
    assert data["same_person"]["max"] < 0.45


def test_too_few_photos_propose_nothing_and_apply_refuses(tmp_path):
    root = make_workspace(tmp_path / "ws", ["obama.jpg", "obama2.jpg"])
    before = (root / SETTINGS_FILE).read_bytes()
    data = json.loads(calibrate(root, "--json").stdout)
    assert data["proposal"] is None
    assert [w["code"] for w in data["warnings"]] == ["too_few_sources"]
    result = calibrate(root, "--apply", code=2)
    assert "at least 3" in result.stderr and "nothing was written" in result.stderr
    assert (root / SETTINGS_FILE).read_bytes() == before
    calibrate(root, "--report", str(tmp_path / "report"))  # a page without a proposal
    assert "none (see the warnings)" in (tmp_path / "report" / "index.html").read_text()


def test_bad_arguments_are_one_line(ws, tmp_path):
    result = calibrate(ws, "--negatives", str(tmp_path / "missing"), code=2)
    assert "--negatives" in result.stderr and "missing" in result.stderr
    (tmp_path / "empty").mkdir()
    result = calibrate(ws, "--negatives", str(tmp_path / "empty"), code=2)
    assert "no images" in result.stderr
    outside = runner.invoke(app, ["--workspace", str(tmp_path), "calibrate"])
    assert outside.exit_code == 2 and "no workspace" in outside.stderr


class _Images(html.parser.HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.sources: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "img":
            self.sources.append(dict(attrs)["src"] or "")


@pytest.fixture
def report(ws, negatives, tmp_path) -> Path:
    """A report of the Obama workspace with Biden added as a source, after --apply."""
    with Workspace.open(ws) as opened:
        Ingester(opened, origin="source").ingest_file(FACES / "biden.jpg")
    folder = tmp_path / "report"
    result = calibrate(ws, "--negatives", str(negatives), "--report", str(folder), "--apply")
    assert "report:" in result.stderr
    return folder


def test_report_shows_histograms_bars_and_outliers(report):
    page = (report / "index.html").read_text(encoding="utf-8")
    parser = _Images()
    parser.feed(page)
    assert "separation.png" in parser.sources
    assert len(parser.sources) >= 1 + 1 + 6  # the plot, the outlier, the nearest other faces
    for src in parser.sources:
        assert (report / src).is_file(), src
    with Image.open(report / "separation.png") as plot:
        assert plot.width >= 600 and plot.height >= 400
    assert "biden.jpg" in page and "someone else" in page
    assert "current" in page and "proposed" in page and "identity.pass_match" in page


@pytest.mark.browser
@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian chromium at /usr/bin/chromium")
def test_report_renders_in_chromium(report):
    """Every image on the page decodes in a real browser, and the page raises no error."""
    from playwright.sync_api import sync_playwright

    args = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"]
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=args)
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 900})
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto((report / "index.html").as_uri())
            page.wait_for_load_state("load")
            broken = page.eval_on_selector_all(
                "img",
                "imgs => imgs.filter(i => !i.complete || i.naturalWidth === 0).map(i => i.src)",
            )
            assert broken == [] and errors == []
            assert page.locator("h1").inner_text() == "Identity calibration"
            assert page.locator("img.thumb").count() >= 7
        finally:
            browser.close()
