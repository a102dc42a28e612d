"""`likeness serve user ...` through Typer's CliRunner: the token is printed once and only its
hash is kept; list, quota, disable, token and remove act on the server folder."""

from __future__ import annotations

import json

import pytest
import typer
from typer.testing import CliRunner

from likeness.cli.main import app
from likeness.cli.serve import parse_size
from likeness.serve import accounts
from likeness.serve.serverdb import SERVER_DB, open_server_db
from likeness.workspace import Workspace

runner = CliRunner()


def serve(root, *args: str):
    result = runner.invoke(app, ["serve", *args, "--root", str(root)])
    return result


def test_accounts_from_the_command_line(tmp_path):
    root = tmp_path / "srv"
    made = serve(
        root, "user", "add", "ana", "--character", "Mara", "--class-word", "woman", "--json"
    )
    assert made.exit_code == 0, made.output
    data = json.loads(made.stdout)
    token = data["token"]
    assert len(token) == 43 and data["folder"] == "users/ana"
    with Workspace.open(root / "users" / "ana") as ws:  # a plain workspace
        assert (ws.settings.character.name, ws.settings.character.class_word) == ("Mara", "woman")
    assert token.encode() not in (root / SERVER_DB).read_bytes()
    again = serve(root, "user", "add", "ana")
    assert again.exit_code == 2 and "exists" in again.output
    bad = serve(root, "user", "add", "../x")
    assert bad.exit_code == 2 and "user name" in bad.output

    quota = serve(root, "user", "quota", "ana", "--images", "100", "--disk", "1.5G", "--json")
    assert quota.exit_code == 0, quota.output
    assert json.loads(quota.stdout)["quota"] == {
        "images": 100,
        "train_runs": None,
        "disk_bytes": int(1.5 * 1024**3),
        "queued_jobs": None,
    }
    listed = json.loads(serve(root, "user", "list", "--json").stdout)
    assert [(u["name"], u["disabled"], u["sessions"]) for u in listed] == [("ana", False, 0)]

    assert serve(root, "user", "disable", "ana").exit_code == 0
    conn = open_server_db(root)
    assert accounts.verify_token(conn, "ana", token) is None
    conn.close()
    assert serve(root, "user", "enable", "ana").exit_code == 0
    renewed = serve(root, "user", "token", "ana")
    assert renewed.exit_code == 0
    new = renewed.stdout.strip().rsplit(" ", 1)[-1]
    conn = open_server_db(root)
    assert accounts.verify_token(conn, "ana", token) is None
    assert accounts.verify_token(conn, "ana", new) is not None
    conn.close()

    removed = serve(root, "user", "remove", "ana", "--yes")
    assert removed.exit_code == 0, removed.output
    assert not (root / "users" / "ana").exists()
    (kept,) = (root / "removed").iterdir()
    assert (kept / "likeness.toml").is_file()
    # The name is free again, and the new account starts empty.
    assert serve(root, "user", "add", "ana").exit_code == 0
    unknown = serve(root, "user", "disable", "nobody")
    assert unknown.exit_code == 2 and "no user 'nobody'" in unknown.output


def test_root_from_the_environment_and_sizes(tmp_path, monkeypatch):
    monkeypatch.setenv("LIKENESS_SERVE_ROOT", str(tmp_path / "env-root"))
    assert runner.invoke(app, ["serve", "user", "add", "ben"]).exit_code == 0
    assert (tmp_path / "env-root" / "users" / "ben" / "likeness.toml").is_file()
    assert parse_size("20G") == 20 * 1024**3
    assert parse_size("500MiB") == 500 * 1024**2
    assert parse_size("1048576") == 1048576
    assert parse_size("-1") == -1
    with pytest.raises(typer.BadParameter):
        parse_size("lots")


def test_cert_and_key_go_together(tmp_path):
    result = serve(tmp_path, "--cert", str(tmp_path / "c.pem"))
    assert result.exit_code == 2 and "--cert and --key" in result.output
