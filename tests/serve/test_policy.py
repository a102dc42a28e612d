"""What a user's recipe may name: shared models and the user's own folder; LoRAs and
reference photos from the user's own folder only. Another user's LoRA, a path outside the
allowed folders, a symlink out of them, `..`, `~` and URLs are refused, naming the field,
and the refusal reads the same whether the file exists or not."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from likeness.recipes import LoraSpec, Recipe
from likeness.serve.policy import PathPolicy, RecipeRefused

from .builder import fill_workspace, lora_file


@pytest.fixture
def folders(tmp_path: Path) -> dict[str, Path]:
    shared = tmp_path / "shared"
    (shared / "sdxl").mkdir(parents=True)
    (shared / "sdxl" / "big.safetensors").write_bytes(b"x")
    (shared / "tiny").mkdir()
    (shared / "tiny" / "model_index.json").write_text("{}")
    ana, ben = tmp_path / "users" / "ana", tmp_path / "users" / "ben"
    for user in (ana, ben):
        (user / "loras").mkdir(parents=True)
        lora_file(user / "loras" / "mine.safetensors", seed=len(str(user)))
        (user / "refs").mkdir()
        (user / "refs" / "face.png").write_bytes(b"png")
    (tmp_path / "outside.safetensors").write_bytes(b"x")
    return {"shared": shared, "ana": ana, "ben": ben, "top": tmp_path}


def refused(policy: PathPolicy, recipe: Recipe, field: str) -> str:
    with pytest.raises(RecipeRefused) as caught:
        policy.check_recipe(recipe)
    assert caught.value.field == field, caught.value
    return caught.value.reason


def test_shared_models_and_own_loras_resolve(folders):
    policy = PathPolicy(folders["ana"], (folders["shared"],))
    recipe = Recipe(
        model="sdxl/big.safetensors",
        loras=(LoraSpec("loras/mine.safetensors", 0.7),),
    )
    checked = policy.check_recipe(recipe)
    assert checked.model == str(folders["shared"] / "sdxl" / "big.safetensors")
    assert checked.loras[0].path == str(folders["ana"] / "loras" / "mine.safetensors")
    assert checked.loras[0].strength == 0.7
    assert policy.check_recipe(Recipe(model="tiny")).model == str(folders["shared"] / "tiny")
    absolute = str(folders["ana"] / "loras" / "mine.safetensors")
    assert policy.check_recipe(Recipe(model="tiny", loras=(LoraSpec(absolute),))).loras[0].path


def test_another_users_lora_and_paths_outside_are_refused_alike(folders):
    policy = PathPolicy(folders["ana"], (folders["shared"],))
    bens = str(folders["ben"] / "loras" / "mine.safetensors")
    nothing = str(folders["ben"] / "loras" / "no-such.safetensors")
    reasons = {
        refused(policy, Recipe(model="tiny", loras=(LoraSpec(path),)), "loras.0.path")
        for path in (
            bens,
            nothing,
            "../ben/loras/mine.safetensors",
            "loras/../../ben/loras/mine.safetensors",
            str(folders["top"] / "outside.safetensors"),
            "/etc/passwd",
            "~/mine.safetensors",
            "https://example.com/mine.safetensors",
            "sdxl/big.safetensors",  # shared folders hold models, never LoRAs
        )
    }
    # One reason for all: it never tells whether the file exists elsewhere.
    assert len(reasons) == 1 and "your own folder" in reasons.pop()
    for model in (
        "/etc/passwd",
        "../ben/loras/mine.safetensors",
        str(folders["top"] / "outside.safetensors"),
    ):
        refused(policy, Recipe(model=model), "model")


def test_a_symlink_out_of_the_users_folder_is_refused(folders):
    link = folders["ana"] / "loras" / "borrowed.safetensors"
    os.symlink(folders["ben"] / "loras" / "mine.safetensors", link)
    policy = PathPolicy(folders["ana"], (folders["shared"],))
    refused(policy, Recipe(model="tiny", loras=(LoraSpec(str(link)),)), "loras.0.path")
    refused(
        policy,
        Recipe(model="tiny", loras=(LoraSpec("loras/borrowed.safetensors"),)),
        "loras.0.path",
    )
    # A symlinked shared folder is followed to where it points, and allowed there.
    alias = folders["top"] / "alias"
    os.symlink(folders["shared"], alias)
    via = PathPolicy(folders["ana"], (alias,))
    assert via.check_recipe(Recipe(model="tiny")).model == str(folders["shared"] / "tiny")


def test_pass_files_references_and_engine_inputs(folders):
    policy = PathPolicy(folders["ana"], (folders["shared"],))
    ident = {"enabled": True, "references": ["refs/face.png"], "adapter": "sdxl/big.safetensors"}
    checked = policy.check_recipe(Recipe.from_dict({"model": "tiny", "identity": ident}))
    assert checked.identity.references == (str(folders["ana"] / "refs" / "face.png"),)
    assert checked.identity.adapter == str(folders["shared"] / "sdxl" / "big.safetensors")
    bens_face = str(folders["ben"] / "refs" / "face.png")
    refused(
        policy,
        Recipe.from_dict({"model": "tiny", "identity": {**ident, "references": [bens_face]}}),
        "identity.references.0",
    )
    refused(
        policy,
        Recipe.from_dict({"model": "tiny", "upscale": {"enabled": True, "model": "/etc/hosts"}}),
        "upscale.model",
    )
    refused(
        policy,
        Recipe.from_dict(
            {"model": "tiny", "engine_inputs": {"replicate": {"lora_weights": "https://x.test/l"}}}
        ),
        "engine_inputs.replicate.lora_weights",
    )


def test_engines_comfyui_and_hosted(folders):
    policy = PathPolicy(folders["ana"], (folders["shared"],))
    # ComfyUI: the server holds the files; names stay names, and must be shared ones.
    comfy = policy.check_recipe(Recipe(engine="comfyui", model="sdxl/big.safetensors"))
    assert comfy.model == "sdxl/big.safetensors"
    refused(
        policy,
        Recipe(
            engine="comfyui",
            model="sdxl/big.safetensors",
            loras=(LoraSpec("loras/mine.safetensors"),),
        ),
        "loras",
    )
    (folders["ana"] / "own.safetensors").write_bytes(b"x")
    refused(policy, Recipe(engine="comfyui", model="own.safetensors"), "model")
    # Hosted: the provider's model by name; LoRAs only as the user's own files.
    hosted = policy.check_recipe(
        Recipe(engine="replicate", model="black-forest-labs/flux-dev-lora", family="flux",
               loras=(LoraSpec("loras/mine.safetensors"),))
    )  # fmt: skip
    assert hosted.loras[0].path == str(folders["ana"] / "loras" / "mine.safetensors")
    for remote in ("https://huggingface.co/x/y", "someone/their-lora"):
        refused(
            policy,
            Recipe(
                engine="fal", model="fal-ai/flux-lora", family="flux", loras=(LoraSpec(remote),)
            ),
            "loras.0.path",
        )
    refused(policy, Recipe(engine="fal", model="/etc/passwd", family="flux"), "model")


def test_the_api_refuses_a_recipe_naming_another_users_lora(make_server_folder):
    server = make_server_folder(("ana", "ben"))
    held = {
        name: fill_workspace(server.root, name, seed) for seed, name in enumerate(("ana", "ben"), 1)
    }
    app = server.app(workers=False)
    client, headers = server.client(app, "ana")
    bens_lora = held["ben"].lora_paths[0]
    assert Path(bens_lora).is_file()
    answers = []
    for path in (bens_lora, "/etc/passwd", "../ben/loras/ben-upload.safetensors"):
        answer = client.post(
            "/api/studio/generate",
            json={"n": 1, "recipe": {"model": "tiny-sdxl", "loras": [{"path": path}]}},
            headers=headers,
        )
        assert answer.status_code == 422, answer.text
        answers.append(answer.json()["error"].replace(repr(path), "<path>"))
    assert len(set(answers)) == 1 and answers[0].startswith("loras.0.path:")
    # By hash, ben's LoRA is not found at all; ana's own is queued.
    by_hash = client.post(
        "/api/studio/generate",
        json={"n": 1, "model": "tiny-sdxl", "loras": [{"sha256": held["ben"].loras[0]}]},
        headers=headers,
    )
    assert by_hash.status_code == 404
    own = client.post(
        "/api/studio/generate",
        json={"n": 1, "model": "tiny-sdxl", "loras": [{"sha256": held["ana"].loras[0]}]},
        headers=headers,
    )
    assert own.status_code == 202, own.text
    params = own.json()["job"]["params"]["recipe"]
    assert params["loras"][0]["path"] == held["ana"].lora_paths[0]
    assert params["model"] == str(server.root / "shared" / "tiny-sdxl")
    outside = client.post(
        "/api/studio/generate",
        json={"n": 1, "model": str(server.root / "server.db")},
        headers=headers,
    )
    assert outside.status_code == 422 and outside.json()["error"].startswith("model:")
