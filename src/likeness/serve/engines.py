"""The engines the admin configured, built once per worker and handed to jobs.

Engines are built by `likeness.engines.get_engine` with the server's settings (device,
ComfyUI URL), or by the factory `serve.engine_factories` names for them. With
`release_between_users` (the default) an engine frees its models and LoRAs before it runs a
job of another user, so no user's images are made on a pipeline that held someone else's
LoRA.
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Callable, Mapping
from typing import Any

from likeness.engines import Engine, get_engine
from likeness.serve.settings import ServeSection

EngineFactory = Callable[[], Engine]


class EngineUnavailable(ValueError):
    """The recipe asks for an engine this server does not offer."""


def import_factory(target: str) -> EngineFactory:
    """`package.module:callable` -> the callable."""
    module_name, _, attr = target.partition(":")
    module = importlib.import_module(module_name)
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise EngineUnavailable(f"serve.engine_factories: {target!r} names nothing callable")
    return factory


class EngineProvider:
    """Engines by name for one worker; `get(name, user_id)` builds on first use."""

    def __init__(
        self,
        section: ServeSection,
        factories: Mapping[str, EngineFactory] | None = None,
    ) -> None:
        self.section = section
        self._factories: dict[str, EngineFactory] = dict(factories or {})
        self._engines: dict[str, Engine] = {}
        self._last_user: int | None = None
        self._lock = threading.Lock()

    @property
    def names(self) -> list[str]:
        return list(self.section.engines)

    def check_name(self, name: str) -> None:
        if name not in self.section.engines:
            offered = ", ".join(self.section.engines) or "none"
            raise EngineUnavailable(f"engine: {name!r} is not offered here (engines: {offered})")

    def get(self, name: str, user_id: int) -> Engine:
        self.check_name(name)
        with self._lock:
            if self.section.release_between_users and self._last_user not in (None, user_id):
                for engine in self._engines.values():
                    engine.release()
            self._last_user = user_id
            engine = self._engines.get(name)
            if engine is None:
                engine = self._build(name)
                self._engines[name] = engine
            return engine

    def _build(self, name: str) -> Engine:
        if name in self._factories:
            return self._factories[name]()
        if name in self.section.engine_factories:
            return import_factory(self.section.engine_factories[name])()
        options: dict[str, Any] = {}
        if name == "diffusers":
            options["device"] = self.section.device or None
        return get_engine(name, comfy_url=self.section.comfy_url or None, **options)

    def close(self) -> None:
        with self._lock:
            engines, self._engines = list(self._engines.values()), {}
        for engine in engines:
            engine.close()
