"""Generation recipes: plain, validated, TOML-serialisable data that any engine can run.

A recipe says *what* to generate (model, LoRAs, prompt, sampler, optional passes); engines say
whether they can honour it (``Engine.check``) and then run it. Defaults are the working SDXL
recipe from practice: 832x1216, dpmpp_2m + karras, 30 steps, CFG 4.0, LoRA strength 0.7 and a
second sampling pass on the latent at denoise 0.25 for 15 steps.

Example::

    recipe = Recipe.from_toml_file("elena.toml").with_overrides({"cfg": 5, "loras.0.strength": 0.8})
    prompt = build_prompt(recipe)
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import math
import os
import re
import tempfile
import tomllib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ENGINES = ("diffusers", "comfyui", "replicate", "fal")
FAMILIES = ("sdxl", "flux", "sd15")
TRIGGER_PLACEMENTS = ("none", "start", "start_and_middle")
IDENTITY_METHODS = ("instantid", "ipadapter_faceid")
IDENTITY_REGIONS = ("face", "image")

# ComfyUI's KSampler names (comfy/samplers.py: KSAMPLER_NAMES + ddim, uni_pc, uni_pc_bh2).
SAMPLERS = (
    "euler",
    "euler_cfg_pp",
    "euler_ancestral",
    "euler_ancestral_cfg_pp",
    "heun",
    "heunpp2",
    "dpm_2",
    "dpm_2_ancestral",
    "lms",
    "dpm_fast",
    "dpm_adaptive",
    "dpmpp_2s_ancestral",
    "dpmpp_2s_ancestral_cfg_pp",
    "dpmpp_sde",
    "dpmpp_sde_gpu",
    "dpmpp_2m",
    "dpmpp_2m_cfg_pp",
    "dpmpp_2m_sde",
    "dpmpp_2m_sde_gpu",
    "dpmpp_3m_sde",
    "dpmpp_3m_sde_gpu",
    "ddpm",
    "lcm",
    "ipndm",
    "ipndm_v",
    "deis",
    "res_multistep",
    "res_multistep_cfg_pp",
    "gradient_estimation",
    "er_sde",
    "ddim",
    "uni_pc",
    "uni_pc_bh2",
)
# ComfyUI's scheduler names (comfy/samplers.py: SCHEDULER_NAMES).
SCHEDULERS = (
    "normal",
    "karras",
    "exponential",
    "sgm_uniform",
    "simple",
    "ddim_uniform",
    "beta",
    "linear_quadratic",
    "kl_optimal",
)

# ComfyUI sampler -> (diffusers scheduler class, extra config) for UNet (epsilon/v) models.
_DIFFUSERS_SAMPLERS: dict[str, tuple[str, dict[str, Any]]] = {
    "euler": ("EulerDiscreteScheduler", {}),
    "euler_ancestral": ("EulerAncestralDiscreteScheduler", {}),
    "heun": ("HeunDiscreteScheduler", {}),
    "dpm_2": ("KDPM2DiscreteScheduler", {}),
    "dpm_2_ancestral": ("KDPM2AncestralDiscreteScheduler", {}),
    "lms": ("LMSDiscreteScheduler", {}),
    "dpmpp_2m": ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++"}),
    "dpmpp_2m_sde": (
        "DPMSolverMultistepScheduler",
        {"algorithm_type": "sde-dpmsolver++", "solver_order": 2},
    ),
    "dpmpp_3m_sde": (
        "DPMSolverMultistepScheduler",
        {"algorithm_type": "sde-dpmsolver++", "solver_order": 3},
    ),
    "dpmpp_sde": ("DPMSolverSDEScheduler", {}),
    "ddim": ("DDIMScheduler", {}),
    "ddpm": ("DDPMScheduler", {}),
    "uni_pc": ("UniPCMultistepScheduler", {"solver_type": "bh1"}),
    "uni_pc_bh2": ("UniPCMultistepScheduler", {"solver_type": "bh2"}),
    "deis": ("DEISMultistepScheduler", {}),
    "lcm": ("LCMScheduler", {}),
}
# ComfyUI scheduler -> extra diffusers config. Karras/exponential/beta replace the sigma schedule;
# sgm_uniform is "trailing" timestep spacing; normal and simple are diffusers' defaults.
_DIFFUSERS_SCHEDULES: dict[str, dict[str, Any]] = {
    "normal": {},
    "simple": {},
    "karras": {"use_karras_sigmas": True},
    "exponential": {"use_exponential_sigmas": True},
    "beta": {"use_beta_sigmas": True},
    "sgm_uniform": {"timestep_spacing": "trailing"},
}
# Schedulers whose classes do not take a sigma-schedule switch.
_NO_SIGMA_SWITCH = {
    "DDIMScheduler",
    "DDPMScheduler",
    "LCMScheduler",
    "KDPM2AncestralDiscreteScheduler",
}


class EngineInputs(Mapping[str, Mapping[str, Any]]):
    """Per-engine inputs the recipe has no field for, ``{engine: {input: value}}`` with scalar
    values, e.g. ``{"replicate": {"megapixels": "1"}}`` (TOML ``[engine_inputs.replicate]``).

    Read-only and hashable, so a recipe stays a frozen value; the engine named by the key sends
    them as they are, and checks them (see :mod:`likeness.engines.hosted`).
    """

    def __init__(self, data: Mapping[str, Mapping[str, Any]] | None = None) -> None:
        self._items = tuple(
            sorted((str(k), tuple(sorted(dict(v).items()))) for k, v in (data or {}).items())
        )

    def __getitem__(self, key: str) -> Mapping[str, Any]:
        for name, values in self._items:
            if name == key:
                return types.MappingProxyType(dict(values))
        raise KeyError(key)

    def __iter__(self) -> typing.Iterator[str]:
        return iter(name for name, _ in self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __hash__(self) -> int:
        return hash(self._items)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Mapping):
            return _plain(self) == _plain(other)
        return NotImplemented

    def __repr__(self) -> str:
        return f"EngineInputs({_plain(self)!r})"


class RecipeError(ValueError):
    """A recipe field holds a value that cannot be used; names the field, the value and a fix."""

    def __init__(self, field_name: str, value: Any, message: str) -> None:
        self.field = field_name
        self.value = value
        self.message = message
        super().__init__(f"{field_name}: {value!r} {message}")


@dataclass(frozen=True)
class LoraSpec:
    """One LoRA: a file (diffusers engine) or a name on the server (ComfyUI), and a strength."""

    path: str
    strength: float = 0.7


@dataclass(frozen=True)
class RefinerPass:
    """A second sampling pass on the first pass's *latent* (img2img at ``denoise``)."""

    enabled: bool = True
    denoise: float = 0.25
    steps: int = 15


