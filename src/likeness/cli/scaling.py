"""What sweep, card, generate and score share to fan a run out over Ray workers.

A run uses workers when ``--workers N`` (N >= 1), ``--comfy-url`` given more than once,
``--ray`` or the workspace's ``[scale]`` settings ask for them; ``--workers 0`` runs here
whatever the settings say. Nothing in this module imports Ray or :mod:`likeness.scale` until
then, so every other run starts as fast as before (docs/scale.md).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.progress import Progress

from likeness.cli.common import err, fail, progress_bar
from likeness.config import ScaleSettings
from likeness.engines import EnginePool

WorkersOption = Annotated[
    int | None,
    typer.Option(
        "--workers",
        min=0,
        help="diffusers: fan the run out over N Ray workers, one GPU each (CPU without "
        "GPUs); 0 runs here without Ray (default: scale.workers).",
    ),
]
ComfyUrlsOption = Annotated[
    list[str] | None,
    typer.Option(
        "--comfy-url",
        help="ComfyUI server URL; repeat it to fan the run out over several servers, one Ray "
        "worker each (default: scale.comfy_urls, else comfyui.url).",
    ),
]
RayOption = Annotated[
    str | None,
    typer.Option(
        "--ray",
        help="Ray to run the workers on: local, auto (the cluster this machine joined) or "
        "HOST:PORT (default: scale.address; local when workers are asked for).",
    ),
]
POOLED = ("diffusers", "comfyui")


@dataclass(frozen=True)
class ScaleAsk:
    """Workers were asked for: on which Ray, how many, which ComfyUI servers."""

    address: str
    workers: int | None
    comfy_urls: tuple[str, ...]


def scale_ask(
    settings: ScaleSettings,
    engine: str,
    *,
    workers: int | None,
    comfy_urls: list[str] | None,
    ray: str | None,
) -> ScaleAsk | None:
    """The workers the flags and ``[scale]`` ask for, or None to run here as before."""
    urls = tuple(comfy_urls or ())
    if workers == 0:
        if len(urls) > 1:
            fail("--comfy-url: several servers need workers; leave out --workers 0")
        return None
    by_flags = workers is not None or len(urls) > 1 or ray is not None
    by_settings = bool(
        settings.address or settings.workers or (engine == "comfyui" and settings.comfy_urls)
    )
    if not (by_flags or by_settings):
        return None
    if engine not in POOLED:
        if by_flags:
            fail(
                f"--engine {engine}: runs on its provider's servers; --workers, --ray and "
                "several --comfy-url fan out diffusers and comfyui runs only"
            )
        return None
    return ScaleAsk(ray or settings.address or "local", workers, urls)


def notice(line: str) -> None:
    """A worker left out or lost: one yellow line."""
    err.print(f"[yellow]{escape(line)}[/yellow]", highlight=False)


def build_pool(
    ask: ScaleAsk, engine: str, settings: ScaleSettings, options: Mapping[str, Any]
) -> EnginePool:
    """Start the workers (exits with one line when Ray cannot be had or joined)."""
    from likeness.scale.cluster import ScaleError
    from likeness.scale.engines import build_engine_pool

    err.print(f"starting {engine} workers on Ray ({ask.address})...", highlight=False)
    try:
        return build_engine_pool(
            engine,
            settings,
            address=ask.address,
            workers=ask.workers,
            comfy_urls=ask.comfy_urls,
            options=options,
            on_notice=notice,
        )
    except ScaleError as exc:
        fail(str(exc))
    raise AssertionError("unreachable")


@contextmanager
def run_display(runner: object, transient: bool = False) -> Iterator[Progress]:
    """The command's progress bar; under it, for a pool of workers, one row per worker
    (current task, images made, images per minute)."""
    bar = progress_bar(transient=transient)
    stats = getattr(runner, "stats", None)
    if stats is None:
        with bar:
            yield bar
        return
    from rich.console import Group
    from rich.live import Live

    from likeness.scale.display import worker_table

    def render() -> Group:
        return Group(bar, worker_table(stats()))

    with Live(console=err, get_renderable=render, refresh_per_second=4, transient=transient):
        yield bar
