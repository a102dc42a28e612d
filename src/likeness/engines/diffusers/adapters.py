"""Identity adapter files: check them before any work, read them, convert pickles.

IP-Adapter FaceID and InstantID ship their adapters as ``.bin`` pickles holding a nested dict
``{"image_proj": {...}, "ip_adapter": {...}}``. A pickle can run code when loaded, so the
engine reads one only with ``allow_pickle`` (and then with ``torch.load(weights_only=True)``,
which refuses anything but tensors and plain containers). :func:`convert_to_safetensors`
writes the same tensors as ``.safetensors`` with the nested keys flattened by a dot:
``image_proj.latents``, ``ip_adapter.1.to_k_ip.weight``. That is the layout diffusers'
``load_ip_adapter`` and cubiq's ComfyUI nodes read back, so a converted file works everywhere
without a flag.

Which adapter a file holds is read from its ``image_proj`` keys: ``norm.weight`` (IP-Adapter
FaceID: a feed-forward projection of the ArcFace embedding to 4 tokens), ``latents`` (a
Resampler: InstantID's 16-token adapter, loaded by diffusers as an IP-Adapter Plus projection),
``perceiver_resampler.*`` (FaceID Plus, which also needs CLIP image features).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from likeness.engines.base import EngineCannotHonour
from likeness.engines.diffusers.loading import PICKLE_SUFFIXES
from likeness.recipes import IdentityPass

FACEID = "ipadapter_faceid"
FACEID_PLUS = "ipadapter_faceid_plus"
INSTANTID = "instantid"
SECTIONS = ("image_proj", "ip_adapter")
PICKLE_HINT = (
    "is a pickle file (it can run code when loaded); convert it with "
    "`likeness models convert` or pass --allow-pickle"
)


def adapter_kind(keys: list[str]) -> str | None:
    """The adapter a flat key list (``image_proj.*``/``ip_adapter.*``) holds, or None."""
    proj = {k[len("image_proj.") :] for k in keys if k.startswith("image_proj.")}
    if not proj or not any(k.startswith("ip_adapter.") for k in keys):
        return None
    if any(k.startswith("perceiver_resampler.") for k in proj):
        return FACEID_PLUS
    if "norm.weight" in proj:
        return FACEID
    if "latents" in proj:
        return INSTANTID
    return None


def identity_problems(ident: IdentityPass, *, allow_pickle: bool) -> list[EngineCannotHonour]:
    """Every reason the diffusers engine cannot run ``ident``, one per field (missing files,
    pickles without the flag, an adapter of the other method)."""
    if not ident.enabled:
        return []
    problems: list[EngineCannotHonour] = []
    for ref in ident.references:
        if not Path(ref).expanduser().is_file():
            problems.append(
                EngineCannotHonour(
                    "identity.references", ref, "is not a file; list existing reference photos"
                )
            )
    problems += _adapter_problems(ident, allow_pickle)
    if not ident.insightface:
        problems.append(
            EngineCannotHonour(
                "identity.insightface",
                "",
                "is empty; set the InsightFace model folder (buffalo_l or antelopev2, "
                "non-commercial licence; Likeness does not download it)",
            )
        )
    else:
        from likeness.faces import FaceModelMissing
        from likeness.faces.insightface_backend import find_models

        try:
            find_models(Path(ident.insightface))
        except FaceModelMissing as exc:
            problems.append(EngineCannotHonour("identity.insightface", ident.insightface, str(exc)))
    if ident.method == INSTANTID:
        problems += _controlnet_problems(ident.controlnet, allow_pickle)
    return problems


def _adapter_problems(ident: IdentityPass, allow_pickle: bool) -> list[EngineCannotHonour]:
    field, value = "identity.adapter", ident.adapter
    wanted = "InstantID ip-adapter" if ident.method == INSTANTID else "IP-Adapter FaceID"
    if not value:
        return [EngineCannotHonour(field, value, f"is empty; set the {wanted} weights file")]
    path = Path(value).expanduser()
    if not path.is_file():
        return [EngineCannotHonour(field, value, f"does not exist; pass the {wanted} file")]
    suffix = path.suffix.lower()
    if suffix in PICKLE_SUFFIXES:
        return [] if allow_pickle else [EngineCannotHonour(field, value, PICKLE_HINT)]
    if suffix != ".safetensors":
        return [EngineCannotHonour(field, value, "is not a .safetensors or .bin adapter file")]
    from likeness.engines.diffusers.loras import safetensors_keys

    try:
        kind = adapter_kind(safetensors_keys(path))
    except (OSError, ValueError) as exc:
        return [EngineCannotHonour(field, value, f"is not a readable safetensors file ({exc})")]
    return _kind_problems(kind, ident.method, value)


def _kind_problems(kind: str | None, method: str, value: str) -> list[EngineCannotHonour]:
    field = "identity.adapter"
    if kind is None:
        return [EngineCannotHonour(field, value, "holds no image_proj.* and ip_adapter.* weights")]
    if kind == FACEID_PLUS:
        return [
            EngineCannotHonour(
                field,
                value,
                "is an IP-Adapter FaceID Plus adapter, which the diffusers engine does not "
                "run; use the plain FaceID adapter (ip-adapter-faceid_sdxl)",
            )
        ]
    if kind != method:
        return [EngineCannotHonour(field, value, f"holds a {kind} adapter, not {method}")]
    return []


def controlnet_folder(value: str) -> Path:
    """The diffusers folder of a ControlNet given as the folder or as its weights file."""
    path = Path(value).expanduser()
    return path if path.is_dir() else path.parent


def _controlnet_problems(value: str, allow_pickle: bool) -> list[EngineCannotHonour]:
    field = "identity.controlnet"
    if not value:
        return [EngineCannotHonour(field, value, "is empty; set InstantID's ControlNet folder")]
    path = Path(value).expanduser()
    if not path.exists():
        return [EngineCannotHonour(field, value, "does not exist; pass InstantID's ControlNet")]
    folder = controlnet_folder(value)
    if not (folder / "config.json").is_file():
        return [
            EngineCannotHonour(
                field, value, f"has no config.json in {folder}; pass the diffusers folder"
            )
        ]
    weights = controlnet_weights(folder)
    if weights is None:
        return [EngineCannotHonour(field, value, "holds no diffusion_pytorch_model weights")]
    if weights.suffix in PICKLE_SUFFIXES and not allow_pickle:
        return [EngineCannotHonour(field, value, PICKLE_HINT)]
    return []


def controlnet_weights(folder: Path) -> Path | None:
    """The ControlNet's weights file in ``folder`` (safetensors preferred)."""
    for name in ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin"):
        if (folder / name).is_file():
            return folder / name
    return None


