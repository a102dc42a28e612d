"""Does a LoRA written by `likeness.train.kohya` load in a real ComfyUI, every key of it?

`server`: builds the full-size SD1.5 UNet and CLIP-L text encoder from the configs shipped in
`likeness/engines/diffusers/configs/sd15` (random weights, offline), injects peft LoRA layers in
every attention, feed-forward, projection, ResNet, sampler and embedding layer, and in the text
encoder's attention and MLP, writes them with `save_kohya_lora`, then loads the file through a
LoraLoader (1.0 / 1.0) in a txt2img graph on the server and reads the server's log from the
moment of submission. Exits 1 on any `lora key not loaded` line, a failed prompt or no image.

    python bench/comfy_lora_keys.py server URL CHECKPOINT --loras-dir DIR --server-log LOG

URL is the ComfyUI server, CHECKPOINT a full-size SD1.5 checkpoint it has (random weights
suffice), DIR its models/loras folder, LOG the file its output goes to.

`write OUT`: full-size SDXL (with both text encoders), FLUX.1-dev (with CLIP-L) and
Qwen-Image-Edit (transformer only) LoRAs for the same check without a server: the models are
built on the meta device and only their LoRA layers are materialised, so no base weights are
needed. OUT also gets the original-layout weight shapes of the models, from which `bench/comfy_keymap.py` (run with ComfyUI's own
python) builds ComfyUI's models and maps the keys with ComfyUI's LoRA loader code.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

UNET_TARGETS = ["to_q", "to_k", "to_v", "to_out.0", "ff.net.0.proj", "ff.net.2", "proj_in",
                "proj_out", "conv1", "conv2", "time_emb_proj", "conv_shortcut", "conv",
                "conv_in", "conv_out", "linear_1", "linear_2"]  # fmt: skip
TEXT_TARGETS = ["q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2"]
FLUX_TARGETS = ["to_q", "to_k", "to_v", "to_out.0", "add_q_proj", "add_k_proj", "add_v_proj",
                "to_add_out", "ff.net.0.proj", "ff.net.2", "ff_context.net.0.proj",
                "ff_context.net.2", "norm1.linear", "norm1_context.linear", "proj_mlp",
                "proj_out", "norm.linear", "x_embedder", "context_embedder", "linear_1",
                "linear_2", "norm_out.linear"]  # fmt: skip
NOT_LOADED = "lora key not loaded"


def write_lora(path: Path, rank: int, alpha: float) -> int:
    """The full-size SD1.5 LoRA; returns its number of tensors."""
    import torch
    from diffusers import UNet2DConditionModel
    from peft import LoraConfig
    from transformers import CLIPTextConfig, CLIPTextModel

    from likeness.engines.diffusers.loading import config_folder
    from likeness.train.kohya import kohya_metadata, save_kohya_lora

    folder = config_folder("sd15")
    torch.manual_seed(0)
    unet = UNet2DConditionModel.from_config(
        UNet2DConditionModel.load_config(str(folder), subfolder="unet")
    )
    text = CLIPTextModel(CLIPTextConfig.from_pretrained(str(folder), subfolder="text_encoder"))
    common = dict(r=rank, lora_alpha=alpha, init_lora_weights=False)
    unet.add_adapter(LoraConfig(target_modules=UNET_TARGETS, **common))
    text.add_adapter(LoraConfig(target_modules=TEXT_TARGETS, **common))
    meta = kohya_metadata(base_model="sd15-random", base_model_sha256=None, family="sd15",
                          rank=rank, alpha=alpha, steps=0, resolution=512, trigger="zxqchar",
                          dataset="check@v1", dataset_sha256="0" * 64)  # fmt: skip
    save_kohya_lora(path, {"unet": unet, "text_encoder": text}, family="sd15", alpha=alpha,
                    metadata=meta, dtype=torch.float16)  # fmt: skip
    from likeness.engines.diffusers.loras import safetensors_keys

    return len(safetensors_keys(path))


def graph(checkpoint: str, lora: str) -> dict:
    def node(kind: str, **inputs: object) -> dict:
        return {"class_type": kind, "inputs": inputs}

    return {
        "ckpt": node("CheckpointLoaderSimple", ckpt_name=checkpoint),
        "lora": node(
            "LoraLoader",
            model=["ckpt", 0],
            clip=["ckpt", 1],
            lora_name=lora,
            strength_model=1.0,
            strength_clip=1.0,
        ),  # fmt: skip
        "pos": node("CLIPTextEncode", text="photo of zxqchar", clip=["lora", 1]),
        "neg": node("CLIPTextEncode", text="blurry", clip=["lora", 1]),
        "latent": node("EmptyLatentImage", width=64, height=64, batch_size=1),
        "sample": node(
            "KSampler",
            model=["lora", 0],
            seed=1,
            steps=2,
            cfg=7.0,
            sampler_name="euler",
            scheduler="normal",
            positive=["pos", 0],
            negative=["neg", 0],
            latent_image=["latent", 0],
            denoise=1.0,
        ),  # fmt: skip
        "decode": node("VAEDecode", samples=["sample", 0], vae=["ckpt", 2]),
        "save": node("SaveImage", images=["decode", 0], filename_prefix="lora_keys"),
    }


def check(url: str, checkpoint: str, lora: Path, loras_dir: Path, log: Path) -> int:
    """Load ``lora`` on the server; returns the number of `lora key not loaded` lines (or -1
    when the prompt failed or made no image)."""
    from likeness.engines.comfyui import client

    name = f"likeness-check-{uuid.uuid4().hex[:8]}.safetensors"  # a new name: no cache hit
    shutil.copyfile(lora, loras_dir / name)
    start = log.stat().st_size if log.exists() else 0
    try:
        with client.connect(url) as http:
            prompt_id = str(uuid.uuid4())
            client.post_prompt(http, graph(checkpoint, name), client_id="likeness-check",
                               prompt_id=prompt_id)  # fmt: skip
            entry = None
            for _ in range(3600):
                entry = client.history(http, prompt_id)
                if entry is not None and (entry.completed or entry.status in ("success", "error")):
                    break
                time.sleep(0.5)
    finally:
        (loras_dir / name).unlink(missing_ok=True)
    time.sleep(1.0)  # the server flushes its log per record
    with open(log, "rb") as handle:
        handle.seek(start)
        lines = handle.read().decode(errors="replace").splitlines()
    missing = [line for line in lines if NOT_LOADED in line]
    for line in missing[:20]:
        print(line)
    if entry is None or entry.status != "success" or not any(entry.outputs.values()):
        print(f"the prompt did not finish with an image ({entry.status if entry else 'no entry'})")
        return -1
    return len(missing)


def write_full_size(out: Path, rank: int, alpha: float) -> None:
    """``sdxl.safetensors``, ``flux.safetensors`` and their base models' original-layout weight
    shapes (``*_shapes.json``) in ``out``."""
    import json

    import torch
    from diffusers import FluxTransformer2DModel, QwenImageTransformer2DModel, UNet2DConditionModel
    from peft import LoraConfig
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    from likeness.engines.diffusers.checkpoint import flux_to_original, unet_to_original
    from likeness.engines.diffusers.loading import config_folder
    from likeness.train.kohya import save_kohya_lora
    from likeness.train.recipe import QWEN_EDIT_TARGETS

    sdxl, sd15 = str(config_folder("sdxl")), str(config_folder("sd15"))
    with torch.device("meta"):
        unet = UNet2DConditionModel.from_config(
            UNet2DConditionModel.load_config(sdxl, subfolder="unet")
        )
        te1 = CLIPTextModel(CLIPTextConfig.from_pretrained(sdxl, subfolder="text_encoder"))
        te2 = CLIPTextModelWithProjection(
            CLIPTextConfig.from_pretrained(sdxl, subfolder="text_encoder_2")
        )
        flux = FluxTransformer2DModel(guidance_embeds=True)  # FLUX.1-dev: 19 + 38 blocks
        clip_l = CLIPTextModel(CLIPTextConfig.from_pretrained(sd15, subfolder="text_encoder"))
        qwen = QwenImageTransformer2DModel()  # Qwen-Image(-Edit): 60 blocks, 3072 wide
    common = dict(r=rank, lora_alpha=alpha, init_lora_weights=False)
    for model, targets in ((unet, UNET_TARGETS), (te1, TEXT_TARGETS), (te2, TEXT_TARGETS),
                           (flux, FLUX_TARGETS), (clip_l, TEXT_TARGETS),
                           (qwen, list(QWEN_EDIT_TARGETS))):  # fmt: skip
        model.add_adapter(LoraConfig(target_modules=targets, **common))
        _materialise_lora(model)
    out.mkdir(parents=True, exist_ok=True)
    save_kohya_lora(out / "sdxl.safetensors",
                    {"unet": unet, "text_encoder": te1, "text_encoder_2": te2},
                    family="sdxl", alpha=alpha, metadata={})  # fmt: skip
    save_kohya_lora(out / "flux.safetensors", {"transformer": flux, "text_encoder": clip_l},
                    family="flux", alpha=alpha, metadata={})  # fmt: skip
    save_kohya_lora(out / "qwen_image_edit.safetensors", {"transformer": qwen},
                    family="qwen_image_edit", alpha=alpha, metadata={})  # fmt: skip
    shapes = {
        "sdxl": unet_to_original(_base_state(unet), unet.config),
        "flux": flux_to_original(_base_state(flux)),
        "qwen_image_edit": _base_state(qwen),  # ComfyUI names Qwen-Image's modules as diffusers
    }
    for name, state in shapes.items():
        (out / f"{name}_shapes.json").write_text(
            json.dumps({k: list(v.shape) for k, v in state.items()})
        )


def _materialise_lora(model) -> None:
    import torch
    from peft.tuners.lora import LoraLayer

    torch.manual_seed(0)
    for module in model.modules():
        if isinstance(module, LoraLayer):
            for part in (module.lora_A, module.lora_B):
                part.to_empty(device="cpu")
                for param in part.parameters():
                    torch.nn.init.normal_(param, std=0.02)


def _base_state(model) -> dict:
    """The model's own weights (the LoRA layers' base weights under their plain names)."""
    return {
        k.replace(".base_layer.", "."): v
        for k, v in model.state_dict().items()
        if ".lora_" not in k
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    server = commands.add_parser("server", help="the full-size SD1.5 check on a server")
    server.add_argument("url")
    server.add_argument("checkpoint")
    server.add_argument("--loras-dir", type=Path, required=True)
    server.add_argument("--server-log", type=Path, required=True)
    server.add_argument("--keep", type=Path, help="also keep the written LoRA here")
    write = commands.add_parser("write", help="full-size SDXL and FLUX LoRAs and shapes")
    write.add_argument("out", type=Path)
    for sub in (server, write):
        sub.add_argument("--rank", type=int, default=4)
        sub.add_argument("--alpha", type=float, default=2.0)
    args = parser.parse_args()
    if args.command == "write":
        write_full_size(args.out, args.rank, args.alpha)
        print(f"wrote {', '.join(sorted(p.name for p in args.out.iterdir()))} to {args.out}")
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        lora = Path(tmp) / "sd15-check.safetensors"
        t0 = time.perf_counter()
        keys = write_lora(lora, args.rank, args.alpha)
        print(f"wrote {keys} tensors ({keys // 3} modules) in {time.perf_counter() - t0:.0f} s")
        if args.keep:
            shutil.copyfile(lora, args.keep)
        missing = check(args.url, args.checkpoint, lora, args.loras_dir, args.server_log)
    if missing < 0:
        return 1
    print(f"ComfyUI: {keys} keys in the file, {missing} not loaded")
    return 0 if missing == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
