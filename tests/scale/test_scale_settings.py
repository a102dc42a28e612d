"""`[scale]` in likeness.toml and the flags: when a run asks for workers, and the one-line
errors for settings that cannot be used (no Ray needed)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import typer

from likeness.cli.scaling import ScaleAsk, scale_ask
from likeness.config import ScaleSettings, SettingsError, load_settings
from likeness.workspace import Workspace


@pytest.mark.parametrize(
    ("settings", "engine", "flags", "expected"),
    [
        ({}, "diffusers", {}, None),
        ({}, "comfyui", {"comfy_urls": ["http://a:1"]}, None),
        ({}, "diffusers", {"workers": 2}, ScaleAsk("local", 2, ())),
        ({}, "diffusers", {"ray": "auto"}, ScaleAsk("auto", None, ())),
        ({}, "comfyui", {"comfy_urls": ["http://a:1", "http://b:1"]},
         ScaleAsk("local", None, ("http://a:1", "http://b:1"))),
        ({"address": "10.0.0.5:6379"}, "diffusers", {}, ScaleAsk("10.0.0.5:6379", None, ())),
        ({"address": "auto"}, "diffusers", {"workers": 0}, None),
        ({"comfy_urls": ["http://a:1", "http://b:1"]}, "comfyui", {}, ScaleAsk("local", None, ())),
        ({"comfy_urls": ["http://a:1", "http://b:1"]}, "diffusers", {}, None),
        ({"workers": 4}, "replicate", {}, None),
    ],
)  # fmt: skip
def test_when_a_run_asks_for_workers(settings, engine, flags, expected):
    asked = {"workers": None, "comfy_urls": None, "ray": None, **flags}
    assert scale_ask(ScaleSettings(**settings), engine, **asked) == expected


def test_flags_asking_a_hosted_engine_for_workers_stop_in_one_line(capsys):
    with pytest.raises(typer.Exit) as stopped:
        scale_ask(ScaleSettings(), "fal", workers=2, comfy_urls=None, ray=None)
    assert stopped.value.exit_code == 2
    assert "--engine fal: runs on its provider's servers" in capsys.readouterr().err


def test_scale_settings_are_read_from_likeness_toml_and_checked(tmp_path: Path):
    with Workspace.create(tmp_path / "ws", name="Mara") as ws:
        assert ws.settings.scale == ScaleSettings()
        assert "[scale]" in ws.settings_path.read_text(encoding="utf-8")
    path = tmp_path / "likeness.toml"
    path.write_text(
        '[scale]\naddress = "auto"\ncomfy_urls = ["http://10.0.0.11:8188"]\nmax_retries = 1\n',
        encoding="utf-8",
    )
    scale = load_settings(path).scale
    assert (scale.address, scale.comfy_urls, scale.max_retries) == (
        "auto",
        ["http://10.0.0.11:8188"],
        1,
    )
    for text, message in [
        ('address = "somewhere"', "scale.address: 'somewhere' is not one of"),
        ('comfy_urls = ["10.0.0.11:8188"]', "scale.comfy_urls: ['10.0.0.11:8188'] must be"),
        ("gpus_per_worker = 0", "scale.gpus_per_worker: 0.0 must be more than 0"),
        ("max_retries = -1", "scale.workers / max_retries / reconnect_attempts"),
        ('workers = "two"', "scale.workers: expected int, got 'two'"),
    ]:
        path.write_text(f"[scale]\n{text}\n", encoding="utf-8")
        with pytest.raises(SettingsError, match=re.escape(message)):
            load_settings(path)
