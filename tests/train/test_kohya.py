"""kohya LoRA files written from peft layers: they reload in the diffusers engine with the output
of the in-memory model, keep the trained alpha, and their names are the model's own modules in
the layout ComfyUI maps (checked against single-file checkpoints and the FLUX original layout).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

torch = pytest.importorskip("torch")

from peft import LoraConfig  # noqa: E402
from peft.utils import get_peft_model_state_dict, set_peft_model_state_dict  # noqa: E402

from likeness.engines.diffusers.checkpoint import (  # noqa: E402
    flux_to_original,
    pipeline_to_original,
)
from likeness.engines.diffusers.loras import lora_format, safetensors_keys  # noqa: E402
from likeness.engines.diffusers.tiny import BUILDERS, TINY_SIZE  # noqa: E402
from likeness.train.kohya import (  # noqa: E402
    kohya_metadata,
    read_kohya_lora,
    save_kohya_lora,
)

RANK, ALPHA = 4, 6.0  # alpha != rank: the file must keep 6, not write 4
UNET_TARGETS = ["to_q", "to_k", "to_v", "to_out.0", "proj_in", "proj_out", "ff.net.0.proj",
                "ff.net.2", "conv1", "conv2", "time_emb_proj", "conv_shortcut"]  # fmt: skip
CLIP_TARGETS = ["q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2"]
FLUX_TARGETS = ["to_q", "to_k", "to_v", "to_out.0", "add_q_proj", "add_k_proj", "add_v_proj",
                "to_add_out", "ff.net.0.proj", "ff.net.2", "ff_context.net.0.proj",
                "ff_context.net.2", "norm1.linear", "norm1_context.linear", "proj_mlp",
                "proj_out", "norm.linear"]  # fmt: skip
COMPONENTS = {
    "sdxl": ("unet", "text_encoder", "text_encoder_2"),
    "sd15": ("unet", "text_encoder"),
    "flux": ("transformer", "text_encoder"),
}


@dataclass
class Trained:
    family: str
    folder: Path  # the base model, a diffusers folder
    pipe: Any  # the same model with peft LoRA layers (random, non-zero)
    lora: Path  # the file written from them


def inject(pipe: Any, family: str, seed: int = 5) -> None:
    torch.manual_seed(seed)
    main, *encoders = COMPONENTS[family]
    targets = FLUX_TARGETS if family == "flux" else UNET_TARGETS
    config = dict(r=RANK, lora_alpha=ALPHA, init_lora_weights=False)
    getattr(pipe, main).add_adapter(LoraConfig(target_modules=targets, **config))
    for name in encoders:
        getattr(pipe, name).add_adapter(LoraConfig(target_modules=CLIP_TARGETS, **config))


def metadata(family: str) -> dict[str, str]:
    return kohya_metadata(base_model="/models/tiny.safetensors", base_model_sha256="a" * 64,
                          family=family, rank=RANK, alpha=ALPHA, steps=12,
                          resolution=(TINY_SIZE, TINY_SIZE), trigger="zk1q",
                          dataset="mara@v2", dataset_sha256="b" * 64,
                          learning_rate=5e-5, output_name="mara-v2")  # fmt: skip


@pytest.fixture(scope="module", params=["sdxl", "sd15", "flux"])
def trained(request, tmp_path_factory) -> Trained:
    family = request.param
    root = tmp_path_factory.mktemp(family)
    pipe = BUILDERS[family](0)
    pipe.save_pretrained(root / "base")
    inject(pipe, family)
    components = {name: getattr(pipe, name) for name in COMPONENTS[family]}
    lora = save_kohya_lora(root / "lora.safetensors", components, family=family, alpha=ALPHA,
                           metadata=metadata(family))  # fmt: skip
    return Trained(family, root / "base", pipe, lora)


def recipe_for(trained: Trained, loras=()):
    from likeness.recipes import Recipe

    extra = {"sampler": "euler", "scheduler": "simple", "negative": ""}
    fields = extra if trained.family == "flux" else {"negative": "blurry"}
    recipe = Recipe(model=str(trained.folder), family=trained.family, prompt="a photo of zk1q",
                    width=TINY_SIZE, height=TINY_SIZE, steps=2, seed=11)  # fmt: skip
    return recipe.with_overrides(
        {
            **fields,
            "refiner.enabled": False,
            "loras": [{"path": str(p), "strength": 1.0} for p in loras],
        }
    )


def render(engine, recipe) -> np.ndarray:
    return np.asarray(engine.generate(recipe, 1)[0].image(), dtype=np.float64)


@pytest.mark.slow
def test_file_reloads_in_the_engine_with_the_in_memory_output(trained):
    """The engine with the file = the engine's own pipeline with the in-memory peft layers
    copied in (same seed, prompt, scheduler), to one 8-bit level; both differ from the base."""
    from likeness.engines.diffusers import DiffusersEngine

    with_file, in_memory = DiffusersEngine(), DiffusersEngine()
    try:
        loaded = render(with_file, recipe_for(trained, [trained.lora]))
        base_recipe = recipe_for(trained)
        base = render(in_memory, base_recipe)
        pipe = in_memory.pipeline(base_recipe)
        inject(pipe, trained.family, seed=99)  # the same layers, other values...
        for name in COMPONENTS[trained.family]:  # ...then the trained values copied in
            state = get_peft_model_state_dict(getattr(trained.pipe, name))
            set_peft_model_state_dict(getattr(pipe, name), state)
        peft = render(in_memory, base_recipe)
    finally:
        with_file.release()
        in_memory.release()
    assert np.abs(loaded - base).mean() > 1.0  # the LoRA changes the image
    assert np.abs(loaded - peft).max() <= 1.0  # and it is the trained LoRA, alpha included


def test_model_outputs_match_to_1e5(trained):
    """One denoiser call with the file loaded by diffusers vs the in-memory peft model."""
    from likeness.engines.diffusers.loading import quiet_loading

    fresh = BUILDERS[trained.family](0)
    with quiet_loading():
        fresh.load_lora_weights(str(trained.lora), adapter_name="file")
    name = COMPONENTS[trained.family][0]
    inputs = denoiser_inputs(trained.family, getattr(fresh, name))
    with torch.no_grad():
        expected = getattr(trained.pipe, name)(**inputs).sample
        got = getattr(fresh, name)(**inputs).sample
        getattr(fresh, name).disable_adapters()
        base = getattr(fresh, name)(**inputs).sample
    assert torch.allclose(got, expected, atol=1e-5, rtol=1e-5)
    assert (got - base).abs().mean() > 1e-3


def denoiser_inputs(family: str, model: Any) -> dict[str, Any]:
    g = torch.Generator().manual_seed(3)
    if family == "flux":
        tokens, width = 16, model.config.joint_attention_dim
        ids = torch.zeros(tokens, 3)
        ids[:, 1] = torch.arange(tokens) // 4
        ids[:, 2] = torch.arange(tokens) % 4
        return {
            "hidden_states": torch.randn(1, tokens, model.config.in_channels, generator=g),
            "encoder_hidden_states": torch.randn(1, 8, width, generator=g),
            "pooled_projections": torch.randn(1, model.config.pooled_projection_dim, generator=g),
            "timestep": torch.tensor([0.5]),
            "img_ids": ids,
            "txt_ids": torch.zeros(8, 3),
            "return_dict": True,
        }
    sample = torch.randn(1, 4, 8, 8, generator=g)
    context = torch.randn(1, 7, model.config.cross_attention_dim, generator=g)
    extra = {}
    if model.config.addition_embed_type == "text_time":
        pooled = model.config.projection_class_embeddings_input_dim - 6 * 8
        extra = {"added_cond_kwargs": {"text_embeds": torch.randn(1, pooled, generator=g),
                                       "time_ids": torch.tensor([[64.0, 64, 0, 0, 64, 64]])}}  # fmt: skip
    return {"sample": sample, "timestep": torch.tensor([10]), "encoder_hidden_states": context,
            **extra}  # fmt: skip


def test_alpha_rank_and_metadata_round_trip(trained):
    tensors, meta = read_kohya_lora(trained.lora)
    alphas = {k: float(v) for k, v in tensors.items() if k.endswith(".alpha")}
    assert alphas and set(alphas.values()) == {ALPHA}
    downs = [v for k, v in tensors.items() if k.endswith((".lora_down.weight", ".lora_A.weight"))]
    assert len(downs) == len(alphas) and {int(d.shape[0]) for d in downs} == {RANK}
    assert all(float(v.abs().sum()) > 0 for v in tensors.values())  # every weight trained
    assert meta["ss_network_module"] == "networks.lora"
    assert meta["ss_network_dim"] == str(RANK) and float(meta["ss_network_alpha"]) == ALPHA
    assert meta["ss_base_model_version"] == {"sdxl": "sdxl_base_v1-0", "sd15": "sd_v1",
                                             "flux": "flux1"}[trained.family]  # fmt: skip
    assert meta["ss_steps"] == "12" and meta["ss_resolution"] == "(64, 64)"
    assert meta["ss_sd_model_name"] == "tiny.safetensors"
    assert meta["ss_new_sd_model_hash"] == "a" * 64 and meta["ss_output_name"] == "mara-v2"
    assert meta["ss_learning_rate"] == "5e-05" and meta["modelspec.trigger_phrase"] == "zk1q"
    assert meta["likeness_dataset"] == "mara@v2" and meta["likeness_dataset_sha256"] == "b" * 64
    assert float(meta["ss_training_started_at"]) > 1.7e9
    expected = "diffusers" if trained.family == "flux" else "kohya"
    assert lora_format(safetensors_keys(trained.lora)).startswith(expected)


def lora_modules(path: Path) -> dict[str, dict[str, Any]]:
    """{module name in the file: {"down", "up", "alpha"}}."""
    tensors, _ = read_kohya_lora(path)
    modules: dict[str, dict[str, Any]] = {}
    for key, value in tensors.items():
        base, _, kind = key.partition(".lora_")
        if kind:
            modules.setdefault(base, {})["down" if kind[0] in "dA" else "up"] = value
        else:
            modules.setdefault(key.removesuffix(".alpha"), {})["alpha"] = value
    return modules


@pytest.mark.parametrize("trained", ["sdxl", "sd15"], indirect=True)
def test_sdxl_and_sd15_names_are_weights_of_the_single_file_checkpoint(trained):
    """ComfyUI's model_lora_keys_unet maps ``lora_unet_`` + an original-layout weight path with
    '.' -> '_' (SD1.5 files name the diffusers path, which its unet_to_diffusers maps to the
    same weights). Every name must be such a weight of this model's single-file checkpoint,
    and that weight must be the one the LoRA was trained on (same values)."""
    base = BUILDERS[trained.family](0)
    original = pipeline_to_original(base)  # what checkpoint.py writes as the single file
    unet_keys = {k.removeprefix("model.diffusion_model.").removesuffix(".weight"): k
                 for k in original if k.startswith("model.diffusion_model.") and k.endswith(".weight")}  # fmt: skip
    by_lora_name = {"lora_unet_" + k.replace(".", "_"): v for k, v in unet_keys.items()}
    if trained.family == "sd15":
        from likeness.engines.diffusers.checkpoint import unet_to_original

        diffusers = unet_to_original(base.unet.state_dict(), base.unet.config)
        renamed = dict(zip(base.unet.state_dict(), diffusers, strict=True))
        by_lora_name = {"lora_unet_" + k.removesuffix(".weight").replace(".", "_"): v
                        for k, v in renamed.items() if k.endswith(".weight")}  # fmt: skip
    te = {
        "lora_te1_" if trained.family == "sdxl" else "lora_te_": base.text_encoder,
        "lora_te2_": getattr(base, "text_encoder_2", None),
    }
    modules = lora_modules(trained.lora)
    assert len(modules) > 100
    for name, parts in modules.items():
        prefix = next((p for p in te if name.startswith(p)), None)
        if prefix is not None:
            state = {("text_model." + k.removeprefix("text_model.")).removesuffix(".weight")
                     .replace(".", "_"): v for k, v in te[prefix].state_dict().items()}  # fmt: skip
            weight = state[name.removeprefix(prefix)]
            assert re.search(r"_(self_attn_(q|k|v|out)_proj|mlp_fc[12])$", name), name
        else:
            assert name in by_lora_name, f"{name}: not a weight of the single-file checkpoint"
            weight = original[by_lora_name[name]]
        out_features, rank = parts["up"].shape[:2]
        assert weight.shape[0] == out_features and parts["down"].shape[1] == weight.shape[1]
        assert rank == RANK and float(parts["alpha"]) == ALPHA
    # the block names are the original layout ComfyUI and kohya use for SDXL
    if trained.family == "sdxl":
        assert "lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q" in modules
        assert "lora_unet_output_blocks_2_2_conv" not in modules  # not targeted
        conv = modules["lora_unet_input_blocks_1_0_in_layers_2"]
        assert conv["down"].shape == (RANK, 32, 3, 3) and conv["up"].shape == (32, RANK, 1, 1)
    else:
        assert "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q" in modules
    # the original weight under each UNet name is the module the LoRA sits on
    unet = dict(base.unet.named_modules())
    for name in modules:
        if name.startswith("lora_unet_"):
            module = _diffusers_module(trained, name)
            assert torch.equal(unet[module].weight, original[by_lora_name[name]])


def _diffusers_module(trained: Trained, name: str) -> str:
    from likeness.train.kohya import kohya_module_name

    layers = {kohya_module_name(trained.family, "unet", n, trained.pipe.unet): n
              for n, m in trained.pipe.unet.named_modules() if hasattr(m, "lora_A")}  # fmt: skip
    return layers[name]


def comfy_flux_map(original: dict[str, Any]) -> dict[str, tuple[str, tuple[int, int] | None]]:
    """ComfyUI's diffusers -> original FLUX map (``flux_to_diffusers`` in comfy/utils.py at
    a125cd84, as read there), derived from the original key names: depth and width come from
    the checkpoint, as ComfyUI's model detection reads them. Values: (original weight, (start,
    length) of a slice of a fused weight, or None)."""
    hidden = original["img_in.weight"].shape[0]
    double = {int(k.split(".")[1]) for k in original if k.startswith("double_blocks.")}
    single = {int(k.split(".")[1]) for k in original if k.startswith("single_blocks.")}
    out: dict[str, tuple[str, tuple[int, int] | None]] = {}
    for i in double:
        a, d = f"transformer_blocks.{i}.attn.", f"double_blocks.{i}."
        for j, (img, txt) in enumerate([("to_q", "add_q_proj"), ("to_k", "add_k_proj"),
                                        ("to_v", "add_v_proj")]):  # fmt: skip
            out[a + img] = (d + "img_attn.qkv.weight", (hidden * j, hidden))
            out[a + txt] = (d + "txt_attn.qkv.weight", (hidden * j, hidden))
        for diff, orig in [("attn.to_out.0", "img_attn.proj"), ("norm1.linear", "img_mod.lin"),
                           ("norm1_context.linear", "txt_mod.lin"),
                           ("attn.to_add_out", "txt_attn.proj"), ("ff.net.0.proj", "img_mlp.0"),
                           ("ff.net.2", "img_mlp.2"), ("ff_context.net.0.proj", "txt_mlp.0"),
                           ("ff_context.net.2", "txt_mlp.2")]:  # fmt: skip
            out[f"transformer_blocks.{i}.{diff}"] = (f"{d}{orig}.weight", None)
    for i in single:
        a, s = f"single_transformer_blocks.{i}.", f"single_blocks.{i}."
        for j, part in enumerate(["attn.to_q", "attn.to_k", "attn.to_v"]):
            out[a + part] = (s + "linear1.weight", (hidden * j, hidden))
        out[a + "proj_mlp"] = (s + "linear1.weight", (hidden * 3, hidden * 4))
        out[a + "norm.linear"] = (s + "modulation.lin.weight", None)
        out[a + "proj_out"] = (s + "linear2.weight", None)
    for diff, orig in [("proj_out", "final_layer.linear"), ("x_embedder", "img_in"),
                       ("context_embedder", "txt_in"),
                       ("time_text_embed.timestep_embedder.linear_1", "time_in.in_layer"),
                       ("time_text_embed.timestep_embedder.linear_2", "time_in.out_layer"),
                       ("time_text_embed.text_embedder.linear_1", "vector_in.in_layer"),
                       ("time_text_embed.text_embedder.linear_2", "vector_in.out_layer")]:  # fmt: skip
        out[diff] = (orig + ".weight", None)
    return out


@pytest.mark.parametrize("trained", ["flux"], indirect=True)
def test_flux_names_are_the_diffusers_names_comfyui_maps_onto_original_weights(trained):
    """Every ``transformer.*`` name maps, by ComfyUI's map re-derived from the original FLUX key
    names, to a weight (or a slice of a fused q/k/v/mlp weight) of the original layout; that
    slice holds exactly the weight the LoRA was trained on. CLIP-L names are the ones ComfyUI's
    model_lora_keys_clip maps for clip_l (``text_encoder.text_model.encoder.layers.N.*``)."""
    base = BUILDERS["flux"](0)
    original = flux_to_original(base.transformer.state_dict())
    assert "double_blocks.0.img_attn.qkv.weight" in original
    assert "single_blocks.0.linear1.weight" in original
    comfy = comfy_flux_map(original)
    modules = dict(base.transformer.named_modules())
    names = lora_modules(trained.lora)
    transformer = [n for n in names if n.startswith("transformer.")]
    assert len(transformer) == 21  # 14 in the double block, 6 in the single, proj_out
    for name in transformer:
        module = name.removeprefix("transformer.")
        assert module in comfy, f"{name}: ComfyUI does not map it"
        key, offset = comfy[module]
        fused = original[key]
        part = fused if offset is None else fused.narrow(0, offset[0], offset[1])
        assert torch.equal(part, modules[module].weight), name
        assert names[name]["up"].shape[0] == part.shape[0]
    clip = [n for n in names if n.startswith("text_encoder.")]
    assert clip and all(
        re.fullmatch(
            r"text_encoder\.text_model\.encoder\.layers\.\d+\."
            r"(self_attn\.(q|k|v|out)_proj|mlp\.fc[12])",
            n,
        )
        for n in clip  # fmt: skip
    )


def test_refusals_name_the_field(tmp_path):
    pipe = BUILDERS["sd15"](0)
    meta = metadata("sd15")
    with pytest.raises(ValueError, match="no LoRA layers"):
        save_kohya_lora(tmp_path / "a.safetensors", {"unet": pipe.unet}, family="sd15",
                        alpha=ALPHA, metadata=meta)  # fmt: skip
    pipe.unet.add_adapter(LoraConfig(r=RANK, lora_alpha=ALPHA, target_modules=["to_q"]))
    with pytest.raises(ValueError, match="lora_alpha 6.0"):
        save_kohya_lora(tmp_path / "a.safetensors", {"unet": pipe.unet}, family="sd15",
                        alpha=8, metadata={})  # fmt: skip
    with pytest.raises(ValueError, match="ss_network_alpha"):
        save_kohya_lora(tmp_path / "a.safetensors", {"unet": pipe.unet}, family="sd15",
                        alpha=8, metadata=meta)  # fmt: skip
    with pytest.raises(ValueError, match="'transformer' is not a sd15 component"):
        save_kohya_lora(tmp_path / "a.safetensors", {"transformer": pipe.unet}, family="sd15",
                        alpha=ALPHA, metadata=meta)  # fmt: skip
    with pytest.raises(ValueError, match="must end in .safetensors"):
        save_kohya_lora(tmp_path / "a.ckpt", {"unet": pipe.unet}, family="sd15", alpha=ALPHA,
                        metadata=meta)  # fmt: skip
    with pytest.raises(ValueError, match="metadata: 'ss_steps' = 3"):
        save_kohya_lora(tmp_path / "a.safetensors", {"unet": pipe.unet}, family="sd15",
                        alpha=ALPHA, metadata={"ss_steps": 3})  # fmt: skip
    pipe.text_encoder.add_adapter(
        LoraConfig(r=RANK, lora_alpha=ALPHA, target_modules=["token_embedding"])
    )
    with pytest.raises(ValueError, match="token_embedding: an embedding LoRA"):
        save_kohya_lora(tmp_path / "a.safetensors", {"text_encoder": pipe.text_encoder},
                        family="sd15", alpha=ALPHA, metadata=meta)  # fmt: skip
    dora = BUILDERS["sd15"](0)
    dora.unet.add_adapter(LoraConfig(r=RANK, lora_alpha=ALPHA, target_modules=["to_q"],
                                     use_dora=True))  # fmt: skip
    with pytest.raises(ValueError, match="DoRA"):
        save_kohya_lora(tmp_path / "a.safetensors", {"unet": dora.unet}, family="sd15",
                        alpha=ALPHA, metadata=meta)  # fmt: skip
    assert list(tmp_path.iterdir()) == []  # nothing written by a refused call


def test_writes_replace_atomically_and_cast(tmp_path):
    pipe = BUILDERS["sd15"](0)
    pipe.unet.add_adapter(
        LoraConfig(r=RANK, lora_alpha=ALPHA, init_lora_weights=False, target_modules=["to_q"])
    )
    target = tmp_path / "out" / "lora.safetensors"
    save_kohya_lora(target, {"unet": pipe.unet}, family="sd15", alpha=ALPHA, metadata={})
    first = target.read_bytes()
    save_kohya_lora(target, {"unet": pipe.unet}, family="sd15", alpha=ALPHA, metadata={},
                    dtype=torch.float16)  # fmt: skip
    assert target.read_bytes() != first and os.listdir(target.parent) == ["lora.safetensors"]
    tensors, _ = read_kohya_lora(target)
    assert {v.dtype for k, v in tensors.items() if not k.endswith(".alpha")} == {torch.float16}
    assert {v.dtype for k, v in tensors.items() if k.endswith(".alpha")} == {torch.float32}


def test_metadata_extra_keys_and_families():
    meta = kohya_metadata(base_model="m.safetensors", base_model_sha256=None, family="sdxl",
                          rank=64, alpha=32, steps=1500, resolution=1024, trigger="zk1",
                          dataset="mara@v2", dataset_sha256="c" * 64, seed=42,
                          ss_epoch=3, likeness_train_run=7, batch_size=None)  # fmt: skip
    assert meta["ss_seed"] == "42" and meta["ss_epoch"] == "3" and meta["likeness_train_run"] == "7"
    assert "ss_batch_size" not in meta and "ss_new_sd_model_hash" not in meta
    assert meta["ss_network_alpha"] == "32" and meta["ss_resolution"] == "(1024, 1024)"
    assert meta["ss_output_name"] == "mara-v2" and meta["modelspec.resolution"] == "1024x1024"
    assert meta["modelspec.architecture"] == "stable-diffusion-xl-v1-base/lora"
    assert all(isinstance(v, str) for v in meta.values())
    with pytest.raises(ValueError, match="family"):
        kohya_metadata(base_model="m", base_model_sha256=None, family="sd3", rank=1, alpha=1,
                       steps=1, resolution=64, trigger="", dataset="d@v1", dataset_sha256="")  # fmt: skip


@pytest.mark.parametrize("layers_per_block", [1, 3])
def test_names_follow_the_model_config(tmp_path, layers_per_block):
    """Another block depth gives other names, each still a weight of that model's single-file
    layout: the names come from the model, not from a table of SDXL names."""
    from diffusers import UNet2DConditionModel

    from likeness.engines.diffusers.checkpoint import unet_to_original

    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        block_out_channels=(16, 32, 32), layers_per_block=layers_per_block, sample_size=8,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=16, attention_head_dim=4, norm_num_groups=8,
    )  # fmt: skip
    weights = {k.removeprefix("model.diffusion_model.").removesuffix(".weight").replace(".", "_")
               for k in unet_to_original(unet.state_dict(), unet.config) if k.endswith(".weight")}  # fmt: skip
    unet.add_adapter(LoraConfig(r=2, lora_alpha=2, target_modules=["to_q", "conv1", "conv"]))
    path = save_kohya_lora(tmp_path / "l.safetensors", {"unet": unet}, family="sdxl", alpha=2,
                           metadata={})  # fmt: skip
    names = {n.removeprefix("lora_unet_") for n in lora_modules(path)}
    assert names <= weights and len(names) > 10
    last_input = 1 + 2 * (layers_per_block + 1) + layers_per_block - 1  # of the 3rd level
    assert f"input_blocks_{last_input}_1_transformer_blocks_0_attn1_to_q" in names
    assert f"output_blocks_{layers_per_block}_2_conv" in names  # an upsampler after attention
