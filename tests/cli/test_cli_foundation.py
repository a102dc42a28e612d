"""The command line on real photos and bad files: statuses, exit codes, JSON shapes."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from likeness.cli.main import app
from tests.conftest import random_png

runner = CliRunner()


def invoke(*args: str, ok: bool = True):
    result = runner.invoke(app, list(args), catch_exceptions=False)
    if ok:
        assert result.exit_code == 0, result.output + result.stderr
    return result


@pytest.fixture
def ws_dir(tmp_path):
    root = tmp_path / "ws"
    result = invoke("init", str(root), "--name", "Mara")
    assert "trigger token" in result.output and "rare made-up token" in result.output
    return root


def test_init_refuses_an_existing_workspace_and_warns_on_common_triggers(tmp_path, ws_dir):
    result = invoke("init", str(ws_dir), "--name", "Mara", ok=False)
    assert result.exit_code == 2 and "already holds a workspace" in result.stderr
    result = invoke("init", str(tmp_path / "w2"), "--name", "Elena", "--trigger", "elena")
    assert "already knows" in result.stderr


def test_add_json_shape_and_exit_status(ws_dir, faces_dir, tmp_path):
    (tmp_path / "zero.jpg").write_bytes(b"")
    (tmp_path / "text.jpg").write_text("hello")
    args = ["-w", str(ws_dir), "add", str(faces_dir / "obama.jpg"), str(faces_dir / "biden.jpg")]
    result = invoke(
        *args, str(tmp_path / "zero.jpg"), str(tmp_path / "text.jpg"), "--json", ok=False
    )
    assert result.exit_code == 1
    rows = json.loads(result.stdout)
    assert [r["status"] for r in rows] == ["stored", "stored", "rejected", "rejected"]
    for row in rows:
        assert {"path", "status", "sha256", "reason"} <= row.keys()
    assert "empty file" in rows[2]["reason"] and "not an image" in rows[3]["reason"]
    assert "zero.jpg" in result.stderr and "text.jpg" in result.stderr
    # again: everything is already there, nothing rejected -> exit 0
    result = invoke(*args, "--json")
    assert [r["status"] for r in json.loads(result.stdout)] == ["duplicate", "duplicate"]


def test_add_dedup_dataset_export_end_to_end(ws_dir, faces_dir, tmp_path):
    from likeness.curate.variants import near_duplicate_variants
    from likeness.imaging import open_image

    inputs = tmp_path / "in"
    inputs.mkdir()
    for name in ("obama.jpg", "obama2.jpg", "t1.jpg"):
        (inputs / name).write_bytes((faces_dir / name).read_bytes())
    for name, data in near_duplicate_variants(open_image(faces_dir / "obama.jpg").image).items():
        (inputs / f"copy_{name}").write_bytes(data)
    w = ["-w", str(ws_dir)]
    result = invoke(*w, "add", str(inputs), "--json")
    statuses = {r["path"].rsplit("/", 1)[-1]: r["status"] for r in json.loads(result.stdout)}
    assert statuses["obama2.jpg"] == "stored" and statuses["t1.jpg"] == "stored"
    # the first of the five look-alikes (in name order) is stored plainly, the rest are flagged
    group = [statuses[n] for n in sorted(statuses) if n.startswith("copy_") or n == "obama.jpg"]
    assert group == ["stored"] + ["near_duplicate"] * 4

    report = json.loads(invoke(*w, "dedup", "--json").stdout)
    assert len(report["groups"]) == 1 and not report["applied"]
    report = json.loads(invoke(*w, "dedup", "--apply", "--json").stdout)
    assert report["changed"] == 4 and report["groups"][0]["keep"]["name"] == "obama.jpg"

    created = json.loads(invoke(*w, "dataset", "create", "mara", "--json").stdout)
    assert created["ref"] == "mara@v1" and created["count"] == 3
    invoke(*w, "dataset", "create", "mara", "--exclude", "t1.jpg", "--note", "no group")
    listing = json.loads(invoke(*w, "dataset", "list", "--json").stdout)
    assert [(v["ref"], v["count"], v["parent"]) for v in listing] == [
        ("mara@v1", 3, None),
        ("mara@v2", 2, "mara@v1"),
    ]
    shown = json.loads(invoke(*w, "dataset", "show", "mara@v1", "--json").stdout)
    assert len(shown["items"]) == 3 and all("caption" in i for i in shown["items"])
    diff = json.loads(invoke(*w, "dataset", "diff", "mara@v1", "mara@v2", "--json").stdout)
    assert len(diff["removed"]) == 1 and diff["added"] == []

    exported = invoke(*w, "dataset", "export", "mara@v1", str(tmp_path / "k"), "--json")
    folder = json.loads(exported.stdout)["image_folder"]
    assert sorted(p.suffix for p in (tmp_path / "k").joinpath(folder).iterdir()) == [
        ".jpg", ".jpg", ".jpg", ".txt", ".txt", ".txt",
    ]  # fmt: skip
    invoke(*w, "dataset", "export", "mara", str(tmp_path / "hf"), "--format", "imagefolder")
    assert (tmp_path / "hf" / "metadata.jsonl").read_text().count("\n") == 2

    jobs = json.loads(invoke(*w, "jobs", "--json").stdout)
    assert jobs[0]["kind"] == "add" and jobs[0]["state"] == "done"
    assert {"id", "kind", "state", "total", "done", "started_at", "heartbeat_at", "error"} <= jobs[
        0
    ].keys()


def test_unknown_dataset_is_one_clear_line(ws_dir):
    result = invoke("-w", str(ws_dir), "dataset", "show", "nope", ok=False)
    assert result.exit_code == 2 and "no dataset nope" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_many_files_show_a_progress_bar(ws_dir, tmp_path):
    for i in range(8):
        random_png(tmp_path / f"{i}.png", seed=i)
    result = invoke("-w", str(ws_dir), "add", str(tmp_path))
    assert "adding" in result.stderr and "8 stored" in result.stdout


def _commands(group, prefix=()):
    import typer.main

    click_group = typer.main.get_command(group) if not hasattr(group, "commands") else group
    for name, command in click_group.commands.items():
        yield (*prefix, name), command
        if hasattr(command, "commands"):
            yield from _commands(command, (*prefix, name))


def test_every_command_has_help_with_an_example():
    for path, command in _commands(app):
        assert command.help, f"likeness {' '.join(path)} has no help"
        if not hasattr(command, "commands"):
            assert "Example:" in command.help, f"likeness {' '.join(path)} has no example"
        result = runner.invoke(app, [*path, "--help"])
        assert result.exit_code == 0, path


def test_errors_naming_paths_with_brackets_are_printed_as_text(tmp_path):
    odd = tmp_path / "x[red]y"
    result = invoke("-w", str(odd), "jobs", ok=False)
    assert result.exit_code == 2 and "x[red]y" in result.stderr
