"""`likeness models convert` and `likeness recipe validate` on identity recipes."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from likeness.cli.main import app

runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, list(args), catch_exceptions=False)


def test_models_convert_writes_safetensors_with_the_same_tensors(tmp_path):
    torch = pytest.importorskip("torch")
    from safetensors.torch import load_file

    nested = {
        "image_proj": {"proj.0.weight": torch.randn(8, 4), "norm.weight": torch.ones(8)},
        "ip_adapter": {"1.to_k_ip.weight": torch.randn(8, 8)},
    }
    torch.save(nested, tmp_path / "ip-adapter.bin")
    result = invoke("models", "convert", str(tmp_path / "ip-adapter.bin"), "--json")
    assert result.exit_code == 0, result.output + result.stderr
    data = json.loads(result.stdout)
    assert data["output"] == str(tmp_path / "ip-adapter.safetensors") and data["tensors"] == 3
    back = load_file(data["output"])
    assert torch.equal(back["image_proj.proj.0.weight"], nested["image_proj"]["proj.0.weight"])
    assert torch.equal(
        back["ip_adapter.1.to_k_ip.weight"], nested["ip_adapter"]["1.to_k_ip.weight"]
    )
    other = tmp_path / "out" / "faceid.safetensors"
    result = invoke("models", "convert", str(tmp_path / "ip-adapter.bin"), "-o", str(other))
    assert result.exit_code == 0 and other.is_file()
    result = invoke("models", "convert", str(tmp_path / "missing.bin"))
    assert result.exit_code == 2 and "does not exist" in result.stderr


def test_recipe_validate_names_each_missing_identity_file(tmp_path):
    recipe = tmp_path / "id.toml"
    recipe.write_text(
        '[identity]\nenabled = true\nkind = "instantid"\n'
        f'references = ["{tmp_path / "me.jpg"}"]\nadapter = "{tmp_path / "ip-adapter.bin"}"\n'
        f'insightface = "{tmp_path / "antelopev2"}"\n'
    )
    result = invoke("recipe", "validate", str(recipe), "--json")
    assert result.exit_code == 1
    data = json.loads(result.stdout)
    assert not data["ok"] and data["field"] == "identity.references"
    assert [line.split(":")[0] for line in data["missing"]] == [
        "identity.references",
        "identity.adapter",
        "identity.insightface",
        "identity.controlnet",
    ]
    text = invoke("recipe", "validate", str(recipe))
    assert text.exit_code == 1 and text.stdout.count("id.toml:") == 4
    assert "InstantID's ControlNet" in text.stdout
