"""Typed workspace settings, read from and written to `likeness.toml`.

The defaults are what practitioners learned the hard way (see FIELD_NOTES.md): a rare made-up
trigger token, deduplicated data, rank 64 for faces, bf16 at a low learning rate with warmup,
and a model card that must pass at 80% on the first try.
"""

from __future__ import annotations

import dataclasses
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import tomli_w

TriggerPlacement = Literal["start", "end", "none"]
SETTINGS_FILE = "likeness.toml"


class SettingsError(ValueError):
    """A settings file or value that cannot be used; the message names the key and the fix."""


@dataclass(frozen=True)
class CharacterSettings:
    """Who this workspace is about."""

    name: str = "character"
    trigger: str = ""
    """Rare made-up token bound to the character by training; a common word keeps its old meaning."""
    class_word: str = "person"
    """The class the character belongs to (`woman`, `man`, `person`), used in captions."""


@dataclass(frozen=True)
class IngestSettings:
    max_pixels: int = 100_000_000
    """Images with more pixels are refused before decoding (decompression bombs)."""
    max_file_bytes: int = 256 * 1024 * 1024
    progress_after: int = 5
    """Show a progress bar when a batch has more files than this."""


@dataclass(frozen=True)
class DedupSettings:
    phash_max_distance: int = 10
    """Hamming distance (of 64 bits) at or below which two images are near duplicates. Measured
    on the sample photos: JPEG q60, 50% resize and colour shifts 0-2, a centred 5% crop 2-10,
    different photos (even of one person) 20 and more."""
    dhash_max_distance: int = 12
    """Second opinion from the gradient hash; both must agree so that two photos of the same
    person taken seconds apart are not grouped."""


@dataclass(frozen=True)
class CaptionSettings:
    template: str = "photo of {class_word}"
    """Caption body; `{trigger}` may appear in it, or the trigger is placed per `trigger_placement`.
    Fields: {trigger}, {class_word}, {name}."""
    trigger_placement: TriggerPlacement = "start"


@dataclass(frozen=True)
class ExportSettings:
    repeats: int = 10
    """kohya folder repeats: `<repeats>_<trigger> <class>`."""


@dataclass(frozen=True)
class IdentitySettings:
    distance_threshold: float = 0.6
    """dlib's documented same-person distance for its 128-D descriptor."""
    pass_match: float = 5.0
    """Match score (0-10) at or above which an image passes identity. 5.0 is the backend's
    same-person distance (dlib 0.6) by the calibration in docs/metrics.md; raise it to demand
    a closer likeness (practitioners aim at 8+ for a finished character)."""


@dataclass(frozen=True)
class TrainingSettings:
    network_rank: int = 64
    """Rank 32 learned the body but not the face; 64 is recommended for faces."""
    network_alpha: int = 32
    mixed_precision: Literal["bf16", "fp16", "no"] = "bf16"
    """fp16 gave NaN loss from step 1 at lr 1e-4; bf16 trained stably."""
    learning_rate: float = 5e-5
    warmup_steps: int = 200
    stop_on_nan: bool = True


@dataclass(frozen=True)
class CardSettings:
    first_try_goal: float = 0.8
    """Share of the 23 model-card shots that must pass on the first try."""
    tries: int = 3


@dataclass(frozen=True)
class LoopSettings:
    train_recipe: str = ""
    """Train recipe `likeness loop` trains each new dataset version with (relative to the
    workspace); empty: the loop waits for training unless --train-recipe names one."""


@dataclass(frozen=True)
class ComfyUISettings:
    url: str = "http://127.0.0.1:8188"


@dataclass(frozen=True)
class HostedSettings:
    """Hosted engines (Replicate, fal): where their APIs are, how hard to poll, what a run may
    spend. Tokens are never kept here: they come from REPLICATE_API_TOKEN / FAL_KEY or the OS
    keyring (see docs/hosted.md)."""

    max_images: int = 0
    """Stop a command before it submits more than this many predictions (0: no limit)."""
    max_cost: float = 0.0
    """Stop a command before its estimated spend passes this many USD (0: no limit)."""
    prices: dict[str, str] = field(
        default_factory=lambda: {
            "replicate:black-forest-labs/flux-dev-lora": "0.032/image",
            "fal:fal-ai/flux-lora": "0.035/megapixel",
            "replicate:ostris/flux-dev-lora-trainer": "0.001528/second",
            "fal:fal-ai/flux-lora-fast-training": "0.002/step",
        }
    )
    """USD per unit (image, megapixel, second, step, run) for cost estimates, which are marked
    as estimated: neither API reports a price. Check current pricing and edit."""
    replicate_url: str = "https://api.replicate.com"
    fal_queue_url: str = "https://queue.fal.run"
    fal_rest_url: str = "https://rest.fal.ai"
    poll_interval: float = 1.0
    """First pause between status polls; it grows 1.5x per poll up to poll_max_interval."""
    poll_max_interval: float = 10.0
    timeout: float = 1800.0
    """Seconds a prediction may take (queue included) before it is cancelled."""
    wait: int = 0
    """Replicate: hold the create request open up to this many seconds (Prefer: wait); 0 polls."""

    def __post_init__(self) -> None:
        if not isinstance(self.prices, dict):
            raise SettingsError(f"hosted.prices: expected a table, got {self.prices!r}")
        for key, value in self.prices.items():
            parse_price(value, f"hosted.prices.{key}")
        if self.max_images < 0 or self.max_cost < 0:
            raise SettingsError("hosted.max_images / max_cost: must be 0 (no limit) or more")


SCALE_ADDRESSES = ("", "local", "auto")


