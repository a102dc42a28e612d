"""Server settings, read from `<root>/serve.toml`: what the admin shares with every user
(model folders, engines) and the quotas a user gets unless `likeness serve user quota` says
otherwise. Every key is optional; a missing file means the defaults.

Example `serve.toml`::

    [serve]
    shared_models = ["/srv/models"]          # checkpoints every user may name
    engines = ["diffusers", "comfyui"]       # what the browser offers
    comfy_url = "http://127.0.0.1:8188"
    hosts = ["studio.example.com"]           # Host headers this server answers to

    [quota]
    images = 5000
    disk_bytes = 21474836480                 # 20 GiB
"""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from likeness.config import SettingsError, _build
from likeness.engines import ENGINE_NAMES

SERVE_FILE = "serve.toml"
GIB = 1024**3


@dataclass(frozen=True)
class ServeSection:
    """`[serve]`: what is shared, which engines run, how sessions and workers behave."""

    shared_models: list[str] = field(default_factory=list)
    """Folders of model files (checkpoints, VAEs, upscalers, identity adapters) every user may
    name in a recipe. A user's own LoRAs live in their own folder, never here."""
    engines: list[str] = field(default_factory=lambda: ["diffusers"])
    """Engines users may run: diffusers, comfyui, replicate, fal."""
    engine_factories: dict[str, str] = field(default_factory=dict)
    """How an engine is built, by import path, instead of the default:
    `diffusers = "package.module:factory"`; `factory()` returns an object following
    `likeness.engines.Engine` (e.g. a diffusers engine with options of your own)."""
    comfy_url: str = ""
    """The ComfyUI server for engine comfyui."""
    device: str = ""
    """diffusers: cuda, mps or cpu (empty: the best there is)."""
    hosts: list[str] = field(default_factory=list)
    """Host names this server answers to (the name in the browser's address bar). Empty: any
    Host when listening beyond loopback, only loopback names on 127.0.0.1."""
    allowed_origins: list[str] = field(default_factory=list)
    """Extra browser origins (`https://studio.example.com`) allowed to change things besides
    the server's own Host."""
    cookie_secure: bool = True
    """Session cookies only travel over HTTPS (and to localhost). Turn off only for a
    plain-HTTP test server on a private network."""
    session_hours: float = 12.0
    """A session ends this long after sign-in, whatever the activity."""
    workers: int = 1
    """Jobs run at once (one per GPU is the usual choice)."""
    worker_mode: str = "process"
    """process: jobs run in a separate process, so scoring and generation never slow the
    pages; thread: in the server process (small installs, tests)."""
    worker_nice: int = 10
    """process workers: how much lower their CPU priority is than the server's (Unix nice):
    generation is batch work, and pages must not wait for it."""
    release_between_users: bool = True
    """Free an engine's models (and every LoRA loaded into it) before it runs another user's
    job: no user's job ever runs on a pipeline that held another user's LoRA."""

    def __post_init__(self) -> None:
        for name in ("shared_models", "engines", "hosts", "allowed_origins"):
            value = getattr(self, name)
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise SettingsError(f"serve.{name}: expected a list of strings, got {value!r}")
        if not isinstance(self.engine_factories, dict):
            raise SettingsError(
                f"serve.engine_factories: expected a table, got {self.engine_factories!r}"
            )
        if not self.engines:
            raise SettingsError("serve.engines: name at least one engine")
        for name in [*self.engines, *self.engine_factories]:
            if name not in ENGINE_NAMES:
                raise SettingsError(
                    f"serve.engines: {name!r} is not one of {', '.join(ENGINE_NAMES)}"
                )
        for name, target in self.engine_factories.items():
            if ":" not in str(target):
                raise SettingsError(
                    f"serve.engine_factories.{name}: {target!r} must be 'package.module:factory'"
                )
        if "comfyui" in self.engines and not self.comfy_url:
            raise SettingsError("serve.comfy_url: engine comfyui needs the server's URL")
        if self.worker_mode not in ("process", "thread"):
            raise SettingsError(
                f"serve.worker_mode: {self.worker_mode!r} is not one of 'process', 'thread'"
            )
        if not 0 <= self.worker_nice <= 19:
            raise SettingsError(f"serve.worker_nice: {self.worker_nice} must be 0-19")
        if self.workers < 1:
            raise SettingsError(f"serve.workers: {self.workers} must be at least 1")
        if self.session_hours <= 0:
            raise SettingsError(f"serve.session_hours: {self.session_hours} must be positive")


@dataclass(frozen=True)
class QuotaSection:
    """`[quota]`: what each user may use unless their own quota says otherwise (0: no limit)."""

    images: int = 5000
    """Images stored (uploads and generations)."""
    train_runs: int = 20
    """Training runs started (finished or not)."""
    disk_bytes: int = 20 * GIB
    """Bytes in the user's folder (images, LoRAs, caches)."""
    queued_jobs: int = 5
    """Jobs waiting or running at once."""
    upload_files: int = 200
    """Files in one upload."""

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            if getattr(self, f.name) < 0:
                raise SettingsError(f"quota.{f.name}: must be 0 (no limit) or more")


@dataclass(frozen=True)
class ServeSettings:
    """Everything in `serve.toml`."""

    serve: ServeSection = field(default_factory=ServeSection)
    quota: QuotaSection = field(default_factory=QuotaSection)

    def shared_folders(self) -> list[Path]:
        """The shared model folders, resolved (symlinks followed)."""
        return [Path(p).expanduser().resolve() for p in self.serve.shared_models]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def load_serve_settings(root: Path) -> ServeSettings:
    """The settings of the server at `root` (defaults when `serve.toml` is absent)."""
    path = Path(root) / SERVE_FILE
    if not path.is_file():
        return ServeSettings()
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise SettingsError(f"{path}: not valid TOML ({exc}); fix the syntax") from exc
    return serve_settings_from_dict(data, str(path))


def serve_settings_from_dict(data: dict[str, Any], source: str = "serve settings") -> ServeSettings:
    """Build settings from parsed TOML, refusing unknown keys and wrongly typed values."""
    return _build(ServeSettings, data, source)
