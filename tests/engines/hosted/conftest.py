"""Fixtures: the in-process Replicate/fal test server, settings pointing at it, a hosted
recipe, and engines that pause for no real time (the server advances one state per poll)."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from fake_hosted import FakeHosted  # noqa: E402

from likeness.config import HostedSettings  # noqa: E402
from likeness.engines.hosted import HostedEngine  # noqa: E402
from likeness.engines.hosted.secrets import ApiToken  # noqa: E402
from likeness.recipes import LoraSpec, Recipe, RefinerPass  # noqa: E402

TOKEN = "r8_Likeness_TEST_token_7f3a9c1e5b"


class Sleeps(list):
    """A sleep that records its pauses instead of taking them."""

    def __call__(self, seconds: float) -> None:
        self.append(seconds)


@pytest.fixture
def fake() -> Iterator[FakeHosted]:
    with FakeHosted(token=TOKEN) as server:
        yield server


def settings_for(fake: FakeHosted, **changes) -> HostedSettings:
    values = {
        "replicate_url": fake.url,
        "fal_queue_url": fake.url,
        "fal_rest_url": fake.url,
        "poll_interval": 0.01,
        "poll_max_interval": 0.05,
        "timeout": 60.0,
    }
    values.update(changes)
    return HostedSettings(**values)


@pytest.fixture
def make_engine(fake: FakeHosted) -> Iterator[Callable[..., HostedEngine]]:
    made: list[HostedEngine] = []

    def make(provider: str = "replicate", sleep=None, settings=None, **kwargs) -> HostedEngine:
        engine = HostedEngine(
            provider,
            settings or settings_for(fake),
            token=ApiToken(TOKEN, "test"),
            sleep=sleep if sleep is not None else Sleeps(),
            **kwargs,
        )
        made.append(engine)
        return engine

    yield make
    for engine in made:
        engine.close()


def hosted_recipe(engine: str = "replicate", **changes) -> Recipe:
    model = "black-forest-labs/flux-dev-lora" if engine == "replicate" else "fal-ai/flux-lora"
    base = Recipe(
        engine=engine,
        model=model,
        family="flux",
        loras=(LoraSpec("https://huggingface.co/me/zk1-flux/resolve/main/lora.safetensors", 0.8),),
        prompt="raw photo, a man in a park, visible skin pores",
        trigger="zkx1",
        width=832,
        height=1248,
        sampler="euler",
        scheduler="simple",
        steps=28,
        cfg=3.5,
        seed=42,
        refiner=RefinerPass(enabled=False),
    )
    return base.with_overrides(changes) if changes else base


@pytest.fixture
def face_ws(tmp_path):
    """A workspace whose source photos are obama.jpg and obama3.jpg (as tests/evaluate's,
    without its cache: only the images a test makes are measured)."""
    from likeness.curate.ingest import Ingester
    from likeness.data import FACES
    from likeness.workspace import Workspace

    ws = Workspace.create(tmp_path / "ws", name="Barack", class_word="man")
    ingester = Ingester(ws, origin="source")
    for name in ("obama.jpg", "obama3.jpg"):
        assert ingester.ingest_file(FACES / name).status == "stored"
    yield ws
    ws.close()
