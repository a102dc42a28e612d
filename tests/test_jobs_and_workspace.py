"""Jobs resume by kind and key; workspaces are found upward; settings are typed."""

from __future__ import annotations

import pytest

from likeness.config import SettingsError, load_settings, settings_from_dict
from likeness.jobs import list_jobs, start_job
from likeness.workspace import (
    Workspace,
    WorkspaceError,
    check_trigger,
    find_workspace,
    propose_trigger,
)


def test_unfinished_job_is_resumed_finished_one_is_not(workspace):
    job = start_job(workspace.db, "add", "k1", total=10)
    job.set_progress(4)
    job.heartbeat()
    job._write(force=True)
    again = start_job(workspace.db, "add", "k1", total=10)
    assert again.id == job.id and again.done == 4 and again.resumed
    again.set_progress(10)
    again.finish("all stored")
    fresh = start_job(workspace.db, "add", "k1", total=10)
    assert fresh.id != job.id and fresh.done == 0
    fresh.fail("disk full")
    infos = {j.id: j for j in list_jobs(workspace.db)}
    assert infos[job.id].state == "done" and infos[job.id].attempts == 2
    assert infos[fresh.id].state == "failed" and infos[fresh.id].error == "disk full"


def test_workspace_is_found_from_a_subfolder(workspace, monkeypatch):
    sub = workspace.root / "a" / "b"
    sub.mkdir(parents=True)
    assert find_workspace(sub) == workspace.root
    monkeypatch.setenv("LIKENESS_WORKSPACE", str(sub))
    assert find_workspace() == workspace.root


def test_no_workspace_says_what_to_do(tmp_path):
    with pytest.raises(WorkspaceError, match="likeness init"):
        find_workspace(tmp_path)
    with pytest.raises(WorkspaceError, match="already holds"):
        Workspace.create(tmp_path / "w", "a").close()
        Workspace.create(tmp_path / "w", "a")


def test_settings_defaults_round_trip_and_errors(workspace):
    settings = load_settings(workspace.settings_path)
    assert settings == workspace.settings
    assert settings.training.network_rank == 64 and settings.training.mixed_precision == "bf16"
    assert settings.card.first_try_goal == 0.8
    with pytest.raises(SettingsError, match="unknown key 'phash'"):
        settings_from_dict({"dedup": {"phash": 3}})
    with pytest.raises(SettingsError, match="expected int"):
        settings_from_dict({"dedup": {"phash_max_distance": "3"}})
    with pytest.raises(SettingsError, match="is not one of"):
        settings_from_dict({"captions": {"trigger_placement": "middle"}})


def test_proposed_triggers_are_rare_tokens():
    token = propose_trigger("Elena")
    assert token == propose_trigger("Elena") != propose_trigger("Mara")
    assert check_trigger(token) is None
    for common in ("elena", "woman", "sks", "ohwx"):
        assert "already knows" in check_trigger(common)
    assert "lowercase" in check_trigger("Big Token")