@dataclass(frozen=True)
class DetailerPass:
    """Re-sample the subject's face at ``guide_size`` and paste it back with a feathered mask.

    ``padding`` is added on each side of the detected face box, as a fraction of its size
    (1.0 crops a region three times the box, like Impact Pack's crop_factor 3); ``feather``
    is the width in pixels of the blended border when pasting back.
    """

    enabled: bool = False
    denoise: float = 0.4
    steps: int = 20
    guide_size: int = 512
    padding: float = 1.0
    feather: int = 5


@dataclass(frozen=True)
class UpscalePass:
    """Upscale the final image: with an upscaler model file (spandrel) when ``model`` is set,
    else a plain Lanczos resize by ``factor``. With a model, ``factor`` is the final scale."""

    enabled: bool = False
    model: str = ""
    factor: float = 4.0


@dataclass(frozen=True)
class IdentityPass:
    """An identity fix on the finished image, after the base (+ refiner) pass and before the
    detailer and upscale: InstantID or IP-Adapter FaceID conditioned on the ArcFace embedding
    of the ``references`` (face-cropped automatically), re-sampling ``region`` at ``denoise``.

    Practice: InstantID applied after the LoRA pass, as its own step on the face (weight
    0.85, a face-only reference) lifted face similarity from about 85% to 95%; LoRA and FaceID
    together during sampling gave plastic faces. So the pass runs on the base model (LoRAs
    off).

    ``region = "face"`` re-samples the subject's face box plus ``padding`` (a fraction of the
    box, as the detailer's) at ``guide_size`` and pastes it back with a feathered edge: the
    rest of the image is untouched; ``"image"`` re-samples the whole image. ``adapter`` is the
    adapter weights file (``ip-adapter.bin``-style for InstantID, ``ip-adapter-faceid*`` for
    FaceID), ``controlnet`` InstantID's ControlNet (a diffusers folder, or its
    ``diffusion_pytorch_model.safetensors``), ``insightface`` the InsightFace model folder
    (buffalo_l / antelopev2 layout, non-commercial licence) whose ArcFace embedding the
    adapters read, ``image_encoder`` the CLIP vision model the FaceID Plus variants (and
    ComfyUI's FaceID node) need. Files are local paths for the diffusers engine; on ComfyUI
    they are matched by file name against the server's folders.

    Older recipe files call ``method`` ``kind``; both read the same.
    """

    enabled: bool = False
    method: str = "instantid"
    weight: float = 0.85
    references: tuple[str, ...] = ()
    region: str = "face"
    padding: float = 1.0
    guide_size: int = 1024
    denoise: float = 0.4
    steps: int = 20
    adapter: str = ""
    controlnet: str = ""
    insightface: str = ""
    image_encoder: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "references", tuple(self.references))


