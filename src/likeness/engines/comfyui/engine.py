"""The ComfyUI engine: recipes run on a ComfyUI server, images come back with provenance.

``generate`` follows numbered steps: check the recipe against the server, upload the identity
references, then per image (or per batch) build the graph, run it to the end (surviving
restarts, see :mod:`likeness.engines.comfyui.run`), download the outputs and write the
provenance into each PNG.

Example::

    engine = ComfyUIEngine(url="http://127.0.0.1:8188")
    engine.check(recipe)                 # raises, naming every missing node or model file
    images = engine.generate(recipe, 4)  # GeneratedImage(png=..., seed=..., provenance=...)
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from likeness.engines.base import (
    EngineCannotHonour,
    GeneratedImage,
    ProgressCallback,
    ProgressUpdate,
    build_provenance,
    image_seeds,
    resolve_seed,
)
from likeness.engines.comfyui import checks, client
from likeness.engines.comfyui.errors import ComfyError
from likeness.engines.comfyui.graph import Graph, GraphOptions, build_graph, model_inputs
from likeness.engines.comfyui.pngtext import add_text_chunks
from likeness.engines.comfyui.protocol import ImageRef, SystemInfo
from likeness.engines.comfyui.run import NodeProgress, RetryPolicy, RunResult, run_prompt
from likeness.pnginfo import PARAMETERS_KEY, PROVENANCE_KEY, a1111_parameters
from likeness.recipes import Recipe

if TYPE_CHECKING:
    from PIL import Image

# Slot name (prefix) -> the stage name of ProgressUpdate.
_STAGES = {
    "checkpoint": "load",
    "lora": "load",
    "sampler": "sample",
    "refiner": "refiner",
    "identity": "identity",
    "reference": "identity",
    "references": "identity",
    "positive": "encode",
    "negative": "encode",
    "decode": "decode",
    "detailer": "detailer",
    "upscale": "upscale",
    "resize": "upscale",
    "save": "save",
}


def graph_prompt_id(api: Mapping[str, Any]) -> str:
    """A prompt id that is the same for the same graph (a uuid5 of its canonical JSON)."""
    digest = hashlib.sha256(json.dumps(api, sort_keys=True).encode()).hexdigest()
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"likeness:comfyui:{digest}"))


class ServerLacks(EngineCannotHonour):
    """The server cannot run the recipe; ``lines`` names each missing node class or file."""

    def __init__(self, url: str, lines: list[str]) -> None:
        self.lines = list(lines)
        super().__init__("comfy_url", url, "lacks what the recipe needs")

    def __str__(self) -> str:
        return "\n".join(self.lines)


@dataclass(frozen=True)
class CheckReport:
    """What a server is and what a recipe would miss there (empty ``missing`` = can run)."""

    url: str
    system: SystemInfo
    missing: tuple[str, ...] = ()
    graph: Graph | None = None
    object_info: Mapping[str, Any] = field(default_factory=dict)
    names: Mapping[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "system": self.system.to_dict(),
            "missing": list(self.missing),
            "ok": not self.missing,
        }


def recipe_refusals(recipe: Recipe) -> None:
    """Raise for recipe fields this engine cannot honour, before talking to any server."""
    recipe.require_model()
    for ref in recipe.identity.references if recipe.identity.enabled else ():
        if not Path(ref).expanduser().is_file():
            raise EngineCannotHonour(
                "identity.references", ref, "is not a file; list existing reference images"
            )


class ComfyUIEngine:
    """Runs recipes on the ComfyUI server at ``url``.

    ``http`` may be passed in (tests, shared pools); otherwise one is opened for the engine.
    ``options`` names server files the recipe does not carry (InstantID and face detector
    models); ``policy`` says how hard to retry through dropped connections and restarts.
    """

    name = "comfyui"

    def __init__(
        self,
        url: str,
        *,
        http: httpx.Client | None = None,
        options: GraphOptions = GraphOptions(),
        policy: RetryPolicy = RetryPolicy(),
        client_id: str | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.url = url.rstrip("/")
        self.http = http if http is not None else client.connect(self.url)
        self._owns_http = http is None
        self.options = options
        self.policy = policy
        self.client_id = client_id or str(uuid.uuid4())
        self.sleep = sleep

    # ---- checks --------------------------------------------------------------------------
    def report(self, recipe: Recipe | None = None) -> CheckReport:
        """The server's versions and devices and, for a recipe, every line it would miss."""
        system = client.system_info(self.http)
        if recipe is None:
            return CheckReport(url=self.url, system=system)
        recipe = resolve_seed(recipe)
        # Uploaded names are only known after the upload; check_graph skips LoadImage names.
        placeholders = [f"reference_{i}.png" for i, _ in enumerate(recipe.identity.references)]
        draft = build_graph(recipe, references=placeholders, options=self.options)
        info = checks.fetch_object_info(self.http, draft.class_types())
        names = checks.resolve_names(model_inputs(recipe), info)
        graph = build_graph(recipe, references=placeholders, options=self.options, names=names)
        missing = checks.check_graph(graph, info)
        return CheckReport(
            url=self.url,
            system=system,
            missing=tuple(missing),
            graph=graph,
            object_info=info,
            names=names,
        )

    def check(self, recipe: Recipe) -> None:
        """Raise before any work: EngineCannotHonour for a field this engine cannot run,
        ServerLacks naming every node class and model file the server is missing."""
        recipe_refusals(recipe)
        report = self.report(recipe)
        if report.missing:
            raise ServerLacks(self.url, list(report.missing))

    # ---- generation ----------------------------------------------------------------------
    def generate(
        self, recipe: Recipe, n: int, progress: ProgressCallback | None = None
    ) -> list[GeneratedImage]:
        """``n`` images with seeds ``seed, seed + 1, ...`` (one prompt per ``recipe.batch``
        images; images of one batch share the prompt's seed, as in ComfyUI)."""
        if n < 1:
            raise ValueError(f"n: {n} must be at least 1")
        # 1. Check everything before any work.
        recipe = resolve_seed(recipe)
        recipe_refusals(recipe)
        report = self.report(recipe)
        if report.missing:
            raise ServerLacks(self.url, list(report.missing))
        # 2. Upload the identity references once for the whole run.
        references = self.upload_references(recipe)
        # 3. One prompt per batch of seeds.
        seeds = image_seeds(recipe, n)
        groups = [seeds[i : i + recipe.batch] for i in range(0, n, recipe.batch)]
        images: list[GeneratedImage] = []
        for group in groups:
            graph = build_graph(
                recipe,
                seed=group[0],
                batch=len(group),
                references=references,
                options=self.options,
                names=report.names,
            )
            graph = checks.complete_defaults(graph, report.object_info)
            images += self._run_one(recipe, graph, group, len(images), n, report.system, progress)
        return images

    def upload_references(self, recipe: Recipe) -> list[str]:
        """Upload the identity reference images; returns their LoadImage names."""
        if not recipe.identity.enabled:
            return []
        names = []
        for ref in recipe.identity.references:
            path = Path(ref).expanduser()
            uploaded = client.upload_image(
                self.http, path.read_bytes(), path.name, subfolder="likeness"
            )
            names.append(uploaded.load_name)
        return names

    def _run_one(
        self,
        recipe: Recipe,
        graph: Graph,
        seeds: list[int],
        done: int,
        total: int,
        system: SystemInfo,
        progress: ProgressCallback | None,
    ) -> list[GeneratedImage]:
        started = time.monotonic()
        on_progress = self._progress_adapter(recipe, graph, done, total, progress)
        result, refs, pngs, download_s = self._execute(graph, len(seeds), on_progress)
        start, end = (
            result.entry.timestamp("execution_start"),
            result.entry.timestamp("execution_success"),
        )
        out = []
        for index, (ref, png) in enumerate(zip(refs, pngs, strict=True)):
            timings = {
                "run_s": time.monotonic() - started - download_s,
                "download_s": download_s,
                "total_s": time.monotonic() - started,
            }
            if start is not None and end is not None:
                timings["execute_s"] = max(0.0, end - start)
            width, height = graph.output_size
            provenance = build_provenance(
                recipe=recipe,
                seed=seeds[0],
                engine={
                    "name": self.name,
                    "version": system.comfyui_version,
                    "url": self.url,
                    "pytorch_version": system.pytorch_version,
                    "devices": [d.name for d in system.devices],
                },
                model_sha256=None,
                lora_sha256s=[None] * len(recipe.loras),
                timings=timings,
                width=width,
                height=height,
                extra={
                    "comfyui": {
                        "prompt_id": result.submitted.prompt_id,
                        "client_id": self.client_id,
                        "file": ref.params(),
                        "batch_index": index,
                        "reconnects": result.reconnects,
                        "resubmits": result.resubmits,
                        "reused": result.reused,
                    }
                },
            )
            png = add_text_chunks(
                png,
                {
                    PARAMETERS_KEY: a1111_parameters(provenance),
                    PROVENANCE_KEY: json.dumps(provenance, sort_keys=True),
                },
            )
            out.append(GeneratedImage(png=png, seed=seeds[0], provenance=provenance))
        return out

    def _execute(
        self, graph: Graph, expected: int, on_progress: Callable[[NodeProgress], None] | None
    ) -> tuple[RunResult, list[ImageRef], list[bytes], float]:
        """Run ``graph`` and download its images.

        The prompt id is derived from the graph, so running a killed job again finds the
        server's finished (or still queued) run of it instead of queueing it twice; when the
        server no longer has that run's files, the graph runs again under a new id, with a
        new file name prefix (ComfyUI would otherwise answer from its cache with the old files).
        """
        api = graph.api()
        for reuse in (True, False):
            if not reuse:
                save = api[graph.id("save")]["inputs"]
                save["filename_prefix"] = f"{save['filename_prefix']}_{uuid.uuid4().hex[:6]}"
            result = run_prompt(
                self.http,
                api,
                client_id=self.client_id,
                prompt_id=graph_prompt_id(api) if reuse else None,
                on_progress=on_progress,
                policy=self.policy,
                reuse=reuse,
                sleep=self.sleep,
            )
            outputs = result.entry.outputs.get(graph.id("save"), ())
            refs = [r for r in outputs if r.type == "output"]
            if len(refs) != expected:
                raise ComfyError(
                    [f"prompt {result.submitted.prompt_id} saved {len(refs)} image(s), "
                     f"expected {expected}"]
                )  # fmt: skip
            fetch_started = time.monotonic()
            try:
                pngs = [client.view(self.http, ref) for ref in refs]
            except ComfyError:
                if result.reused:
                    continue
                raise
            return result, refs, pngs, time.monotonic() - fetch_started
        raise AssertionError("unreachable")

    def _progress_adapter(
        self,
        recipe: Recipe,
        graph: Graph,
        done: int,
        total: int,
        progress: ProgressCallback | None,
    ) -> Callable[[NodeProgress], None] | None:
        if progress is None:
            return None
        steps = {
            "sample": recipe.steps,
            "refiner": recipe.refiner.steps,
            "identity": recipe.identity.steps,
            "detailer": recipe.detailer.steps,
        }

        def on_progress(event: NodeProgress) -> None:
            slot = graph.slot_of(event.node) or ""
            stage = _STAGES.get(slot) or _STAGES.get(slot.split("_")[0])
            if stage is None:
                return
            if event.max:
                step, of = event.value, event.max
            else:
                step, of = 0, steps.get(stage, 1)
            progress(ProgressUpdate(image=done, images=total, step=step, steps=of, stage=stage))

        return on_progress

    # ---- the rest of the protocol ----------------------------------------------------------
    def edit(self, image: Image.Image, instruction: str) -> GeneratedImage:
        raise NotImplementedError(
            "edit: the comfyui engine has no instruction-edit graph; use an edit-model engine"
        )

    def release(self) -> None:
        """Ask the server to unload its models and free VRAM (``POST /free``)."""
        client.free(self.http)

    def close(self) -> None:
        """Close the HTTP client this engine opened (one passed in belongs to the caller)."""
        if self._owns_http:
            self.http.close()
