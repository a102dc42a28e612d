"""Qwen-Image-Edit through the diffusers engine, on a tiny random-weight edit folder: the real
``QwenImageEditPipeline`` runs on CPU with the processor built without torchvision, a LoRA in
the layout ComfyUI maps for Qwen-Image changes the edit at its strength, and dropping it
gives back the plain edit."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from likeness.engines.diffusers import DiffusersEngine, EditSettings
from likeness.recipes import LoraSpec

SIZE = 64


@pytest.fixture(scope="module")
def qwen_edit(tmp_path_factory):
    """The tiny edit folder and a random rank-4 LoRA on its transformer, saved as a file in
    the layout ``likeness train`` writes (``diffusion_model.<module>.lora_A.weight``)."""
    import torch
    from peft import LoraConfig

    from likeness.engines.diffusers.tiny import save_tiny_pipeline, tiny_qwen_image_edit
    from likeness.train.kohya import save_kohya_lora

    root = tmp_path_factory.mktemp("qwen-edit")
    folder = save_tiny_pipeline("qwen_image_edit", root / "qwen-edit")
    pipe = tiny_qwen_image_edit(seed=0)
    config = LoraConfig(r=4, lora_alpha=8, init_lora_weights=False,
                        target_modules=["attn.to_q", "attn.to_k", "attn.to_v", "img_mlp.net.2"])  # fmt: skip
    torch.manual_seed(3)
    pipe.transformer.add_adapter(config)
    with torch.no_grad():  # a LoRA strong enough to show on a random model's output
        for name, param in pipe.transformer.named_parameters():
            if "lora_B" in name:
                param.mul_(20.0)
    lora = save_kohya_lora(root / "angles.safetensors", {"transformer": pipe.transformer},
                           family="qwen_image_edit", alpha=8, metadata={})  # fmt: skip
    return folder, lora


@pytest.fixture(scope="module")
def photo():
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 255, (SIZE, SIZE, 3), dtype=np.uint8))


def test_the_folder_names_the_real_processor_and_loads_without_torchvision(qwen_edit):
    import importlib.util

    folder, _ = qwen_edit
    index = json.loads((folder / "model_index.json").read_text())
    assert index["_class_name"] == "QwenImageEditPipeline"
    assert index["processor"] == ["transformers", "Qwen2VLProcessor"]
    assert importlib.util.find_spec("torchvision") is None  # what the override is for


def test_a_qwen_edit_runs_and_its_lora_changes_it_at_its_strength(qwen_edit, photo):
    folder, lora = qwen_edit
    settings = EditSettings(steps=2, seed=5, width=SIZE, height=SIZE)
    engine = DiffusersEngine(edit_model=str(folder), edit=settings)
    plain = engine.edit(photo, "turn the head to the left")
    assert plain.image().size == (SIZE, SIZE)
    assert plain.provenance["pipeline"] == "QwenImageEditPipeline"

    engine.set_edit(str(folder), EditSettings(steps=2, seed=5, width=SIZE, height=SIZE,
                                              loras=(LoraSpec(str(lora), 1.0),)))  # fmt: skip
    full = engine.edit(photo, "turn the head to the left")
    engine.set_edit(str(folder), EditSettings(steps=2, seed=5, width=SIZE, height=SIZE,
                                              loras=(LoraSpec(str(lora), 0.3),)))  # fmt: skip
    weak = engine.edit(photo, "turn the head to the left")
    engine.drop_loras()
    engine.set_edit(str(folder), settings)
    back = engine.edit(photo, "turn the head to the left")
    a, b, c, d = (np.asarray(g.image(), dtype=int) for g in (plain, full, weak, back))
    assert np.abs(a - b).mean() > 0.5, "the LoRA must change the edit"
    assert 0 < np.abs(a - c).mean() < np.abs(a - b).mean(), "a weaker strength acts less"
    assert np.array_equal(a, d), "dropping the LoRA gives the plain edit back"
    assert full.provenance["loras"][0]["strength"] == 1.0
    engine.release()
