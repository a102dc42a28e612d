"""Recipes: defaults, TOML round trip, validation messages, overrides, trigger placement, hash;
and the `likeness recipe` commands."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from likeness.cli import recipe as recipe_cli
from likeness.recipes import (
    LoraSpec,
    Recipe,
    RecipeError,
    build_prompt,
    diffusers_scheduler,
    place_trigger,
)


def test_defaults_are_the_working_recipe():
    r = Recipe()
    assert (r.width, r.height) == (832, 1216)
    assert (r.sampler, r.scheduler, r.steps, r.cfg) == ("dpmpp_2m", "karras", 30, 4.0)
    assert LoraSpec("x.safetensors").strength == 0.7
    assert (r.refiner.enabled, r.refiner.denoise, r.refiner.steps) == (True, 0.25, 15)
    assert r.detailer.denoise == 0.4 and not r.detailer.enabled
    assert r.identity.weight == 0.85 and not r.identity.enabled


def test_toml_round_trip_keeps_every_field(tmp_path: Path):
    r = Recipe(
        engine="comfyui",
        model="bigLove_xl.safetensors",
        loras=(LoraSpec("a.safetensors", 0.6), LoraSpec("b.safetensors", -0.3)),
        prompt='raw photo, "quoted", ünïcödé',
        negative="blurry",
        trigger="zk1",
        seed=2**64 - 1,
        batch=2,
    ).with_overrides(
        {
            "detailer.enabled": True,
            "upscale.enabled": True,
            "upscale.model": "4x-UltraSharp.safetensors",
            "identity.enabled": True,
            "identity.references": ["ref1.png", "ref2.png"],
        }
    )
    path = tmp_path / "r.toml"
    r.write_toml(path)
    back = Recipe.from_toml_file(path)
    assert back == r
    assert back.recipe_hash() == r.recipe_hash()
    assert isinstance(back.loras, tuple) and isinstance(back.identity.references, tuple)


def test_partial_toml_takes_defaults_and_accepts_lora_name():
    r = Recipe.from_toml(
        'model = "m.safetensors"\ncfg = 5\n[[loras]]\nname = "zk1"\n[refiner]\nsteps = 10\n'
    )
    assert r.cfg == 5.0 and r.width == 832
    assert r.loras == (LoraSpec("zk1", 0.7),)
    assert r.refiner.steps == 10 and r.refiner.denoise == 0.25


@pytest.mark.parametrize(
    "toml,field,words",
    [
        ("width = 833", "width", "multiple of 8"),
        ("cgf = 3", "cgf", "did you mean 'cfg'"),
        ('sampler = "dpmpp2m"', "sampler", "did you mean 'dpmpp_2m'"),
        ('engine = "a1111"', "engine", "diffusers, comfyui"),
        ("steps = 0", "steps", "between 1 and 1000"),
        ('cfg = "high"', "cfg", "must be a number"),
        ("[refiner]\ndenoise = 0", "refiner.denoise", "(0.0, 1.0]"),
        ("[[loras]]\nstrength = 0.5", "loras.0.path", "missing"),
        ("[[loras]]\npath = 'a'\nstrenght = 1", "loras.0.strenght", "did you mean 'strength'"),
        ("[identity]\nenabled = true", "identity.references", "reference face images"),
        ('[identity]\nmethod = "faceid"', "identity.method", "instantid"),
        ('[identity]\nkind = "faceid"', "identity.method", "instantid"),
        ('[identity]\nregion = "body"', "identity.region", "face, image"),
        ("[identity]\ndenoise = 0", "identity.denoise", "(0.0, 1.0]"),
        ("[identity]\nguide_size = 100", "identity.guide_size", "multiple of 8"),
        ("[detailer]\nguide_size = 500", "detailer.guide_size", "multiple of 8"),
        ("seed = -2", "seed", "-1 (random)"),
        ("width = ", "recipe", "not valid TOML"),
    ],
)
def test_validation_errors_name_the_field_and_value(toml, field, words):
    with pytest.raises(RecipeError) as info:
        Recipe.from_toml(toml)
    assert info.value.field == field
    assert words in str(info.value)
    assert str(info.value).startswith(field + ":")


def test_overrides_parse_cli_strings_and_append_loras():
    r = Recipe(model="m", loras=(LoraSpec("a.safetensors"),))
    changed = r.with_overrides(
        {
            "cfg": 5,
            "loras.0.strength": "0.8",
            "loras.1.path": "b.safetensors",
            "steps": "25",
            "detailer.enabled": "true",
            "prompt": "5",
        }
    )
    assert changed.cfg == 5.0 and changed.steps == 25 and changed.prompt == "5"
    assert changed.loras == (LoraSpec("a.safetensors", 0.8), LoraSpec("b.safetensors", 0.7))
    assert changed.detailer.enabled is True
    assert r.cfg == 4.0  # the original is unchanged (frozen)
    assert changed.with_overrides({"loras": "[]"}).loras == ()
    assert changed.with_overrides({"loras": [LoraSpec("c", 0.1)]}).loras == (LoraSpec("c", 0.1),)
    with pytest.raises(RecipeError, match="loras.5"):
        r.with_overrides({"loras.5.strength": 1})
    with pytest.raises(RecipeError, match="refiner.strength"):
        r.with_overrides({"refiner.strength": 1})


def test_recipe_hash_is_stable_and_sensitive():
    a = Recipe(model="m", prompt="p")
    assert a.recipe_hash() == Recipe.from_dict(json.loads(json.dumps(a.to_dict()))).recipe_hash()
    assert len(a.recipe_hash()) == 64
    assert a.with_overrides({"cfg": 4.5}).recipe_hash() != a.recipe_hash()
    assert a.with_overrides({"loras.0.path": "x"}).recipe_hash() != a.recipe_hash()


@pytest.mark.parametrize(
    "prompt,placement,expected",
    [
        ("a woman in a park", "none", "a woman in a park"),
        ("a woman in a park", "start", "zk1, a woman in a park"),
        ("zk1 woman, park, zk1", "start", "zk1, woman, park"),
        (
            "a woman, in a park, raw photo, film grain",
            "start_and_middle",
            "zk1, a woman, in a park, zk1 portrait, raw photo, film grain",
        ),
        (
            "zk1, a woman, zk1 portrait, park, zk1",
            "start_and_middle",
            "zk1, a woman, zk1 portrait, park",
        ),
        ("a woman", "start_and_middle", "zk1, a woman, zk1 portrait"),
        ("zk12 is another token, zk1-x too", "start", "zk1, zk12 is another token, zk1-x too"),
    ],
)
def test_trigger_placement(prompt, placement, expected):
    assert place_trigger(prompt, "zk1", placement) == expected
    assert place_trigger(expected, "zk1", placement) == expected  # placing twice is a no-op


def test_build_prompt_uses_the_recipe_trigger():
    r = Recipe(prompt="a man, smiling", trigger="ohwx", trigger_placement="start")
    assert build_prompt(r) == "ohwx, a man, smiling"
    assert build_prompt(r.with_overrides({"trigger": ""})) == "a man, smiling"


def test_diffusers_scheduler_mapping():
    assert diffusers_scheduler("dpmpp_2m", "karras") == (
        "DPMSolverMultistepScheduler",
        {"algorithm_type": "dpmsolver++", "use_karras_sigmas": True},
    )
    assert diffusers_scheduler("euler_ancestral", "normal") == (
        "EulerAncestralDiscreteScheduler",
        {},
    )
    name, cfg = diffusers_scheduler("dpmpp_2m_sde", "exponential")
    assert cfg["algorithm_type"] == "sde-dpmsolver++" and cfg["use_exponential_sigmas"]
    assert diffusers_scheduler("euler", "sgm_uniform")[1] == {"timestep_spacing": "trailing"}
    assert diffusers_scheduler("euler", "simple", "flux")[0] == "FlowMatchEulerDiscreteScheduler"
    with pytest.raises(RecipeError, match="sampler"):
        diffusers_scheduler("dpmpp_2m", "simple", "flux")
    with pytest.raises(RecipeError, match="scheduler"):
        diffusers_scheduler("ddim", "karras")
    with pytest.raises(RecipeError, match="sampler"):
        diffusers_scheduler("res_multistep", "normal")


# -- CLI ---------------------------------------------------------------------------------
def _app() -> typer.Typer:
    app = typer.Typer()

    @app.callback()
    def root() -> None:
        """Test root."""

    app.add_typer(recipe_cli.app, name="recipe")
    return app


def test_recipe_set_show_validate(tmp_path: Path):
    runner = CliRunner()
    app = _app()
    path = tmp_path / "elena.toml"
    result = runner.invoke(
        app, ["recipe", "set", str(path), "model=big.safetensors", "cfg=4.5", "refiner.steps=10"]
    )
    assert result.exit_code == 0, result.output
    written = path.read_text()
    assert "cfg = 4.5" in written and "[refiner]" in written and "width" not in written
    result = runner.invoke(app, ["recipe", "set", str(path), "loras.0.path=zk1.safetensors"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["recipe", "show", str(path), "--json", "--set", "trigger=zk1"])
    shown = json.loads(result.stdout)
    assert shown["cfg"] == 4.5 and shown["refiner"]["steps"] == 10 and shown["width"] == 832
    assert shown["loras"] == [{"path": "zk1.safetensors", "strength": 0.7}]
    assert shown["prompt_sent"] == "zk1, zk1 portrait"  # empty prompt, default placement
    result = runner.invoke(app, ["recipe", "validate", str(path), "--json"])
    assert result.exit_code == 0 and json.loads(result.stdout)["ok"] is True
    # A wrong value is refused and nothing is written.
    before = path.read_text()
    result = runner.invoke(app, ["recipe", "set", str(path), "width=1000.5"])
    assert result.exit_code != 0 and "width" in result.output
    assert path.read_text() == before


def test_recipe_validate_reports_field_and_engine_refusal(tmp_path: Path):
    runner = CliRunner()
    bad = tmp_path / "bad.toml"
    bad.write_text('model = "x.safetensors"\nsampler = "dpmpp2m"\n')
    result = runner.invoke(_app(), ["recipe", "validate", str(bad), "--json"])
    assert result.exit_code == 1
    data = json.loads(result.stdout)
    assert data["ok"] is False and data["field"] == "sampler"
    missing = tmp_path / "missing-model.toml"
    missing.write_text(f'model = "{tmp_path / "nope.safetensors"}"\n')
    result = runner.invoke(_app(), ["recipe", "validate", str(missing), "--engine", "--json"])
    data = json.loads(result.stdout)
    assert result.exit_code == 1 and data["field"] == "model" and data["engine"] == "diffusers"


def test_unreadable_recipe_file_is_one_line(tmp_path: Path):
    binary = tmp_path / "model.toml"
    binary.write_bytes(b"\xff\xfe\x00bad")
    with pytest.raises(RecipeError, match="is not UTF-8 text"):
        Recipe.from_toml_file(binary)
    with pytest.raises(RecipeError, match="cannot be read"):
        Recipe.from_toml_file(tmp_path)  # a folder


def test_write_toml_replaces_the_file_whole(tmp_path: Path, monkeypatch):
    import os

    path = tmp_path / "r.toml"
    Recipe(cfg=4.0).write_toml(path)
    os.chmod(path, 0o640)
    Recipe(cfg=5.0).write_toml(path)
    assert Recipe.from_toml_file(path).cfg == 5.0 and (path.stat().st_mode & 0o777) == 0o640

    def killed(src, dst):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", killed)
    with pytest.raises(KeyboardInterrupt):
        Recipe(cfg=6.0).write_toml(path)
    assert Recipe.from_toml_file(path).cfg == 5.0  # the old file, whole
    assert [p.name for p in tmp_path.iterdir()] == ["r.toml"]  # no temporary left behind


def test_recipe_set_on_an_unreadable_file_is_one_line(tmp_path: Path):
    binary = tmp_path / "bad.toml"
    binary.write_bytes(b"\xff\xfe\x00bad")
    result = CliRunner().invoke(recipe_cli.app, ["set", str(binary), "cfg=5"])
    assert result.exit_code == 2 and "is not UTF-8 text" in result.output
    assert binary.read_bytes() == b"\xff\xfe\x00bad"


def test_identity_method_is_read_from_the_older_kind_field():
    old = Recipe.from_toml('[identity]\nkind = "ipadapter_faceid"\nweight = 0.6')
    assert old.identity.method == "ipadapter_faceid" and old.identity.weight == 0.6
    assert "kind" not in old.to_dict()["identity"]
    assert Recipe.from_toml(old.to_toml()) == old
    assert Recipe().with_overrides({"identity.kind": "ipadapter_faceid"}) == Recipe(
        identity=old.identity.__class__(method="ipadapter_faceid")
    )
    defaults = Recipe().identity
    assert (defaults.method, defaults.region, defaults.denoise) == ("instantid", "face", 0.4)
