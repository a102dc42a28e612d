"""The identity pass: InstantID or IP-Adapter FaceID on the finished image, on the base model.

It runs after the base (+ refiner) pass and before the detailer and upscale, as its own step:
practitioners reached about 95% face similarity by applying InstantID *after* the LoRA pass
(weight 0.85, a face-only reference), where LoRA and FaceID together during sampling gave
plastic faces. So the character's LoRAs are switched off for this pass.

1. **References.** Each reference photo is cropped to the face exactly as ``likeness refs
   crop`` does (dlib finds the subject, :func:`likeness.faces.reference_crop` squares it with a
   0.4 margin at 1024 px): a hat or glasses in an uncropped reference would turn up in every
   output. InsightFace finds the face in the crop and ArcFace embeds it; the embeddings of all
   references are averaged (cubiq's default for InstantID). FaceID reads the L2-normalised
   embedding, InstantID the raw one (what each was trained on).
2. **Adapter.** Loaded with diffusers' own ``load_ip_adapter`` from the state dict: FaceID's
   projection (4 tokens) and its LoRA, or InstantID's Resampler (16 tokens, diffusers' IP-Adapter
   Plus projection) with the IP attention processors. The loaded processors are kept and
   swapped in for the pass only (:class:`AdapterSlot`), so the other passes run on the plain
   UNet.
3. **Region.** ``face``: the subject's face box plus ``padding`` is cropped, resized to
   ``guide_size``, the face box inpainted at ``denoise`` and pasted back with a feathered edge
   (as the detailer does); nothing outside the region changes. ``image``: img2img on the whole
   image at ``denoise``.
4. **Sampling.** ``ip_adapter_image_embeds`` carries the embedding (zeros for the unconditional
   half, as InstantID's pipeline does); the IP-Adapter scale is ``weight``. InstantID also runs
   its ControlNet on the face-keypoints image drawn from InsightFace's five points on the region,
   at conditioning scale ``weight``, with the adapter's face tokens (not the text) as the
   ControlNet's cross-attention input, as diffusers' InstantID community pipeline does.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from likeness.engines.base import EngineError, sha256_file
from likeness.engines.diffusers import adapters
from likeness.engines.diffusers.passes import (
    FaceFinder,
    denoise_schedule,
    feathered_box,
    guide_resize,
    padded_region,
)
from likeness.recipes import IdentityPass

REFERENCE_SIZE = 1024  # `likeness refs crop` defaults
REFERENCE_MARGIN = 0.4
FEATHER = 5  # px of blended border when the face is pasted back
KEYPOINT_COLOURS = ((255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (255, 0, 255))
Keypoints = Callable[[np.ndarray], "np.ndarray | None"]


# -- 1. references ----------------------------------------------------------------------
@dataclass(frozen=True)
class ReferenceEmbedding:
    """The averaged ArcFace embedding of the reference crops and what was embedded."""

    raw: np.ndarray
    normed: np.ndarray
    records: tuple[dict[str, Any], ...]


def embed_references(paths: tuple[str, ...], faces: Any, finder: Any = None) -> ReferenceEmbedding:
    """Crop each reference to the face (``refs crop``'s code) and embed the crop.

    ``faces`` is an InsightFace analyzer; ``finder`` the face analyzer that places the crop
    (dlib by default, as ``refs crop``). Raises EngineError naming a reference without a face.
    """
    from likeness.faces import DlibAnalyzer, reference_crop, select_subject
    from likeness.faces.crop import crop_box, fit_square
    from likeness.imaging import ImageRejected, open_image

    finder = finder or DlibAnalyzer()
    raws, normed, records = [], [], []
    for ref in paths:
        path = Path(ref).expanduser()
        try:
            photo = open_image(path).image
        except (ImageRejected, OSError) as exc:
            raise EngineError(f"identity.references: {ref}: {getattr(exc, 'reason', exc)}") from exc
        found = finder.analyze(np.asarray(photo))
        subject = select_subject(found, photo.width, photo.height)
        if subject is None:
            raise EngineError(f"identity.references: {ref}: no face found; pass a face photo")
        face = found[subject]
        box = fit_square(crop_box(face, REFERENCE_MARGIN), face, photo.width, photo.height)
        crop = reference_crop(photo, face, size=REFERENCE_SIZE, margin=REFERENCE_MARGIN)
        pixels = np.asarray(crop)
        detected = faces.analyze(pixels)
        if not detected:
            raise EngineError(
                f"identity.references: {ref}: InsightFace finds no face in its face crop"
            )
        best = max(detected, key=lambda f: f.box.area)
        raw = np.asarray(faces.raw_embedding(pixels, best.points), np.float32)
        raws.append(raw)
        normed.append(raw / max(1e-12, float(np.linalg.norm(raw))))
        records.append(
            {
                "path": ref,
                "sha256": sha256_file(path),
                "embedded": "face_crop",
                "crop": {
                    "box": list(box),
                    "size": REFERENCE_SIZE,
                    "pixels_sha256": hashlib.sha256(pixels.tobytes()).hexdigest(),
                },
                "face": best.box.as_list(),
            }
        )
    return ReferenceEmbedding(
        raw=np.mean(raws, axis=0), normed=np.mean(normed, axis=0), records=tuple(records)
    )


def image_embeds(reference: ReferenceEmbedding, method: str, dtype: Any, device: Any) -> Any:
    """``ip_adapter_image_embeds[0]``: [unconditional zeros, the embedding], shaped for the
    adapter's projection ((2, 1, 512) for FaceID, (2, 1, 1, 512) for InstantID's Resampler)."""
    import torch

    vector = reference.normed if method == adapters.FACEID else reference.raw
    emb = torch.from_numpy(np.asarray(vector, np.float32)).reshape(1, 1, -1)
    if method == adapters.INSTANTID:
        emb = emb[:, None]
    return torch.cat([torch.zeros_like(emb), emb]).to(device=device, dtype=dtype)


# -- 2. the adapter ---------------------------------------------------------------------
@dataclass
class LoadedAdapter:
    """An adapter loaded into a UNet: its attention processors and projection, and the name
    of the peft adapter holding FaceID's LoRA (None for InstantID)."""

    sha256: str
    method: str
    processors: dict[str, Any]
    projection: Any
    lora: str | None