@dataclass(frozen=True)
class ScaleSettings:
    """Fanning one run out over several GPUs or ComfyUI servers with Ray (docs/scale.md).

    Left at these defaults, every command runs in its own process as before and never
    imports Ray; ``--workers``, ``--comfy-url`` (repeated) and ``--ray`` ask for it per run."""

    address: str = ""
    """Where Ray is: "" (no Ray), "local" (start one on this machine for the run), "auto"
    (the cluster this machine joined with `ray start`) or "HOST:PORT" of a cluster's head."""
    workers: int = 0
    """diffusers and score workers (0: one per GPU of the cluster, or one per CPU to score)."""
    comfy_urls: list[str] = field(default_factory=list)
    """ComfyUI servers, one worker each (the comfyui engine then ignores comfyui.url)."""
    gpus_per_worker: float = 1.0
    """GPUs each diffusers worker holds when the cluster has GPUs (0.5: two per GPU)."""
    max_retries: int = 2
    """How often a task whose worker died (or whose server went away) is tried on another."""
    reconnect_attempts: int = 3
    """Connection attempts a ComfyUI worker makes before its server counts as gone."""

    def __post_init__(self) -> None:
        if not isinstance(self.address, str) or (
            self.address not in SCALE_ADDRESSES and ":" not in self.address
        ):
            raise SettingsError(
                f'scale.address: {self.address!r} is not one of "", "local", "auto" '
                "or HOST:PORT of a Ray head"
            )
        if not isinstance(self.comfy_urls, list) or not all(
            isinstance(u, str) and u.startswith(("http://", "https://")) for u in self.comfy_urls
        ):
            raise SettingsError(
                f"scale.comfy_urls: {self.comfy_urls!r} must be a list of http(s):// URLs"
            )
        if self.workers < 0 or self.max_retries < 0 or self.reconnect_attempts < 1:
            raise SettingsError(
                "scale.workers / max_retries / reconnect_attempts: must be 0 or more "
                "(reconnect_attempts 1 or more)"
            )
        if self.gpus_per_worker <= 0:
            raise SettingsError(
                f"scale.gpus_per_worker: {self.gpus_per_worker} must be more than 0"
            )


PRICE_UNITS = ("image", "megapixel", "second", "step", "run")


def parse_price(text: Any, where: str = "price") -> tuple[float, str]:
    """``"0.032/image"`` -> ``(0.032, "image")``; units are those of PRICE_UNITS."""
    amount, _, unit = str(text).partition("/")
    try:
        usd = float(amount)
    except ValueError:
        usd = -1.0
    if not isinstance(text, str) or usd < 0 or unit not in PRICE_UNITS:
        raise SettingsError(
            f'{where}: {text!r} is not a price; write USD/unit, e.g. "0.032/image" '
            f"(units: {', '.join(PRICE_UNITS)})"
        )
    return usd, unit


@dataclass(frozen=True)
class Settings:
    """Everything in `likeness.toml`; every section and key is optional in the file."""

    character: CharacterSettings = field(default_factory=CharacterSettings)
    ingest: IngestSettings = field(default_factory=IngestSettings)
    dedup: DedupSettings = field(default_factory=DedupSettings)
    captions: CaptionSettings = field(default_factory=CaptionSettings)
    export: ExportSettings = field(default_factory=ExportSettings)
    identity: IdentitySettings = field(default_factory=IdentitySettings)
    training: TrainingSettings = field(default_factory=TrainingSettings)
    card: CardSettings = field(default_factory=CardSettings)
    comfyui: ComfyUISettings = field(default_factory=ComfyUISettings)
    hosted: HostedSettings = field(default_factory=HostedSettings)
    scale: ScaleSettings = field(default_factory=ScaleSettings)
    loop: LoopSettings = field(default_factory=LoopSettings)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def replace(self, **sections: Any) -> Settings:
        return dataclasses.replace(self, **sections)


def settings_from_dict(data: dict[str, Any], source: str = "settings") -> Settings:
    """Build settings from parsed TOML, refusing unknown keys and wrongly typed values."""
    return _build(Settings, data, source)


def load_settings(path: Path) -> Settings:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise SettingsError(f"{path}: not valid TOML ({exc}); fix the syntax") from exc
    return settings_from_dict(data, str(path))


def save_settings(settings: Settings, path: Path) -> None:
    """Replace `path` with `settings` in one step (as recipe files are written), so a crash
    never leaves a half-written settings file."""
    from likeness.recipes import write_text_atomic

    text = "# Likeness workspace settings. Every key is optional; defaults are shown.\n"
    text += tomli_w.dumps(settings.to_dict())
    write_text_atomic(path, text)


def _build(cls: type, data: Any, where: str) -> Any:
    if not isinstance(data, dict):
        raise SettingsError(f"{where}: expected a table, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - fields)
    if unknown:
        raise SettingsError(
            f"{where}: unknown key {unknown[0]!r}; known keys: {', '.join(sorted(fields))}"
        )
    values = {}
    for name, value in data.items():
        values[name] = _coerce(hints[name], value, f"{where}.{name}")
    return cls(**values)


def _coerce(hint: Any, value: Any, where: str) -> Any:
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, where)
    origin = typing.get_origin(hint)
    if origin is Literal:
        allowed = typing.get_args(hint)
        if value not in allowed:
            choices = ", ".join(repr(a) for a in allowed)
            raise SettingsError(f"{where}: {value!r} is not one of {choices}")
        return value
    if origin in (types.UnionType, typing.Union):
        return value
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint in (int, float, str, bool) and (
        not isinstance(value, hint) or (hint is int and isinstance(value, bool))
    ):
        raise SettingsError(f"{where}: expected {hint.__name__}, got {value!r}")
    return value
