"""A recipe's per-engine input table: plain TOML data, part of the recipe hash only when set,
settable with --set and sweep axes, checked for scalar values."""

from __future__ import annotations

import pytest

from likeness.recipes import Recipe, RecipeError


def test_engine_inputs_round_trip_and_keep_old_hashes():
    plain = Recipe()
    assert "engine_inputs" not in plain.to_dict()  # recipes without it keep their hash
    with_inputs = plain.with_overrides({"engine_inputs.replicate.go_fast": "true",
                                        "engine_inputs.replicate.megapixels": '"1"'})  # fmt: skip
    assert dict(with_inputs.engine_inputs["replicate"]) == {"go_fast": True, "megapixels": "1"}
    assert with_inputs.recipe_hash() != plain.recipe_hash()
    text = with_inputs.to_toml()
    assert "[engine_inputs.replicate]" in text
    back = Recipe.from_toml(text)
    assert back == with_inputs and back.recipe_hash() == with_inputs.recipe_hash()
    assert hash(back) == hash(with_inputs)  # still a frozen, hashable value


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"engine_inputs": {"replicate": {"x": [1, 2]}}}, "engine_inputs.replicate.x"),
        ({"engine_inputs": {"replicate": 3}}, "engine_inputs.replicate"),
        ({"engine_inputs": {"replicat": {"x": 1}}}, "engine_inputs.replicat"),
        ({"engine_inputs": {"fal": {"x": float("nan")}}}, "engine_inputs.fal.x"),
    ],
)
def test_engine_inputs_errors_name_the_key(data, field):
    with pytest.raises(RecipeError) as caught:
        Recipe.from_dict(data)
    assert caught.value.field == field


def test_hosted_engines_are_recipe_engines():
    assert Recipe(engine="replicate").engine == "replicate"
    assert Recipe(engine="fal").engine == "fal"