@dataclass(frozen=True)
class Recipe:
    """Everything needed to generate images, whatever engine runs it.

    ``seed = -1`` means "pick one at run time" (the chosen seed is recorded in provenance);
    image ``i`` of a run uses ``seed + i``. ``cfg`` is the guidance scale (FLUX's distilled
    guidance for ``family = "flux"``). ``batch`` is how many images one engine call makes.
    """

    engine: str = "diffusers"
    model: str = ""
    family: str = "sdxl"
    loras: tuple[LoraSpec, ...] = ()
    prompt: str = ""
    negative: str = ""
    trigger: str = ""
    trigger_placement: str = "start_and_middle"
    width: int = 832
    height: int = 1216
    sampler: str = "dpmpp_2m"
    scheduler: str = "karras"
    steps: int = 30
    cfg: float = 4.0
    seed: int = -1
    batch: int = 1
    refiner: RefinerPass = field(default_factory=RefinerPass)
    detailer: DetailerPass = field(default_factory=DetailerPass)
    upscale: UpscalePass = field(default_factory=UpscalePass)
    identity: IdentityPass = field(default_factory=IdentityPass)
    engine_inputs: EngineInputs = field(default_factory=EngineInputs)
    """Inputs for one engine that no field above carries (``[engine_inputs.replicate]``)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "loras", tuple(self.loras))
        if not isinstance(self.engine_inputs, EngineInputs):
            object.__setattr__(self, "engine_inputs", EngineInputs(self.engine_inputs))
        validate(self)

    # -- conversion ---------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Plain dict of lists/dicts/scalars, the shape written to TOML. An empty
        ``engine_inputs`` is left out, so recipes without one keep the hash they had."""
        data = _plain(self)
        if not data["engine_inputs"]:
            del data["engine_inputs"]
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Recipe:
        """Build and validate a recipe from plain data; missing fields take their defaults."""
        return _build(cls, data, "")

    def to_toml(self) -> str:
        import tomli_w

        return tomli_w.dumps(self.to_dict())

    @classmethod
    def from_toml(cls, text: str, source: str = "recipe") -> Recipe:
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise RecipeError(source, "", f"is not valid TOML ({exc}); fix the syntax") from exc
        return cls.from_dict(data)

    @classmethod
    def from_toml_file(cls, path: str | Path) -> Recipe:
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise RecipeError(
                "recipe", str(path), "does not exist; pass an existing TOML file"
            ) from None
        except UnicodeDecodeError:
            raise RecipeError(
                "recipe", str(path), "is not UTF-8 text; pass a TOML recipe file"
            ) from None
        except OSError as exc:
            raise RecipeError(
                "recipe", str(path), f"cannot be read ({exc.strerror or exc}); pass a TOML file"
            ) from None
        return cls.from_toml(text, source=str(path))

    def write_toml(self, path: str | Path) -> None:
        """Write the recipe as TOML; a kill mid-write leaves the previous file whole."""
        write_text_atomic(path, self.to_toml())

    # -- changes ------------------------------------------------------------------------
    def with_overrides(self, overrides: Mapping[str, Any]) -> Recipe:
        """A new recipe with dotted keys replaced: ``{"cfg": 5, "loras.0.strength": 0.8}``.

        String values for non-string fields are parsed as TOML values (``"5"`` -> 5,
        ``"true"`` -> True, ``"[]"`` -> []), so ``--set key=value`` can pass them through.
        ``loras.N.*`` with N equal to the number of LoRAs appends a new one.
        """
        data = self.to_dict()
        data.setdefault("engine_inputs", {})
        for key, value in overrides.items():
            if key.startswith("engine_inputs.") and isinstance(value, str):
                value = _parse_str(value)  # --set engine_inputs.fal.x=true; '"1"' stays a string
            _assign(data, key, value)
        return Recipe.from_dict(data)

    def recipe_hash(self) -> str:
        """Stable sha256 (hex) of the recipe's canonical JSON form."""
        canonical = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode("utf-8")).hexdigest()

    def require_model(self) -> None:
        """Raise when no model is set (a recipe can be built without one, not run)."""
        if not self.model.strip():
            raise RecipeError(
                "model", self.model, "is empty; set a checkpoint file, folder or server name"
            )


