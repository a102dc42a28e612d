"""Map full-size SDXL, FLUX and Qwen-Image-Edit LoRA files with ComfyUI's own LoRA loader code,
no server.

Run with ComfyUI's python from its folder, on what `bench/comfy_lora_keys.py write OUT` wrote:

    cd ComfyUI && ../venv/bin/python /path/to/likeness/bench/comfy_keymap.py OUT

For each family: meta-device tensors with the original-layout weight shapes go through
`comfy.model_detection` (which must detect SDXL / Flux / QwenImage), the UNet / transformer and
text encoders (none for Qwen-Image-Edit, whose LoRA trains the transformer only) are built on the
meta device, `comfy.lora.model_lora_keys_unet` + `model_lora_keys_clip` give the
key map and `comfy.lora.load_lora` maps the file, logging `lora key not loaded` for any key it
cannot place. Each patch's LoRA product is also checked against the shape of the weight (or the
slice of a fused weight) it lands on. Exits 1 on any unloaded key or misfit. Imports only
ComfyUI, torch and safetensors.
"""

from __future__ import annotations

import io
import json
import logging
import sys
from pathlib import Path

FOLDER = Path(sys.argv[1]) if len(sys.argv) == 2 else None
sys.argv = sys.argv[:1] + ["--cpu"]  # ComfyUI parses the command line when imported
sys.path.insert(0, ".")

import comfy.options  # noqa: E402

comfy.options.enable_args_parsing()

import comfy.lora  # noqa: E402
import comfy.model_detection  # noqa: E402
import torch  # noqa: E402
from safetensors import safe_open  # noqa: E402

PREFIXES = {"sdxl": "model.diffusion_model.", "flux": "", "qwen_image_edit": ""}
WITHOUT_CLIP = {"qwen_image_edit"}


def check(folder: Path, family: str) -> bool:
    prefix = PREFIXES[family]
    shapes = json.loads((folder / f"{family}_shapes.json").read_text())
    state = {
        prefix + k.removeprefix(prefix): torch.empty(v, device="meta") for k, v in shapes.items()
    }
    config = comfy.model_detection.model_config_from_unet(state, prefix)
    with torch.device("meta"):
        model = config.get_model(state, prefix)
        clip = None if family in WITHOUT_CLIP else config.clip_target(state).clip()
    key_map = comfy.lora.model_lora_keys_unet(model, {})
    if clip is not None:
        key_map = comfy.lora.model_lora_keys_clip(clip, key_map)
    with safe_open(str(folder / f"{family}.safetensors"), "pt") as handle:
        names = list(handle.keys())  # a safetensors handle is not iterable
        lora = {k: handle.get_tensor(k) for k in names}
    log = io.StringIO()
    handler = logging.StreamHandler(log)
    logging.getLogger().addHandler(handler)
    try:
        patches = comfy.lora.load_lora(lora, key_map)
    finally:
        logging.getLogger().removeHandler(handler)
    missing = [line for line in log.getvalue().splitlines() if "lora key not loaded" in line]
    weights = {**model.state_dict(), **(clip.state_dict() if clip is not None else {})}
    misfits = []
    for target, adapter in patches.items():
        key, offset = (target, None) if isinstance(target, str) else (target[0], target[1])
        if key not in weights:
            misfits.append(f"{key}: not a weight of the model")
            continue
        shape = list(weights[key].shape)
        if offset is not None:
            shape[offset[0]] = offset[2]
        up, down = adapter.weights[0], adapter.weights[1]
        if up.shape[0] != shape[0] or down.flatten(1).shape[1] != int(
            torch.tensor(shape[1:]).prod()
        ):
            misfits.append(f"{key}: LoRA {tuple(up.shape)} x {tuple(down.shape)} on {shape}")
    for line in (missing + misfits)[:10]:
        print(" ", line)
    print(f"{family}: detected as {type(config).__name__}; {len(lora)} keys in the file, "
          f"{len(patches)} weights patched, {len(missing)} not loaded, {len(misfits)} misfits")  # fmt: skip
    return not missing and not misfits


def main() -> int:
    if FOLDER is None:
        print("usage: comfy_keymap.py OUT (the folder `comfy_lora_keys.py write OUT` wrote)")
        return 2
    results = [check(FOLDER, family) for family in PREFIXES]
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(main())
