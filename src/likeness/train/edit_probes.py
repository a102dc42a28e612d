"""Probes of an edit-model checkpoint: instructions applied to the dataset's source photos.

A text-to-image LoRA is judged by rendering card shots; an edit-model LoRA (family
``qwen_image_edit``) by what it does to a photo of the person: each probe id names an
instruction (a head turn, a smile), applied at each fixed seed to one of the version's source
photos (the controls of its edit pairs that are source photos, else the photos probes are
scored against), through the engine's edit model with the checkpoint's LoRA at the judge's
strength and size. The scoring, memorisation check and ranking are the other families'.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from likeness.store.datasets import DatasetVersion
    from likeness.train.recipe import TrainRecipe
    from likeness.workspace import Workspace

EDIT_PROBES = {
    "half_left": "turn the head halfway to the left, same person, same light and clothes",
    "half_right": "turn the head halfway to the right, same person, same light and clothes",
    "smiling": "make the person smile naturally, same person, same light and clothes",
    "neutral": "give the person a neutral, relaxed expression, same person",
}
"""Probe id -> the instruction it applies (``[judge] probes`` names ids)."""


@dataclass(frozen=True)
class EditProbe:
    id: str
    seed: int
    instruction: str
    source: Path
    """The photo the instruction is applied to."""


def check_edit_probes(probes: Sequence[str]) -> None:
    """Raise ``ValueError`` naming the first probe id that is not an edit probe."""
    for index, probe in enumerate(probes):
        if probe not in EDIT_PROBES:
            raise ValueError(
                f"judge.probes.{index}: {probe!r} is not an edit probe of qwen_image_edit; use "
                f"one of {', '.join(EDIT_PROBES)}"
            )


def edit_probes_hash(recipe: TrainRecipe) -> str:
    """What the probes are: the judge settings and the instructions they apply."""
    texts = {probe: EDIT_PROBES[probe] for probe in recipe.judge.probes}
    blob = f"{recipe.judge.settings_hash()}:{json.dumps(texts, sort_keys=True)}".encode()
    return hashlib.sha256(blob).hexdigest()


def probe_sources(ws: Workspace, version: DatasetVersion, fallback: Sequence[Path]) -> list[Path]:
    """The source photos probes edit: the controls of the version's edit pairs that are
    source photos (in pair order, each once), else ``fallback``."""
    from likeness.evaluate.edit_pairs import edit_pairs

    pairs, _ = edit_pairs(ws, version)
    found: list[Path] = []
    for pair in pairs:
        row = ws.db.execute(
            "SELECT origin, excluded FROM images WHERE sha256 = ?", (pair.control_sha,)
        ).fetchone()
        path = ws.blobs.path(pair.control_sha)
        usable = row is not None and row["origin"] == "source" and not row["excluded"]
        if usable and path not in found:
            found.append(path)
    return found or list(fallback)


def edit_probe_plans(recipe: TrainRecipe, sources: Sequence[Path]) -> list[EditProbe]:
    """Every probe id x every seed; the n-th probe edits source photo n (cycling)."""
    plans = []
    for probe in recipe.judge.probes:
        for seed in recipe.judge.seeds:
            source = sources[len(plans) % len(sources)]
            plans.append(EditProbe(probe, seed, EDIT_PROBES[probe], source))
    return plans


def edit_settings(recipe: TrainRecipe, lora: str, seed: int) -> Any:
    """The engine's edit settings of one probe: the LoRA at the judge's strength, its steps,
    seed and size."""
    from likeness.engines.diffusers.edit import EditSettings
    from likeness.recipes import LoraSpec

    judge = recipe.judge
    return EditSettings(
        steps=judge.steps,
        seed=seed,
        loras=(LoraSpec(lora, judge.strength),),
        width=judge.width,
        height=judge.height,
    )