def read_adapter(path: str | Path, *, allow_pickle: bool) -> dict[str, dict[str, Any]]:
    """The nested ``{"image_proj": {...}, "ip_adapter": {...}}`` tensors of an adapter file."""
    path = Path(path).expanduser()
    if path.suffix.lower() == ".safetensors":
        from safetensors.torch import load_file

        return nest(load_file(str(path)))
    if not allow_pickle:
        raise EngineCannotHonour("identity.adapter", str(path), PICKLE_HINT)
    data = load_pickle(path)
    if not isinstance(data, Mapping) or not all(isinstance(data.get(s), Mapping) for s in SECTIONS):
        raise EngineCannotHonour(
            "identity.adapter", str(path), "does not hold image_proj and ip_adapter tables"
        )
    return {s: dict(data[s]) for s in SECTIONS}


def load_pickle(path: Path) -> Any:
    """``torch.load`` restricted to tensors and plain containers (no code runs)."""
    import torch

    try:
        return torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # an UnpicklingError naming the refused global, or a bad file
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ValueError(f"{path}: not a weights-only pickle ({first})") from exc


def nest(flat: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """``{"image_proj.x": t}`` -> ``{"image_proj": {"x": t}, "ip_adapter": {}}``."""
    out: dict[str, dict[str, Any]] = {s: {} for s in SECTIONS}
    for key, value in flat.items():
        section, _, rest = key.partition(".")
        if section in out and rest:
            out[section][rest] = value
    return out


def flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dicts of tensors -> one flat dict whose keys join the levels with ``.``.

    Raises ValueError naming the first value that is neither a tensor nor a dict."""
    import torch

    out: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten(value, f"{name}."))
        elif isinstance(value, torch.Tensor):
            if name in out:
                raise ValueError(f"{name}: two tensors flatten to the same name")
            out[name] = value
        else:
            raise ValueError(f"{name}: holds a {type(value).__name__}, not a tensor")
    return out


def convert_to_safetensors(source: str | Path, target: str | Path | None = None) -> Path:
    """Convert a pickle weights file (``.bin/.pt/.pth/.ckpt``) to ``.safetensors``.

    The file is read with ``torch.load(weights_only=True)``; nested dicts are flattened with
    ``.`` between levels (see :func:`flatten`); tensors that share storage are copied apart.
    ``target`` defaults to the source with the ``.safetensors`` suffix. Returns the target.

    Example:
        >>> convert_to_safetensors("ip-adapter.bin")  # doctest: +SKIP
        PosixPath('ip-adapter.safetensors')
    """
    from safetensors.torch import save_file

    source = Path(source).expanduser()
    target = Path(target).expanduser() if target is not None else source.with_suffix(".safetensors")
    if source.resolve() == target.resolve():
        raise ValueError(f"{target}: the output would overwrite the input; pass another -o")
    data = load_pickle(source)
    if not isinstance(data, Mapping):
        raise ValueError(f"{source}: holds a {type(data).__name__}, not a dict of tensors")
    if isinstance(data.get("state_dict"), Mapping) and len(data) <= 3:
        data = data["state_dict"]  # training checkpoints wrap the weights
    flat = flatten(data)
    if not flat:
        raise ValueError(f"{source}: holds no tensors")
    tensors = {k: v.detach().contiguous().clone() for k, v in flat.items()}
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp")
    save_file(tensors, str(tmp), metadata={"format": "pt", "converted_from": source.name})
    tmp.replace(target)
    return target
