"""LoRAs of the edit model (a community angle LoRA, say) load into the edit pipeline at their
strengths, change its output, and are named with their sha256 in the edit's provenance."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from likeness.engines.base import EngineCannotHonour, sha256_file
from likeness.engines.diffusers import DiffusersEngine, EditSettings
from likeness.pnginfo import read_pnginfo
from likeness.recipes import LoraSpec


@pytest.fixture(scope="module")
def pix2pix_and_lora(tmp_path_factory):
    import torch
    from diffusers import StableDiffusionInstructPix2PixPipeline
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    from likeness.engines.diffusers.tiny import save_tiny_pipeline, tiny_instruct_pix2pix

    root = tmp_path_factory.mktemp("edit-lora")
    model = save_tiny_pipeline("instruct_pix2pix", root / "p2p")
    pipe = tiny_instruct_pix2pix(seed=0)
    config = LoraConfig(
        r=4, lora_alpha=4, init_lora_weights=False, target_modules=["to_q", "to_k", "to_v"]
    )
    torch.manual_seed(5)
    pipe.unet.add_adapter(config)
    StableDiffusionInstructPix2PixPipeline.save_lora_weights(
        root / "angles",
        unet_lora_layers=get_peft_model_state_dict(pipe.unet),
        unet_lora_adapter_metadata=config.to_dict(),
    )
    return model, root / "angles" / "pytorch_lora_weights.safetensors"


@pytest.fixture(scope="module")
def photo():
    rng = np.random.default_rng(1)
    return Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8))


@pytest.mark.slow
def test_edit_loras_change_the_edit_and_are_in_its_provenance(pix2pix_and_lora, photo, tmp_path):
    model, lora = pix2pix_and_lora
    plain = DiffusersEngine(edit_model=str(model), edit=EditSettings(steps=2, seed=3))
    with_lora = DiffusersEngine(
        edit_model=str(model),
        edit=EditSettings(steps=2, seed=3, loras=(LoraSpec(str(lora), 0.9),)),
    )
    a = plain.edit(photo, "turn the head to the left")
    b = with_lora.edit(photo, "turn the head to the left")
    again = with_lora.edit(photo, "turn the head to the left")
    pa, pb, pc = (np.asarray(g.image(), dtype=int) for g in (a, b, again))
    assert np.abs(pa - pb).mean() > 0.5  # the LoRA acts
    assert np.array_equal(pb, pc)  # loaded once, same result
    assert a.provenance["loras"] == []
    assert b.provenance["loras"] == [
        {"name": lora.name, "path": str(lora), "strength": 0.9, "sha256": sha256_file(lora)}
    ]
    params = read_pnginfo(b.png).params
    assert params["Lora weights"] == "pytorch_lora_weights: 0.9"
    assert params["Lora hashes"] == f"pytorch_lora_weights: {sha256_file(lora)[:12]}"

    pickle = tmp_path / "angles.bin"
    pickle.write_bytes(b"not really")
    refusing = DiffusersEngine(
        edit_model=str(model), edit=EditSettings(steps=2, loras=(LoraSpec(str(pickle), 1.0),))
    )
    with pytest.raises(EngineCannotHonour, match="pickle"):
        refusing.edit(photo, "smile")
    for engine in (plain, with_lora):
        engine.release()
