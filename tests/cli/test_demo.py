"""The README's main job, end to end on the bundled photos."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from likeness.cli.main import app

runner = CliRunner()


def test_demo_runs_the_loop_and_is_rerunnable(tmp_path):
    result = runner.invoke(app, ["demo", str(tmp_path / "demo")], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "4 image(s) set aside" in result.output
    assert (tmp_path / "demo" / "report" / "index.html").is_file()
    ws = ["-w", str(tmp_path / "demo" / "workspace")]
    versions = json.loads(runner.invoke(app, [*ws, "dataset", "list", "--json"]).stdout)
    assert [(v["ref"], v["count"]) for v in versions] == [("demo@v1", 4), ("demo@v2", 5)]
    export = tmp_path / "demo" / "export" / "demo_v1"
    (folder,) = [p for p in export.iterdir() if p.is_dir()]
    assert len(list(folder.glob("*.txt"))) == 4

    # candidates: obama2 passes identity, Biden, Tom Hanks and the group photo do not
    v2 = json.loads(runner.invoke(app, [*ws, "dataset", "show", "demo@v2", "--json"]).stdout)
    added = set(i["sha256"] for i in v2["items"]) - set(
        i["sha256"]
        for i in json.loads(
            runner.invoke(app, [*ws, "dataset", "show", "demo@v1", "--json"]).stdout
        )["items"]
    )
    rows = runner.invoke(app, [*ws, "score", "--json"], catch_exceptions=False)
    scores = {r["name"]: r for r in json.loads(rows.stdout)}
    assert scores["obama2.jpg"]["pass"] and scores["obama2.jpg"]["sha256"] in added
    for other in ("biden.jpg", "Tom_Hanks_54745.png", "t1.jpg"):
        assert not scores[other]["pass"], other

    # again, on the same folder: nothing is stored twice, analyses come from the cache
    again = runner.invoke(app, ["demo", str(tmp_path / "demo")], catch_exceptions=False)
    assert again.exit_code == 0
    assert "0 analysed, 8 from cache" in again.output
