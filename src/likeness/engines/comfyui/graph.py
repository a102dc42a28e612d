"""Recipe -> ComfyUI API-format graph, built from named slots instead of magic node ids.

Code refers to nodes by slot name (``graph.id("sampler")``, ``graph.node("save")``); node ids
are assigned in insertion order ("1", "2", ...) and every node carries its slot name as
``_meta.title``, so the graph reads the same in ComfyUI's editor.

The passes, in order (each optional one only when the recipe asks for it)::

    checkpoint -> lora_0..N -> positive/negative -> latent -> sampler
      -> refiner (KSampler on the latent at refiner.denoise)
      -> identity, region "image" (the adapter on the base model; KSampler on the latent at
         identity.denoise for identity.steps steps)
      -> decode (VAEDecode)
      -> identity, region "face" (the adapter on the base model; Impact Pack FaceDetailer
         re-sampling the face crop at identity.guide_size, identity.denoise)
      -> detailer (Impact Pack FaceDetailer: face box detector [+ SAM], re-sampled crop)
      -> upscale (UpscaleModelLoader + ImageUpscaleWithModel, then ImageScale to the exact
         factor; a plain ImageScale without a model) -> save (SaveImage)

The identity adapter is cubiq's: ``instantid`` is ComfyUI_InstantID (InstantIDModelLoader,
InstantIDFaceAnalysis, ControlNetLoader, ApplyInstantID, whose weight sets both the adapter and
the ControlNet strength; on the whole image its keypoints come from the decoded image itself);
``ipadapter_faceid`` is ComfyUI_IPAdapter_plus with explicit loaders (IPAdapterModelLoader,
CLIPVisionLoader, IPAdapterInsightFaceLoader, IPAdapterFaceID), so ``/object_info`` names each
missing file; several references are averaged, as the diffusers engine does.

Upscaling comes last so every sampling pass works at the recipe's size ("edit at 1024 first,
upscale last"); the identity fix samples after the LoRA passes with the base model, since LoRA
and face adapters together during sampling give plastic faces.

Example::

    graph = build_graph(recipe, seed=42)
    json.dumps(graph.api())        # what POST /prompt and "Load (API format)" take
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import PureWindowsPath
from typing import Any

from likeness.recipes import Recipe, build_prompt


@dataclass(frozen=True)
class Link:
    """Output ``slot`` of the node with id ``node``; serialised as ``[node, slot]``."""

    node: str
    slot: int


@dataclass(frozen=True)
class GraphOptions:
    """Server-side names the recipe does not carry, with the usual community defaults."""

    filename_prefix: str = "likeness/img"
    instantid_model: str = "ip-adapter.bin"
    instantid_controlnet: str = "instantid/diffusion_pytorch_model.safetensors"
    faceid_model: str = "ip-adapter-faceid_sdxl.bin"
    clip_vision: str = "CLIP-ViT-H-14-laion2B-s32B-b79K.safetensors"
    insightface_provider: str = "CPU"
    face_detector: str = "bbox/face_yolov8m.pt"
    sam_model: str = "sam_vit_b_01ec64.pth"  # "" to detail the whole face box without SAM
    resize_method: str = "lanczos"


@dataclass(frozen=True)
class Graph:
    """An API-format graph plus the slot name -> node id map it was built with."""

    nodes: Mapping[str, Mapping[str, Any]]
    slots: Mapping[str, str]
    output_size: tuple[int, int] = (0, 0)

    def api(self) -> dict[str, Any]:
        """A plain, JSON-ready copy for ``POST /prompt`` (and ComfyUI's "Load API format")."""
        return copy.deepcopy({nid: dict(node) for nid, node in self.nodes.items()})

    def id(self, slot: str) -> str:
        try:
            return self.slots[slot]
        except KeyError:
            raise KeyError(f"graph has no slot {slot!r}; slots: {', '.join(self.slots)}") from None

    def node(self, slot: str) -> Mapping[str, Any]:
        return self.nodes[self.id(slot)]

    def slot_of(self, node_id: str) -> str | None:
        for slot, nid in self.slots.items():
            if nid == node_id:
                return slot
        return None

    def class_types(self) -> list[str]:
        return sorted({str(n["class_type"]) for n in self.nodes.values()})


@dataclass
class GraphBuilder:
    """Adds nodes under slot names and links them by slot: ``b.add("decode", "VAEDecode",
    samples=b.out("sampler"), vae=b.out("checkpoint", 2))``."""

    nodes: dict[str, dict[str, Any]] = field(default_factory=dict)
    slots: dict[str, str] = field(default_factory=dict)

    def add(self, slot: str, class_type: str, **inputs: Any) -> Link:
        if slot in self.slots:
            raise ValueError(f"slot {slot!r} is already used")
        node_id = str(len(self.nodes) + 1)
        self.slots[slot] = node_id
        self.nodes[node_id] = {
            "class_type": class_type,
            "inputs": {
                k: ([v.node, v.slot] if isinstance(v, Link) else v) for k, v in inputs.items()
            },
            "_meta": {"title": slot},
        }
        return Link(node_id, 0)

    def out(self, slot: str, index: int = 0) -> Link:
        return Link(self.slots[slot], index)

    def build(self, output_size: tuple[int, int] = (0, 0)) -> Graph:
        return Graph(
            nodes=copy.deepcopy(self.nodes), slots=dict(self.slots), output_size=output_size
        )


def build_graph(
    recipe: Recipe,
    *,
    seed: int | None = None,
    batch: int | None = None,
    references: Sequence[str] = (),
    options: GraphOptions = GraphOptions(),
    names: Mapping[str, str] | None = None,
) -> Graph:
    """The API-format graph that runs ``recipe`` once.

    ``seed`` and ``batch`` default to the recipe's (a seed of -1 must be resolved first);
    ``references`` are LoadImage names of the uploaded identity references (required when
    ``recipe.identity`` is enabled); ``names`` maps recipe model/LoRA values to the server's
    file names (see :func:`likeness.engines.comfyui.checks.resolve_names`).
    """
    seed = recipe.seed if seed is None else seed
    if seed < 0:
        raise ValueError("seed: -1 must be resolved to a real seed before building a graph")
    names = names or {}
    b = GraphBuilder()
    cfg, flux = recipe.cfg, recipe.family == "flux"
    sampler = {
        "sampler_name": recipe.sampler,
        "scheduler": recipe.scheduler,
        "cfg": 1.0 if flux else cfg,
    }

    # 1. Model and LoRAs (each LoRA patches both the model and its CLIP).
    b.add("checkpoint", "CheckpointLoaderSimple", ckpt_name=names.get(recipe.model, recipe.model))
    model, clip = b.out("checkpoint", 0), b.out("checkpoint", 1)
    vae = b.out("checkpoint", 2)
    for i, lora in enumerate(recipe.loras):
        b.add(
            f"lora_{i}",
            "LoraLoader",
            model=model,
            clip=clip,
            lora_name=names.get(lora.path, lora.path),
            strength_model=lora.strength,
            strength_clip=lora.strength,
        )
        model, clip = b.out(f"lora_{i}", 0), b.out(f"lora_{i}", 1)

    # 2. Prompts (FLUX takes its guidance from FluxGuidance; its KSampler runs at cfg 1).
    prompt = build_prompt(recipe)
    positive = _encode(b, "positive", prompt, clip, flux, cfg)
    negative = b.add("negative", "CLIPTextEncode", text=recipe.negative, clip=clip)

    # 3. First pass, then the refiner on the latent.
    b.add(
        "latent",
        "EmptyLatentImage",
        width=recipe.width,
        height=recipe.height,
        batch_size=recipe.batch if batch is None else batch,
    )
    latent = b.add(
        "sampler",
        "KSampler",
        model=model,
        positive=positive,
        negative=negative,
        latent_image=b.out("latent"),
        seed=seed,
        steps=recipe.steps,
        denoise=1.0,
        **sampler,
    )
    if recipe.refiner.enabled:
        latent = b.add(
            "refiner",
            "KSampler",
            model=model,
            positive=positive,
            negative=negative,
            latent_image=latent,
            seed=seed,
            steps=recipe.refiner.steps,
            denoise=recipe.refiner.denoise,
            **sampler,
        )

    # 4. Identity fix on the whole image: the adapter on the base model, re-sampling the latent.
    ident = recipe.identity
    if ident.enabled and not references:
        raise ValueError("references: upload the identity reference images first")
    if ident.enabled and ident.region == "image":
        kps = b.add("identity_kps", "VAEDecode", samples=latent, vae=vae)
        model_i, pos_i, neg_i = _identity(b, recipe, references, options, names, flux, kps)
        latent = b.add(
            "identity",
            "KSampler",
            model=model_i,
            positive=pos_i,
            negative=neg_i,
            latent_image=latent,
            seed=seed,
            steps=ident.steps,
            denoise=ident.denoise,
            **sampler,
        )

    # 5. Decode; the identity fix on the face; detail the face, upscale, save.
    image = b.add("decode", "VAEDecode", samples=latent, vae=vae)
    if ident.enabled and ident.region == "face":
        model_i, pos_i, neg_i = _identity(b, recipe, references, options, names, flux, None)
        image = _face_detailer(
            b, "identity", image, model_i, b.out("checkpoint", 1), vae, pos_i, neg_i, seed,
            sampler, options, guide_size=ident.guide_size, steps=ident.steps,
            denoise=ident.denoise, feather=5, padding=ident.padding,
        )  # fmt: skip
    if recipe.detailer.enabled:
        image = _detailer(
            b, recipe, image, model, clip, vae, positive, negative, seed, sampler, options
        )
    width, height = recipe.width, recipe.height
    if recipe.upscale.enabled:
        image, (width, height) = _upscale(b, recipe, image, options, names)
    b.add("save", "SaveImage", images=image, filename_prefix=options.filename_prefix)
    return b.build(output_size=(width, height))


def _encode(b: GraphBuilder, slot: str, text: str, clip: Link, flux: bool, cfg: float) -> Link:
    encoded = b.add(slot, "CLIPTextEncode", text=text, clip=clip)
    if not flux:
        return encoded
    return b.add(f"{slot}_guidance", "FluxGuidance", conditioning=encoded, guidance=cfg)


def _identity(
    b: GraphBuilder,
    recipe: Recipe,
    references: Sequence[str],
    options: GraphOptions,
    names: Mapping[str, str],
    flux: bool,
    kps_image: Link | None,
) -> tuple[Link, Link, Link]:
    """The identity adapter on the base model: (model, positive, negative) to sample with."""
    ident = recipe.identity
    base_model, base_clip = b.out("checkpoint", 0), b.out("checkpoint", 1)
    image = b.add("reference_0", "LoadImage", image=references[0])
    for i, name in enumerate(references[1:], start=1):
        b.add(f"reference_{i}", "LoadImage", image=name)
        image = b.add(f"references_{i}", "ImageBatch", image1=image, image2=b.out(f"reference_{i}"))
    positive = _encode(b, "identity_positive", build_prompt(recipe), base_clip, flux, recipe.cfg)
    negative = b.add("identity_negative", "CLIPTextEncode", text=recipe.negative, clip=base_clip)

    def name(value: str, default: str) -> str:
        return names.get(value, value) if value else default

    if ident.method == "ipadapter_faceid":
        b.add(
            "identity_model",
            "IPAdapterModelLoader",
            ipadapter_file=name(ident.adapter, options.faceid_model),
        )
        b.add(
            "identity_clip_vision",
            "CLIPVisionLoader",
            clip_name=name(ident.image_encoder, options.clip_vision),
        )
        b.add(
            "identity_faces",
            "IPAdapterInsightFaceLoader",
            provider=options.insightface_provider,
            model_name=insightface_pack(ident.insightface),
        )
        model = b.add(
            "identity_apply",
            "IPAdapterFaceID",
            model=base_model,
            ipadapter=b.out("identity_model"),
            image=image,
            weight=ident.weight,
            weight_faceidv2=ident.weight,
            weight_type="linear",
            combine_embeds="average",
            start_at=0.0,
            end_at=1.0,
            embeds_scaling="V only",
            clip_vision=b.out("identity_clip_vision"),
            insightface=b.out("identity_faces"),
        )
        return model, positive, negative
    b.add(
        "identity_model",
        "InstantIDModelLoader",
        instantid_file=name(ident.adapter, options.instantid_model),
    )
    b.add("identity_faces", "InstantIDFaceAnalysis", provider=options.insightface_provider)
    b.add(
        "identity_controlnet",
        "ControlNetLoader",
        control_net_name=name(ident.controlnet, options.instantid_controlnet),
    )
    extra = {} if kps_image is None else {"image_kps": kps_image}
    b.add(
        "identity_apply",
        "ApplyInstantID",
        instantid=b.out("identity_model"),
        insightface=b.out("identity_faces"),
        control_net=b.out("identity_controlnet"),
        image=image,
        model=base_model,
        positive=positive,
        negative=negative,
        weight=ident.weight,
        start_at=0.0,
        end_at=1.0,
        **extra,
    )
    return b.out("identity_apply", 0), b.out("identity_apply", 1), b.out("identity_apply", 2)


def insightface_pack(folder: str) -> str:
    """The InsightFace pack name cubiq's loader takes: the folder's name when it is one of
    them, else buffalo_l (the FaceID default)."""
    base = PureWindowsPath(folder.rstrip("/\\")).name if folder else ""
    return base if base in ("buffalo_l", "antelopev2") else "buffalo_l"


def _detailer(
    b: GraphBuilder,
    recipe: Recipe,
    image: Link,
    model: Link,
    clip: Link,
    vae: Link,
    positive: Link,
    negative: Link,
    seed: int,
    sampler: Mapping[str, Any],
    options: GraphOptions,
) -> Link:
    d = recipe.detailer
    return _face_detailer(
        b, "detailer", image, model, clip, vae, positive, negative, seed, sampler, options,
        guide_size=d.guide_size, steps=d.steps, denoise=d.denoise, feather=d.feather,
        padding=d.padding,
    )  # fmt: skip


def _face_detailer(
    b: GraphBuilder,
    slot: str,
    image: Link,
    model: Link,
    clip: Link,
    vae: Link,
    positive: Link,
    negative: Link,
    seed: int,
    sampler: Mapping[str, Any],
    options: GraphOptions,
    *,
    guide_size: int,
    steps: int,
    denoise: float,
    feather: int,
    padding: float,
) -> Link:
    """Impact Pack's FaceDetailer under ``slot``: detect the face, re-sample its crop."""
    b.add(f"{slot}_detector", "UltralyticsDetectorProvider", model_name=options.face_detector)
    extra: dict[str, Any] = {}
    if options.sam_model:
        b.add(f"{slot}_sam", "SAMLoader", model_name=options.sam_model, device_mode="AUTO")
        extra["sam_model_opt"] = b.out(f"{slot}_sam")
    return b.add(
        slot,
        "FaceDetailer",
        image=image,
        model=model,
        clip=clip,
        vae=vae,
        positive=positive,
        negative=negative,
        bbox_detector=b.out(f"{slot}_detector", 0),
        guide_size=float(guide_size),
        guide_size_for=True,
        max_size=float(max(1024, guide_size)),
        seed=seed,
        steps=steps,
        denoise=denoise,
        feather=feather,
        noise_mask=True,
        force_inpaint=True,
        bbox_threshold=0.5,
        bbox_dilation=10,
        bbox_crop_factor=round(1.0 + 2.0 * padding, 3),
        sam_detection_hint="center-1",
        sam_dilation=0,
        sam_threshold=0.93,
        sam_bbox_expansion=0,
        sam_mask_hint_threshold=0.7,
        sam_mask_hint_use_negative="False",
        drop_size=10,
        wildcard="",
        cycle=1,
        **sampler,
        **extra,
    )


def _upscale(
    b: GraphBuilder,
    recipe: Recipe,
    image: Link,
    options: GraphOptions,
    names: Mapping[str, str],
) -> tuple[Link, tuple[int, int]]:
    up = recipe.upscale
    width, height = round(recipe.width * up.factor), round(recipe.height * up.factor)
    if up.model:
        b.add("upscale_model", "UpscaleModelLoader", model_name=names.get(up.model, up.model))
        image = b.add(
            "upscale", "ImageUpscaleWithModel", upscale_model=b.out("upscale_model"), image=image
        )
    image = b.add(
        "resize",
        "ImageScale",
        image=image,
        upscale_method=options.resize_method,
        width=width,
        height=height,
        crop="disabled",
    )
    return image, (width, height)


def model_inputs(recipe: Recipe) -> list[tuple[str, str]]:
    """(folder, recipe value) of every server file the recipe names, for name resolution."""
    out = [("checkpoints", recipe.model)]
    out += [("loras", lora.path) for lora in recipe.loras]
    if recipe.upscale.enabled and recipe.upscale.model:
        out.append(("upscale_models", recipe.upscale.model))
    ident = recipe.identity
    if ident.enabled:
        folder = "instantid" if ident.method == "instantid" else "ipadapter"
        files = [(folder, ident.adapter), ("controlnet", ident.controlnet)]
        files.append(("clip_vision", ident.image_encoder))
        out += [(f, v) for f, v in files if v]
    return out