def write_text_atomic(path: str | Path, text: str) -> None:
    """Replace ``path`` with ``text`` (UTF-8) in one step: write a temporary file beside it,
    flush it to disk, then rename it over the old one."""
    target = Path(path)
    try:
        mode = target.stat().st_mode & 0o777  # keep the file's permissions
    except FileNotFoundError:
        mode = 0o644  # mkstemp's 0600 would hide a new recipe from other users
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        os.chmod(tmp, mode)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# -- prompt builder ---------------------------------------------------------------------
def build_prompt(recipe: Recipe) -> str:
    """The prompt the engine sends, with the trigger placed as ``trigger_placement`` says.

    Every copy of the trigger already in the prompt is removed first, then: ``start`` puts it
    first; ``start_and_middle`` also inserts "<trigger> portrait" at the middle of the
    comma-separated phrases (it reinforces likeness); ``none`` leaves the prompt untouched.
    """
    return place_trigger(recipe.prompt, recipe.trigger, recipe.trigger_placement)


def place_trigger(prompt: str, trigger: str, placement: str) -> str:
    """Pure form of :func:`build_prompt`. ``place_trigger("a man, park", "zk1", "start")``."""
    trigger = trigger.strip()
    if placement == "none" or not trigger:
        return prompt
    pattern = re.compile(r"(?<![\w-])" + re.escape(trigger) + r"(?![\w-])")
    phrases = [re.sub(r"\s+", " ", p.strip()) for p in prompt.split(",")]
    # The phrase this function inserts is removed whole, so placing twice changes nothing.
    phrases = [p for p in phrases if p != f"{trigger} portrait"]
    phrases = [re.sub(r"\s+", " ", pattern.sub("", p)).strip() for p in phrases]
    phrases = [p for p in phrases if p]
    if placement == "start":
        return ", ".join([trigger, *phrases])
    middle = (len(phrases) + 1) // 2
    return ", ".join([trigger, *phrases[:middle], f"{trigger} portrait", *phrases[middle:]])


# -- diffusers mapping ------------------------------------------------------------------
def diffusers_scheduler(sampler: str, scheduler: str, family: str = "sdxl") -> tuple[str, dict]:
    """Map ComfyUI's sampler + scheduler names to a diffusers scheduler class name and config.

    ``diffusers_scheduler("dpmpp_2m", "karras")`` -> ``("DPMSolverMultistepScheduler",
    {"algorithm_type": "dpmsolver++", "use_karras_sigmas": True})``.
    FLUX is a flow-matching model: only ``euler`` (FlowMatchEulerDiscreteScheduler) applies.
    Raises :class:`RecipeError` naming the field that has no diffusers counterpart.
    """
    if scheduler not in _DIFFUSERS_SCHEDULES:
        raise RecipeError(
            "scheduler",
            scheduler,
            f"has no diffusers counterpart; use one of {', '.join(_DIFFUSERS_SCHEDULES)}",
        )
    schedule = dict(_DIFFUSERS_SCHEDULES[scheduler])
    if family == "flux":
        if sampler != "euler":
            raise RecipeError(
                "sampler", sampler, "is not available for flux in diffusers; use 'euler'"
            )
        if scheduler == "sgm_uniform":
            raise RecipeError(
                "scheduler", scheduler, "is not available for flux in diffusers; use 'simple'"
            )
        return "FlowMatchEulerDiscreteScheduler", schedule
    if sampler not in _DIFFUSERS_SAMPLERS:
        raise RecipeError(
            "sampler",
            sampler,
            f"has no diffusers counterpart; use one of {', '.join(_DIFFUSERS_SAMPLERS)}",
        )
    class_name, config = _DIFFUSERS_SAMPLERS[sampler]
    config = dict(config)
    if class_name in _NO_SIGMA_SWITCH and any(k.startswith("use_") for k in schedule):
        raise RecipeError(
            "scheduler",
            scheduler,
            f"cannot be combined with sampler {sampler!r} in diffusers; use 'normal'",
        )
    config.update(schedule)
    return class_name, config