class AdapterSlot:
    """One identity adapter at a time in one pipeline, swapped in for the identity pass only."""

    def __init__(self) -> None:
        self.loaded: LoadedAdapter | None = None
        self._base: dict[str, Any] | None = None

    def attach(self, pipe: Any, path: str, method: str, *, allow_pickle: bool) -> LoadedAdapter:
        """Load ``path`` (once) and put its processors and projection into ``pipe.unet``."""
        sha = sha256_file(path)
        unet = pipe.unet
        if self.loaded is None or self.loaded.sha256 != sha:
            self.detach(pipe)
            self._drop_lora(pipe)
            self._base = dict(unet.attn_processors)
            state = adapters.read_adapter(path, allow_pickle=allow_pickle)
            kind = adapters.adapter_kind([f"{s}.{k}" for s in state for k in state[s]])
            if kind != method:
                raise EngineError(f"identity.adapter: {path} holds a {kind} adapter, not {method}")
            before = set(getattr(unet, "peft_config", {}) or {})
            try:
                with _quiet():
                    pipe.load_ip_adapter(
                        state, subfolder="", weight_name=Path(path).name, image_encoder_folder=None
                    )
            except Exception as exc:  # diffusers raises many types for a mismatched file
                unet.set_attn_processor(self._base)
                raise EngineError(
                    f"identity.adapter: {path} does not fit this model "
                    f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})"
                ) from exc
            added = sorted(set(getattr(unet, "peft_config", {}) or {}) - before)
            self.loaded = LoadedAdapter(
                sha256=sha,
                method=method,
                processors=dict(unet.attn_processors),
                projection=unet.encoder_hid_proj,
                lora=added[0] if added else None,
            )
            return self.loaded
        # The projection first: a Resampler's own attention layers count as processors.
        unet.encoder_hid_proj = self.loaded.projection
        unet.config.encoder_hid_dim_type = "ip_image_proj"
        unet.set_attn_processor(dict(self.loaded.processors))
        return self.loaded

    def detach(self, pipe: Any) -> None:
        """Put the UNet's own attention processors back (no adapter runs)."""
        if self._base is None or pipe is None:
            return
        unet = pipe.unet
        if unet.config.encoder_hid_dim_type == "ip_image_proj":
            unet.encoder_hid_proj = None
            unet.config.encoder_hid_dim_type = None
            unet.set_attn_processor(dict(self._base))

    def _drop_lora(self, pipe: Any) -> None:
        if self.loaded is not None and self.loaded.lora:
            pipe.delete_adapters(self.loaded.lora)
        self.loaded = None

    def clear(self) -> None:
        self.loaded = None
        self._base = None


