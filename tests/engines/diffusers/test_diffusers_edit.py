"""Instruction edits through an edit model folder (a tiny InstructPix2Pix here)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from likeness.engines.base import EngineCannotHonour
from likeness.engines.diffusers import DiffusersEngine, EditSettings
from likeness.pnginfo import read_pnginfo


@pytest.fixture(scope="module")
def pix2pix(tmp_path_factory):
    from likeness.engines.diffusers.tiny import save_tiny_pipeline

    return save_tiny_pipeline("instruct_pix2pix", tmp_path_factory.mktemp("edit") / "p2p")


@pytest.fixture(scope="module")
def photo():
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8))


def test_edit_applies_the_instruction_with_provenance(pix2pix, photo):
    engine = DiffusersEngine(edit_model=str(pix2pix), edit=EditSettings(steps=3, seed=11))
    first = engine.edit(photo, "turn the head to the left")
    again = engine.edit(photo, "turn the head to the left")
    other = engine.edit(photo, "make her smile")
    a, b, c = (np.asarray(g.image(), dtype=int) for g in (first, again, other))
    assert a.shape == (64, 64, 3)
    assert np.array_equal(a, b)  # same seed, same instruction
    assert np.abs(a - c).mean() > 0.5  # the instruction matters
    prov = first.provenance
    assert prov["kind"] == "edit" and prov["instruction"] == "turn the head to the left"
    assert prov["model"]["pipeline"] == "StableDiffusionInstructPix2PixPipeline"
    assert prov["seed"] == first.seed == 11
    info = read_pnginfo(first.png)
    assert info.provenance == prov
    assert info.prompt == "turn the head to the left" and info.params["Steps"] == "3"
    engine.release()


def test_edit_without_or_with_a_wrong_model(tiny_models, photo):
    with pytest.raises(NotImplementedError, match="edit_model"):
        DiffusersEngine().edit(photo, "smile")
    with pytest.raises(EngineCannotHonour) as info:
        DiffusersEngine(edit_model=str(tiny_models.sdxl)).edit(photo, "smile")
    assert info.value.field == "edit_model" and "StableDiffusionXLPipeline" in str(info.value)


def test_one_model_is_held_at_a_time(pix2pix, photo, tiny_recipe):
    engine = DiffusersEngine(edit_model=str(pix2pix), edit=EditSettings(steps=2))
    engine.generate(tiny_recipe.with_overrides({"refiner.enabled": False}), 1)
    assert engine._pipe is not None
    engine.edit(photo, "smile")
    assert engine._pipe is None and engine._edit_pipe is not None
    engine.generate(tiny_recipe.with_overrides({"refiner.enabled": False}), 1)
    assert engine._edit_pipe is None and engine._pipe is not None
    engine.release()