# -- validation -------------------------------------------------------------------------
def validate(recipe: Recipe) -> None:
    """Raise :class:`RecipeError` for the first field that cannot be used."""
    _choice("engine", recipe.engine, ENGINES)
    _choice("family", recipe.family, FAMILIES)
    _choice("trigger_placement", recipe.trigger_placement, TRIGGER_PLACEMENTS)
    _choice("sampler", recipe.sampler, SAMPLERS)
    _choice("scheduler", recipe.scheduler, SCHEDULERS)
    for name in ("width", "height"):
        value = getattr(recipe, name)
        if value < 64 or value > 8192 or value % 8:
            raise RecipeError(name, value, "must be a multiple of 8 between 64 and 8192")
    _int_range("steps", recipe.steps, 1, 1000)
    _float_range("cfg", recipe.cfg, 0.0, 100.0)
    if recipe.seed < -1 or recipe.seed > 2**64 - 1:
        raise RecipeError("seed", recipe.seed, "must be -1 (random) or between 0 and 2**64-1")
    _int_range("batch", recipe.batch, 1, 64)
    for index, lora in enumerate(recipe.loras):
        if not lora.path.strip():
            raise RecipeError(f"loras.{index}.path", lora.path, "is empty; set a file or name")
        _float_range(f"loras.{index}.strength", lora.strength, -20.0, 20.0)
    _float_range("refiner.denoise", recipe.refiner.denoise, 0.0, 1.0, low_open=True)
    _int_range("refiner.steps", recipe.refiner.steps, 1, 1000)
    d = recipe.detailer
    _float_range("detailer.denoise", d.denoise, 0.0, 1.0, low_open=True)
    _int_range("detailer.steps", d.steps, 1, 1000)
    if d.guide_size < 64 or d.guide_size > 4096 or d.guide_size % 8:
        raise RecipeError(
            "detailer.guide_size", d.guide_size, "must be a multiple of 8 between 64 and 4096"
        )
    _float_range("detailer.padding", d.padding, 0.0, 10.0)
    _int_range("detailer.feather", d.feather, 0, 512)
    _float_range("upscale.factor", recipe.upscale.factor, 0.0, 16.0, low_open=True)
    for engine, values in recipe.engine_inputs.items():
        _choice(f"engine_inputs.{engine}", engine, ENGINES)
        for key, value in values.items():
            if isinstance(value, float) and not math.isfinite(value):
                raise RecipeError(f"engine_inputs.{engine}.{key}", value, "must be finite")
    ident = recipe.identity
    _choice("identity.method", ident.method, IDENTITY_METHODS)
    _float_range("identity.weight", ident.weight, 0.0, 5.0)
    _choice("identity.region", ident.region, IDENTITY_REGIONS)
    _float_range("identity.padding", ident.padding, 0.0, 10.0)
    if ident.guide_size < 64 or ident.guide_size > 4096 or ident.guide_size % 8:
        raise RecipeError(
            "identity.guide_size", ident.guide_size, "must be a multiple of 8 between 64 and 4096"
        )
    _float_range("identity.denoise", ident.denoise, 0.0, 1.0, low_open=True)
    _int_range("identity.steps", ident.steps, 1, 1000)
    if ident.enabled and not ident.references:
        raise RecipeError(
            "identity.references", list(ident.references), "is empty; list reference face images"
        )


def _choice(name: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        close = difflib.get_close_matches(str(value), allowed, n=1)
        if close:
            raise RecipeError(name, value, f"is not a known value; did you mean {close[0]!r}?")
        raise RecipeError(name, value, f"is not one of {', '.join(allowed)}")


def _int_range(name: str, value: int, low: int, high: int) -> None:
    if not low <= value <= high:
        raise RecipeError(name, value, f"must be between {low} and {high}")


def _float_range(
    name: str, value: float, low: float, high: float, *, low_open: bool = False
) -> None:
    ok = math.isfinite(value) and (low < value if low_open else low <= value) and value <= high
    if not ok:
        bracket = "(" if low_open else "["
        raise RecipeError(name, value, f"must be in {bracket}{low}, {high}]")


# -- plain data <-> dataclasses ---------------------------------------------------------
def _plain(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj):
        return {f.name: _plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, Mapping):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, tuple | list):
        return [_plain(v) for v in obj]
    return obj