@contextlib.contextmanager
def controlnet_face_tokens(controlnet: Any, tokens: Any, cfg: bool) -> Iterator[None]:
    """While open, the ControlNet attends to the adapter's face ``tokens`` ([uncond, cond])
    instead of the text embeddings, as InstantID's IdentityNet was trained."""
    import torch

    def swap(module: Any, args: Any, kwargs: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
        batch = kwargs["encoder_hidden_states"].shape[0]
        half = batch // 2 if cfg and batch % 2 == 0 else 0
        parts = [tokens[:1].expand(half, -1, -1), tokens[1:].expand(batch - half, -1, -1)]
        kwargs["encoder_hidden_states"] = torch.cat(parts).to(kwargs["encoder_hidden_states"].dtype)
        return args, kwargs

    handle = controlnet.register_forward_pre_hook(swap, with_kwargs=True)
    try:
        yield
    finally:
        handle.remove()


def face_tokens(pipe: Any, embeds: Any) -> Any:
    """The adapter's projection of ``embeds``: (2, tokens, cross_attention_dim)."""
    import torch

    layer = pipe.unet.encoder_hid_proj.image_projection_layers[0]
    with torch.no_grad():
        out = layer(embeds.reshape((embeds.shape[0] * embeds.shape[1],) + embeds.shape[2:]))
    return out.reshape(embeds.shape[0], -1, out.shape[-1])


# -- 3./4. region and sampling ----------------------------------------------------------
def draw_keypoints(size: tuple[int, int], points: np.ndarray | None) -> Image.Image:
    """InstantID's conditioning image: the five keypoints (eyes, nose, mouth corners) as
    coloured dots joined to the nose by coloured bars, on black; all black without points."""
    import cv2

    width, height = size
    canvas = np.zeros((height, width, 3), np.float64)
    if points is None:
        return Image.fromarray(canvas.astype(np.uint8))
    pts = np.asarray(points, np.float64).reshape(5, 2)
    for start in (0, 1, 3, 4):
        (xa, ya), (xb, yb) = pts[start], pts[2]
        length = math.hypot(xa - xb, ya - yb)
        angle = math.degrees(math.atan2(ya - yb, xa - xb))
        centre = (int((xa + xb) / 2), int((ya + yb) / 2))
        polygon = cv2.ellipse2Poly(centre, (int(length / 2), 4), int(angle), 0, 360, 1)
        canvas = cv2.fillConvexPoly(canvas.copy(), polygon, KEYPOINT_COLOURS[start])
    canvas = canvas * 0.6
    for colour, (x, y) in zip(KEYPOINT_COLOURS, pts, strict=True):
        canvas = cv2.circle(canvas.copy(), (int(x), int(y)), 10, colour, -1)
    return Image.fromarray(canvas.astype(np.uint8))


@dataclass(frozen=True)
class IdentityResult:
    """The image after the pass, the face box and region it acted on (None when no face was
    found for ``region = "face"`` and the image came back unchanged) and the keypoints that
    conditioned InstantID (in the region's resized pixels)."""

    image: Image.Image
    face: tuple[float, float, float, float] | None
    region: tuple[int, int, int, int] | None
    keypoints: list[list[float]] | None = None


def apply_identity(
    view: Any,
    image: Image.Image,
    settings: IdentityPass,
    *,
    prompt: str,
    negative: str | None,
    cfg: float,
    generator: Any,
    embeds: Any,
    find_face: FaceFinder,
    keypoints: Keypoints | None = None,
    multiple: int = 8,
    callback: Any = None,
) -> IdentityResult:
    """Re-sample ``image``'s region with the adapter attached to ``view``'s UNet.

    ``keypoints`` (InstantID) maps the region's pixels to five face points, or None.
    """
    image = image.convert("RGB")
    # 1. Region.
    face = None
    if settings.region == "face":
        face = find_face(image)
        if face is None:
            return IdentityResult(image, None, None)
        region = padded_region(face, settings.padding, image.width, image.height)
        crop = image.crop(region)
        size = guide_resize(crop.size, settings.guide_size, multiple)
    else:
        region = (0, 0, image.width, image.height)
        crop = image
        size = image.size
    work = crop.resize(size, Image.Resampling.LANCZOS) if crop.size != size else crop
    kwargs: dict[str, Any] = {}
    mask_small = None
    if face is not None:
        x0, y0, x1, y1 = face
        local = (x0 - region[0], y0 - region[1], x1 - region[0], y1 - region[1])
        mask_small = feathered_box(crop.size, local, FEATHER)
        kwargs["mask_image"] = mask_small.resize(size, Image.Resampling.BILINEAR)
    # 2. InstantID's keypoint image, from the region itself.
    points = None
    if keypoints is not None:
        points = keypoints(np.asarray(work))
        kwargs["control_image"] = draw_keypoints(size, points)
        kwargs["controlnet_conditioning_scale"] = settings.weight
    # 3. Sample.
    total, strength = denoise_schedule(settings.steps, settings.denoise)
    if negative is not None:
        kwargs["negative_prompt"] = negative
    if callback is not None:
        kwargs["callback_on_step_end"] = callback
    out = view(
        prompt=prompt,
        image=work,
        width=size[0],
        height=size[1],
        strength=strength,
        num_inference_steps=total,
        guidance_scale=cfg,
        generator=generator,
        ip_adapter_image_embeds=[embeds],
        output_type="pil",
        **kwargs,
    ).images[0]
    out = out.convert("RGB")
    # 4. Paste back.
    kp = None if points is None else [[round(float(x), 1), round(float(y), 1)] for x, y in points]
    if mask_small is None:
        return IdentityResult(out.resize(image.size, Image.Resampling.LANCZOS), None, region, kp)
    back = out.resize(crop.size, Image.Resampling.LANCZOS)
    result = image.copy()
    result.paste(Image.composite(back, crop, mask_small), region[:2])
    return IdentityResult(result, face, region, kp)


def insightface_keypoints(faces: Any) -> Keypoints:
    """The five points of the largest face InsightFace finds, or None."""

    def points(rgb: np.ndarray) -> np.ndarray | None:
        found = faces.analyze(rgb)
        if not found:
            return None
        return max(found, key=lambda f: f.box.area).points

    return points


def file_records(ident: IdentityPass) -> dict[str, Any]:
    """Provenance of the identity files: paths and sha256s."""
    from likeness.faces.insightface_backend import find_models

    out: dict[str, Any] = {"adapter": {"path": ident.adapter, "sha256": sha256_file(ident.adapter)}}
    det, rec = find_models(Path(ident.insightface))
    out["insightface"] = {
        "path": ident.insightface,
        "files": {p.name: sha256_file(p) for p in (det, rec)},
    }
    if ident.method == adapters.INSTANTID:
        weights = adapters.controlnet_weights(adapters.controlnet_folder(ident.controlnet))
        out["controlnet"] = {
            "path": ident.controlnet,
            "sha256": sha256_file(weights) if weights else None,
        }
    return out


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """diffusers' notices while loading an adapter (no image encoder, no text-encoder LoRA
    keys) say nothing the user can act on."""
    from diffusers.utils import logging as dlog

    level = dlog.get_verbosity()
    dlog.set_verbosity_error()
    try:
        yield
    finally:
        dlog.set_verbosity(level)
