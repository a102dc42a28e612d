"""`likeness train RECIPE --report DIR` and `likeness train report RUN --out DIR`: the run's
HTML page (loss curve, likeness per checkpoint with the best marked, a probe sheet per
checkpoint) renders, its images exist and Chromium draws them; the best checkpoint shows in
`likeness train --json` and in `likeness lora list|show`."""

from __future__ import annotations

import json
import shutil
from html.parser import HTMLParser
from pathlib import Path

import pytest
from typer.testing import CliRunner

from likeness.cli.main import app
from likeness.train.recipe import write_example
from tests.evaluate.conftest import screenshot
from tests.train.conftest import TINY_JUDGE, fast_recipe

runner = CliRunner()


class Page(HTMLParser):
    """The images, table rows and headings of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.images: list[str] = []
        self.rows: list[str] = []
        self.headings: list[str] = []
        self._tag: str | None = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "img":
            self.images.append(attrs["src"])
        if tag == "tr":
            self.rows.append(attrs.get("class") or "")
        self._tag = tag

    def handle_data(self, data):
        if self._tag in ("h1", "h2") and data.strip():
            self.headings.append(data.strip())


@pytest.fixture(scope="module")
def trained(judge_template, train_models, tmp_path_factory, instruments):
    """A workspace where `likeness train --json --report` ran a judged tiny SDXL recipe (on one
    torch thread, as the function-scoped tests run: tiny models are fastest so)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("report") / "ws"
    shutil.copytree(judge_template, root)
    recipe_file = root.parent / "lora.toml"
    recipe = fast_recipe(train_models.sdxl, "sdxl", "obama@v1", steps=6, checkpoint_every=2,
                         learning_rate=5e-3, judge=TINY_JUDGE)  # fmt: skip
    write_example(recipe_file, recipe)
    report = root.parent / "report"
    args = ["-w", str(root), "train", str(recipe_file), "--device", "cpu", "--json",
            "--report", str(report)]  # fmt: skip
    try:
        result = runner.invoke(app, args)
    finally:
        torch.set_num_threads(threads)
    assert result.exit_code == 0, result.output
    return root, json.loads(result.stdout), report


def test_train_json_marks_the_best_checkpoint_and_writes_the_report(trained):
    root, data, report = trained
    assert data["best"] is not None
    assert [c["step"] for c in data["checkpoints"]] == [2, 4, 6]
    assert sum(c["best"] for c in data["checkpoints"]) == 1
    best = next(c for c in data["checkpoints"] if c["best"])
    assert best["id"] == data["best"]["id"]
    for checkpoint in data["checkpoints"]:
        metrics = checkpoint["metrics"]
        assert {"match", "pass_rate", "grain", "plastic", "objective"} <= set(metrics)
        assert [(p["shot"], p["seed"]) for p in checkpoint["probes"]] == [
            ("front_neutral", 1), ("standing", 1)]  # fmt: skip
    assert data["report"] == str(report / "index.html")
    page = Page()
    page.feed((report / "index.html").read_text(encoding="utf-8"))
    assert {"Loss", "Likeness per checkpoint", "Checkpoints", "Probes"} <= set(page.headings)
    assert "assets/loss.png" in page.images and "assets/likeness.png" in page.images
    sheets = [src for src in page.images if src.startswith("assets/probes_step")]
    assert len(sheets) == 3
    for src in page.images:
        assert (report / src).is_file() and (report / src).stat().st_size > 1000, src
    assert page.rows.count("best") == 1


def test_train_report_rewrites_the_page_of_a_stored_run_and_lora_list_shows_the_best(
    trained, tmp_path
):
    root, data, _ = trained
    out = tmp_path / "again"
    result = runner.invoke(app, ["-w", str(root), "train", "report", str(data["run_id"]),
                                 "--out", str(out), "--json"])  # fmt: skip
    assert result.exit_code == 0, result.output
    stored = json.loads(result.stdout)
    assert stored["best"]["id"] == data["best"]["id"]
    assert [row[0] for row in stored["losses"]] == list(range(1, 7))
    assert (out / "index.html").is_file()
    missing = runner.invoke(app, ["-w", str(root), "train", "report", "99", "--out", str(out)])
    assert missing.exit_code == 2 and "no training run '99'" in missing.output

    listed = runner.invoke(app, ["-w", str(root), "lora", "list", "--json"])
    rows = json.loads(listed.stdout)
    best = [r for r in rows if r["judge"] and r["judge"]["best"]]
    assert [r["sha256"] for r in best] == [data["best"]["sha256"]]
    shown = runner.invoke(app, ["-w", str(root), "lora", "show", str(best[0]["id"])],
                          env={"COLUMNS": "160"})  # fmt: skip
    assert shown.exit_code == 0 and "best of its run" in shown.output


@pytest.mark.browser
def test_the_report_renders_in_chromium(trained, chromium):
    _, _, report = trained
    screenshot(chromium, report / "index.html", "train-report-tiny")


@pytest.fixture(scope="module")
def chromium() -> Path:
    path = Path("/usr/bin/chromium")
    if not path.exists():
        pytest.skip("needs Debian chromium at /usr/bin/chromium")
    return path
