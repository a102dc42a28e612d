from __future__ import annotations

import csv
import json
import shutil

import pytest
import typer
from typer.testing import CliRunner

from likeness.cli import refs, score


@pytest.fixture(scope="module")
def app() -> typer.Typer:
    cli = typer.Typer()

    @cli.callback()
    def root(ctx: typer.Context) -> None:
        ctx.obj = {"workspace": None}

    cli.command("score")(score.score)
    cli.add_typer(refs.app, name="refs")
    return cli


@pytest.fixture(scope="module")
def folders(photo_dir, tmp_path_factory):
    base = tmp_path_factory.mktemp("cli")
    (base / "refs").mkdir()
    (base / "gen").mkdir()
    shutil.copy(photo_dir / "obama.jpg", base / "refs")
    for name in ("obama2.jpg", "biden.jpg"):
        shutil.copy(photo_dir / name, base / "gen")
    return base


def test_score_plain_folders_json_csv_and_report(app, folders, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no workspace here
    monkeypatch.delenv("LIKENESS_WORKSPACE", raising=False)
    result = CliRunner().invoke(app, [
        "score", str(folders / "gen"), "--refs", str(folders / "refs"), "--json",
        "--csv", str(tmp_path / "s.csv"), "--report", str(tmp_path / "rep"), "--no-body-pose",
    ])  # fmt: skip
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    verdicts = {r["path"].rsplit("/", 1)[1]: r["pass"] for r in rows}
    assert verdicts == {"obama2.jpg": True, "biden.jpg": False}
    assert all(r["body_pose"] == "not_available" for r in rows)
    with open(tmp_path / "s.csv", newline="") as handle:
        table = list(csv.DictReader(handle))
    assert {r["path"].rsplit("/", 1)[1]: r["pass"] for r in table} == {
        "obama2.jpg": "True",
        "biden.jpg": "False",
    }
    assert (tmp_path / "rep" / "index.html").is_file()


def test_score_outside_a_workspace_needs_refs(app, folders, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("LIKENESS_WORKSPACE", raising=False)
    result = CliRunner().invoke(app, ["score", str(folders / "gen")])
    assert result.exit_code == 2
    assert "--refs" in result.output


def test_score_in_a_workspace_uses_source_photos_and_the_cache(app, folders, tmp_path, monkeypatch):
    from likeness.curate.ingest import Ingester
    from likeness.workspace import Workspace

    ws = Workspace.create(tmp_path / "ws", name="barack")
    ingester = Ingester(ws, origin="source")
    ingester.ingest_file(folders / "refs" / "obama.jpg")
    ws.close()
    monkeypatch.setenv("LIKENESS_WORKSPACE", str(tmp_path / "ws"))
    args = ["score", str(folders / "gen"), "--json", "--no-body-pose"]
    first = CliRunner().invoke(app, args)
    assert first.exit_code == 0, first.output
    assert "2 analysed, 1 from cache" not in first.output
    rows = json.loads(first.stdout)
    assert [r["pass"] for r in rows] == [False, True]  # biden, obama2 (sorted paths)
    second = CliRunner().invoke(app, args)
    assert second.exit_code == 0
    assert json.loads(second.stdout) == rows
    assert "0 analysed, 3 from cache" in second.stderr or "0 analysed, 3 from cache" in (
        second.output
    )
    # Each run is a job record, finished.
    from likeness.jobs import list_jobs

    with Workspace.open(tmp_path / "ws") as again:
        jobs = [j for j in list_jobs(again.db) if j.kind == "score"]
    assert jobs and all(j.state == "done" for j in jobs)
    # Without paths, every workspace image is scored (here: the one source photo).
    alone = CliRunner().invoke(app, ["score", "--json", "--no-body-pose"])
    assert alone.exit_code == 0, alone.output
    (only,) = json.loads(alone.stdout)
    assert only["name"] == "obama.jpg" and only["match"] == 10.0


def test_refs_crop_writes_square_face_crops(app, folders, tmp_path, monkeypatch):
    from PIL import Image

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("LIKENESS_WORKSPACE", raising=False)
    result = CliRunner().invoke(app, [
        "refs", "crop", str(folders / "gen"), "--out", str(tmp_path / "crops"), "--size", "256",
        "--margin", "0.3", "--json",
    ])  # fmt: skip
    assert result.exit_code == 0, result.output
    entries = json.loads(result.stdout)
    assert len(entries) == 2 and all(e["crop"] for e in entries)
    for entry in entries:
        with Image.open(entry["crop"]) as img:
            assert img.size == (256, 256)
    missing = CliRunner().invoke(app, ["refs", "crop", str(folders / "gen")])
    assert missing.exit_code == 2 and "--out" in missing.output


def test_unreadable_images_are_named_and_set_the_exit_status(app, folders, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("LIKENESS_WORKSPACE", raising=False)
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG not really")
    result = CliRunner().invoke(app, [
        "score", str(bad), str(folders / "gen" / "obama2.jpg"), "--refs",
        str(folders / "refs"), "--no-body-pose", "--workers", "1", "--json",
    ])  # fmt: skip
    assert result.exit_code == 1
    assert "not scored" in result.stderr and "broken.png" in result.stderr
    broken, good = json.loads(result.stdout)
    assert broken["error"] and broken["flags"] == ["unreadable"] and not broken["pass"]
    assert good["pass"]


def test_file_names_that_look_like_markup_are_printed_as_is(app, folders, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("LIKENESS_WORKSPACE", raising=False)
    gen = tmp_path / "gen"
    gen.mkdir()
    shutil.copy(folders / "gen" / "obama2.jpg", gen / "take[bold]1.jpg")
    (gen / "bad[red]x.png").write_bytes(b"\x89PNG not really")
    monkeypatch.setattr(score.out, "_width", 300)  # the whole table, names untruncated
    result = CliRunner().invoke(app, [
        "score", str(gen), "--refs", str(folders / "refs"), "--no-body-pose", "--workers", "1",
    ])  # fmt: skip
    assert result.exit_code == 1, result.output
    assert "take[bold]1.jpg" in result.stdout and "bad[red]x.png" in result.stderr
    crops = CliRunner().invoke(app, ["refs", "crop", str(gen), "--out", str(tmp_path / "c")])
    assert crops.exit_code == 0, crops.output
    assert "take[bold]1.jpg" in crops.stdout and "bad[red]x.png" in crops.stderr


def test_refs_crop_into_a_file_is_one_line(app, folders, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("LIKENESS_WORKSPACE", raising=False)
    taken = tmp_path / "taken"
    taken.write_text("a file, not a folder")
    result = CliRunner().invoke(
        app, ["refs", "crop", str(folders / "gen"), "--out", str(taken / "crops")]
    )
    assert result.exit_code == 2 and "cannot create the folder" in result.output
    assert "Traceback" not in result.output


def test_unreadable_or_faceless_references_are_named(app, folders, tmp_path, monkeypatch):
    from PIL import Image

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("LIKENESS_WORKSPACE", raising=False)
    blank = tmp_path / "blank.png"
    Image.new("RGB", (64, 64), "grey").save(blank)
    result = CliRunner().invoke(app, [
        "score", str(folders / "gen" / "obama2.jpg"), "--refs", str(blank), "--refs",
        str(tmp_path / "gone.jpg"), "--no-body-pose", "--workers", "1", "--json",
    ])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "reference not read:" in result.stderr and "gone.jpg" in result.stderr
    assert "reference without a usable face: " + str(blank) in " ".join(result.stderr.split())
    assert "identity not measured" in result.stderr
    assert json.loads(result.stdout)[0]["match"] is None