def _build(cls: type, data: Any, prefix: str) -> Any:
    where = prefix.rstrip(".") or "recipe"
    if not isinstance(data, Mapping):
        raise RecipeError(where, data, "must be a table of fields")
    data = dict(data)
    if cls is LoraSpec and "name" in data and "path" not in data:
        data["path"] = data.pop("name")
    if cls is IdentityPass and "kind" in data and "method" not in data:
        data["method"] = data.pop("kind")  # the field's name in older recipe files
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        if key not in names:
            close = difflib.get_close_matches(key, names, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else f"; known: {', '.join(names)}"
            raise RecipeError(f"{prefix}{key}", value, f"is not a recipe field{hint}")
        kwargs[key] = _coerce(hints[key], value, f"{prefix}{key}")
    for f in dataclasses.fields(cls):
        required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        if required and f.name not in kwargs:
            raise RecipeError(f"{prefix}{f.name}", "", "is missing; it has no default")
    return cls(**kwargs)


def _coerce(hint: Any, value: Any, name: str) -> Any:
    origin = typing.get_origin(hint)
    if hint is EngineInputs:
        return _engine_inputs(_parse_str(value), name)
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        if isinstance(value, hint):
            value = _plain(value)
        return _build(hint, _parse_str(value), f"{name}.")
    if origin is tuple:
        value = _parse_str(value)
        if not isinstance(value, list | tuple):
            raise RecipeError(name, value, "must be a list")
        (item,) = {a for a in typing.get_args(hint) if a is not Ellipsis}
        return tuple(_coerce(item, v, f"{name}.{i}") for i, v in enumerate(value))
    if origin in (typing.Union, types.UnionType):
        raise TypeError(f"unsupported recipe field type {hint}")
    if hint is bool:
        value = _parse_str(value)
        if not isinstance(value, bool):
            raise RecipeError(name, value, "must be true or false")
        return value
    if hint is int:
        value = _parse_str(value)
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise RecipeError(name, value, "must be a whole number")
        return value
    if hint is float:
        value = _parse_str(value)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise RecipeError(name, value, "must be a number")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise RecipeError(name, value, "must be a string")
        return value
    raise TypeError(f"unsupported recipe field type {hint}")


def _engine_inputs(value: Any, name: str) -> EngineInputs:
    """``{engine: {input: scalar}}``; values are strings, numbers or booleans."""
    if not isinstance(value, Mapping):
        raise RecipeError(name, value, "must be a table of engine tables")
    for engine, values in value.items():
        if not isinstance(values, Mapping):
            raise RecipeError(f"{name}.{engine}", values, "must be a table of input = value")
        for key, item in values.items():
            if not isinstance(item, str | int | float | bool):
                raise RecipeError(
                    f"{name}.{engine}.{key}", item, "must be a string, number or true/false"
                )
    return EngineInputs(value)


def _parse_str(value: Any) -> Any:
    """Parse a string as a TOML value ("5" -> 5, "true" -> True); other values pass through."""
    if not isinstance(value, str):
        return value
    try:
        return tomllib.loads(f"v = {value}")["v"]
    except tomllib.TOMLDecodeError:
        return value


def _assign(data: dict[str, Any], key: str, value: Any) -> None:
    if key == "identity.kind":
        key = "identity.method"  # the field's name in older recipes
    parts = key.split(".")
    target: Any = data
    for depth, part in enumerate(parts[:-1]):
        here = ".".join(parts[: depth + 1])
        if isinstance(target, list):
            index = _index(part, here, len(target))
            if index == len(target):
                target.append({})
            target = target[index]
        elif isinstance(target, dict):
            if part not in target and depth == 1 and parts[0] == "engine_inputs":
                target[part] = {}
            if part not in target:
                raise _unknown(here, value, list(target))
            target = target[part]
        else:
            raise RecipeError(here, target, "is not a table; cannot set a sub-field")
    last = parts[-1]
    if isinstance(target, list):
        index = _index(last, key, len(target))
        if index == len(target):
            target.append(value)
        else:
            target[index] = value
    elif isinstance(target, dict):
        if last not in target and not (
            (len(parts) >= 3 and parts[0] == "loras")
            or (len(parts) == 3 and parts[0] == "engine_inputs")
        ):
            raise _unknown(key, value, list(target))
        target[last] = value
    else:
        raise RecipeError(key, value, "has no parent table")


def _index(part: str, where: str, length: int) -> int:
    if not part.isdigit() or int(part) > length:
        raise RecipeError(where, part, f"is not a valid index; use 0..{length}")
    return int(part)


def _unknown(key: str, value: Any, known: list[str]) -> RecipeError:
    leaf = key.rsplit(".", 1)[-1]
    close = difflib.get_close_matches(leaf, known, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else f"; known: {', '.join(known)}"
    return RecipeError(key, value, f"is not a recipe field{hint}")
