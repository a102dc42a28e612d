"""A cell: one image generated from a fully resolved recipe, stored and scored exactly once.

A cell's identity is the recipe hash of its resolved recipe (model, LoRAs, sampler, seed,
prompt and every other field), so sweeps, model cards and loop turns that ask for the same
image share it. The cell row is written in the same transaction as the image row, so a crash
at any point leaves either both or neither: running again never stores a second image for the
same cell, and a cell whose image exists but was not scored yet is only scored.

Example::

    runner = CellRunner(ws, engine, WorkspaceScorer(ws))
    cell = runner.run(recipe.with_overrides({"seed": 7, "prompt": "portrait of a man"}))
    cell.score["match"]
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from likeness.curate.ingest import Ingester
from likeness.engines.base import Engine, EngineError, GeneratedImage, ProgressCallback
from likeness.engines.records import record_generation
from likeness.evaluate import store
from likeness.recipes import Recipe, build_prompt
from likeness.store.db import transaction

if TYPE_CHECKING:
    from likeness.evaluate.scorer import WorkspaceScorer
    from likeness.workspace import Workspace


@dataclass(frozen=True)
class Cell:
    """A finished (or failed) cell: the recipe it ran, its image and its score."""

    key: str
    recipe: Recipe
    image_sha: str | None
    score: dict[str, Any] | None
    """`ImageScore.to_json()` of the image (keys: match, angle, expression, body_pose,
    grain, plastic, sharpness, flags, pass, ...); None when generation failed."""
    generation: dict[str, Any]
    """The engine's provenance of the image (model and LoRA sha256s, engine, timings)."""
    error: str | None = None
    fresh: bool = False
    """True when this call generated the image (False: found done or half-done)."""

    @property
    def seed(self) -> int:
        return self.recipe.seed

    @property
    def prompt(self) -> str:
        """The prompt as sent to the engine (trigger placed)."""
        return build_prompt(self.recipe)


def cell_key(recipe: Recipe) -> str:
    """The identity of the image ``recipe`` makes: its recipe hash (seed must be fixed)."""
    if recipe.seed < 0:
        raise ValueError("seed: a cell needs a fixed seed, not -1")
    return recipe.recipe_hash()


class CellRunner:
    """Generates, stores and scores cells in one workspace with one engine.

    Args:
        ws (`Workspace`): where images and rows are stored.
        engine (`Engine`): any engine (diffusers, ComfyUI, or a test double).
        scorer (`WorkspaceScorer`): scores images against the workspace's source photos.
        name_prefix (`str`, defaults to "cell"): prefix of stored image names.
        job_id (`int`, *optional*): the job recorded with each image's provenance.
        engine_progress (*optional*): passed to ``Engine.generate`` (sampling steps).
    """

    def __init__(
        self,
        ws: Workspace,
        engine: Engine,
        scorer: WorkspaceScorer,
        name_prefix: str = "cell",
        job_id: int | None = None,
        engine_progress: ProgressCallback | None = None,
    ) -> None:
        self.ws = ws
        self.engine = engine
        self.scorer = scorer
        self.name_prefix = name_prefix
        self.job_id = job_id
        self.engine_progress = engine_progress
        self._ingester: Ingester | None = None

    @property
    def ingester(self) -> Ingester:
        if self._ingester is None:
            self._ingester = Ingester(self.ws, origin="synthetic")
        return self._ingester

    def lookup(self, recipe: Recipe) -> Cell | None:
        """The finished cell for ``recipe``, or None when it still has work to do."""
        row = store.get_cell(self.ws.db, cell_key(recipe))
        if row is None or not row.finished:
            return None
        return _from_row(row, recipe)

    def run(self, recipe: Recipe) -> Cell:
        """The cell for ``recipe``: found, completed, or generated now. Engine failures come
        back as a cell with ``error`` set (and are retried on the next run)."""
        if not self.needs_image(recipe):
            return self.complete(recipe, None)
        try:
            generated = self.engine.generate(recipe, 1, progress=self.engine_progress)[0]
        except EngineError as exc:
            return self.fail(recipe, f"generation failed: {exc}")
        return self.complete(recipe, generated)

    def needs_image(self, recipe: Recipe) -> bool:
        """True while no image is stored for ``recipe``'s cell (it must be generated)."""
        row = store.get_cell(self.ws.db, cell_key(recipe))
        return row is None or row.image_sha is None

    def complete(self, recipe: Recipe, generated: GeneratedImage | None) -> Cell:
        """Store ``generated`` as the cell's image (unless the cell has one), then score it
        unless scored: the one path for images made here and for images made elsewhere (an
        engine pool's workers)."""
        key = cell_key(recipe)
        row = store.get_cell(self.ws.db, key)
        fresh = False
        # 1. Store, unless an image already exists for this cell.
        if row is None or row.image_sha is None:
            if generated is None:
                raise ValueError(f"cell {key[:12]}: has no image yet; pass the generated one")
            generation = dict(generated.provenance)
            name = f"{self.name_prefix}-{key[:12]}.png"

            def record(sha: str) -> None:
                if (
                    self.ws.db.execute(
                        "SELECT 1 FROM generations WHERE image_sha = ?", (sha,)
                    ).fetchone()
                    is None
                ):
                    record_generation(self.ws.db, sha, generation, self.job_id)
                store.insert_cell(
                    self.ws.db,
                    key=key,
                    recipe=recipe.to_dict(),
                    seed=recipe.seed,
                    prompt=build_prompt(recipe),
                    image_sha=sha,
                    generation=generation,
                )

            result = self.ingester.ingest_bytes(generated.png, name=name, on_stored=record)
            if result.status == "rejected" or result.sha256 is None:
                return self.fail(recipe, f"output rejected: {result.reason}")
            if result.status == "duplicate":  # stored before (by another cell or a crash)
                with transaction(self.ws.db):
                    record(result.sha256)
            fresh = True
            row = store.get_cell(self.ws.db, key)
            assert row is not None
        # 2. Score, unless already scored.
        if row.score is None:
            assert row.image_sha is not None
            score = self.scorer.score([row.image_sha])[0].to_json()
            store.set_cell_score(self.ws.db, key, score)
            row = store.get_cell(self.ws.db, key)
            assert row is not None
        cell = _from_row(row, recipe)
        return Cell(cell.key, cell.recipe, cell.image_sha, cell.score, cell.generation, None, fresh)

    def fail(self, recipe: Recipe, error: str) -> Cell:
        """Record that ``recipe``'s cell has no image, and why (the next run tries again)."""
        key = cell_key(recipe)
        with transaction(self.ws.db):
            store.insert_cell(
                self.ws.db,
                key=key,
                recipe=recipe.to_dict(),
                seed=recipe.seed,
                prompt=build_prompt(recipe),
                image_sha=None,
                generation={},
                error=error,
            )
        return Cell(key, recipe, None, None, {}, error)


def _from_row(row: store.CellRow, recipe: Recipe) -> Cell:
    return Cell(row.key, recipe, row.image_sha, row.score, row.generation, row.error)


def model_hashes(generation: dict[str, Any]) -> tuple[str | None, list[str | None]]:
    """(model sha256, LoRA sha256s) from a cell's provenance (None where the engine could not
    hash the file, e.g. a model that lives on a ComfyUI server)."""
    model = generation.get("model") or {}
    loras = generation.get("loras") or []
    return (
        model.get("sha256") if isinstance(model, dict) else None,
        [lora.get("sha256") if isinstance(lora, dict) else None for lora in loras],
    )
