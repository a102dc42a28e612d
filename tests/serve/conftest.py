"""Fixtures: a server folder with accounts, its app (thread workers running a photo engine
under the name `diffusers`), and clients signed in as each user."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from likeness.serve.app import create_server_app
from likeness.serve.engines import EngineProvider
from likeness.serve.settings import ServeSettings
from likeness.serve.work import Services

from .builder import BASE, make_server, settings_for, sign_in
from .engines import photo_engine


def services_for(
    settings: ServeSettings, train: Any = None, engine: Callable[[], Any] = photo_engine
) -> Services:
    """Engines (a photo engine as `diffusers`), light scoring instruments, a trainer."""
    from likeness.metrics.analysis import Instruments

    return Services(
        engines=EngineProvider(settings.serve, {"diffusers": engine}),
        instruments=Instruments(expression=None, pose=None),
        train=train,
    )


@dataclass
class Server:
    root: Path
    tokens: dict[str, str]
    settings: ServeSettings
    opened: list[TestClient] = field(default_factory=list)

    def app(self, *, workers: bool = True, services: Services | None = None) -> FastAPI:
        return create_server_app(
            self.root,
            settings=self.settings,
            services=services or services_for(self.settings),
            workers=workers,
        )

    def client(self, app: FastAPI, name: str | None = None) -> tuple[TestClient, dict[str, str]]:
        """A client with the app's lifespan running, signed in as `name` when given, and the
        headers its changes carry (Origin and CSRF token)."""
        client = TestClient(app, base_url=BASE)
        client.__enter__()
        self.opened.append(client)
        headers = sign_in(client, name, self.tokens[name]) if name else {}
        return client, headers

    def close(self) -> None:
        while self.opened:
            self.opened.pop().__exit__(None, None, None)


@pytest.fixture
def make_server_folder(tmp_path: Path) -> Iterator[Callable[..., Server]]:
    made: list[Server] = []

    def make(names: tuple[str, ...] = ("ana", "ben"), **serve: Any) -> Server:
        root = tmp_path / f"server{len(made)}"
        tokens = make_server(root, list(names))
        made.append(Server(root, tokens, settings_for(root, **serve)))
        return made[-1]

    yield make
    for server in made:
        server.close()


@pytest.fixture
def server(make_server_folder: Callable[..., Server]) -> Server:
    return make_server_folder()
