"""Sweep specs: a base recipe, the axes to vary (a grid or an explicit list), seeds, prompts.

A spec is TOML (see :data:`EXAMPLE_SPEC`, written by `likeness sweep new`)::

    name = "checkpoint x lora strength"
    base = "recipe.toml"          # a recipe file (relative to the spec), or a [base] table
    seeds = [1, 2, 3]
    prompts = ["portrait photo of a woman, studio light"]   # default: the base prompt

    [axes]                        # grid: every combination
    model = ["bigLove.safetensors", "juggernaut.safetensors"]
    "loras.0.strength" = [0.5, 0.7, 0.9]

    # or, instead of [axes], an explicit list of configurations:
    # [[cells]]
    # cfg = 4.0
    # "refiner.denoise" = 0.25

    [objective]                   # ranking weights (see likeness.evaluate.objective)
    grain_weight = 1.0

Axis names are the recipe's dotted override keys (`cfg`, `steps`, `sampler`, `model`,
`loras.0.strength`, `refiner.denoise`, `detailer.denoise`, `trigger_placement`, ...). Every
configuration is validated against the recipe rules before anything runs.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from likeness.evaluate.objective import Objective, ObjectiveError
from likeness.recipes import Recipe, RecipeError

SPEC_KEYS = ("name", "base", "seeds", "prompts", "axes", "cells", "objective")
MAX_CELLS = 10_000


class SweepSpecError(ValueError):
    """A sweep spec that cannot be run; the message names the file, the key and the fix."""


@dataclass(frozen=True)
class SweepCell:
    """One image of a sweep: a configuration (axis values) with one prompt and one seed."""

    config_key: str
    config: dict[str, Any]
    prompt: str
    seed: int
    recipe: Recipe

    @property
    def label(self) -> str:
        return config_label(self.config)


@dataclass(frozen=True)
class SweepSpec:
    name: str
    base: Recipe
    seeds: tuple[int, ...]
    prompts: tuple[str, ...]
    axes: dict[str, list[Any]] = field(default_factory=dict)
    """Grid axes in file order (empty when `configs` is an explicit list)."""
    configs: tuple[dict[str, Any], ...] = ()
    """Every configuration (the grid product, or the explicit `[[cells]]`)."""
    objective: Objective = field(default_factory=Objective)
    source: str = "sweep spec"

    @property
    def axis_names(self) -> list[str]:
        """The varied keys, in first-seen order (grid axes, or the keys of the cells)."""
        if self.axes:
            return list(self.axes)
        names: list[str] = []
        for config in self.configs:
            names += [k for k in config if k not in names]
        return names

    def spec_hash(self) -> str:
        """What decides the images (not the objective: re-weighting re-ranks, never re-runs)."""
        canonical = {
            "base": self.base.to_dict(),
            "configs": list(self.configs),
            "prompts": list(self.prompts),
            "seeds": list(self.seeds),
        }
        blob = json.dumps(canonical, sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest()

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "base": self.base.to_dict(),
            "seeds": list(self.seeds),
            "prompts": list(self.prompts),
            "axes": {k: list(v) for k, v in self.axes.items()},
            "cells": [dict(c) for c in self.configs] if not self.axes else [],
            "objective": self.objective.to_dict(),
        }

    def config_recipe(self, config: Mapping[str, Any]) -> Recipe:
        """The base recipe with one configuration's values applied (seed and prompt as base)."""
        return self.base.with_overrides(dict(config))

    def best_recipe(self, config: Mapping[str, Any]) -> Recipe:
        """The recipe to keep for a configuration: its values applied, and the first sweep
        prompt when the base recipe has none."""
        recipe = self.config_recipe(config)
        if not recipe.prompt.strip():
            recipe = recipe.with_overrides({"prompt": self.prompts[0]})
        return recipe

    def cells(self) -> list[SweepCell]:
        """Every image of the sweep: configurations x prompts x seeds, in that order."""
        out = []
        for config in self.configs:
            recipe = self.config_recipe(config)
            key = config_key(config)
            for prompt in self.prompts:
                for seed in self.seeds:
                    cell = recipe.with_overrides({"seed": seed, "prompt": prompt})
                    out.append(SweepCell(key, dict(config), prompt, seed, cell))
        return out


def config_key(config: Mapping[str, Any]) -> str:
    blob = json.dumps(dict(config), sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:12]


def config_label(config: Mapping[str, Any]) -> str:
    """``cfg=4, loras.0.strength=0.7`` (``base`` for the empty configuration)."""
    if not config:
        return "base"
    return ", ".join(f"{k}={_short(v)}" for k, v in config.items())


def _short(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, str) and ("/" in value or "\\" in value):
        return Path(value).name
    return str(value)


# -- loading -------------------------------------------------------------------------------
def load_spec(path: str | Path) -> SweepSpec:
    """Read and validate a spec file (a relative `base` path is taken from the spec's folder)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SweepSpecError(
            f"{path}: no such file; write an example with `likeness sweep new {path}`"
        ) from None
    except UnicodeDecodeError:
        raise SweepSpecError(f"{path}: not UTF-8 text; pass a TOML file") from None
    except OSError as exc:
        raise SweepSpecError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise SweepSpecError(f"{path}: not valid TOML ({exc}); fix the syntax") from exc
    return spec_from_dict(data, source=str(path), folder=path.parent)


def spec_from_dict(
    data: Mapping[str, Any], source: str = "sweep spec", folder: Path | None = None
) -> SweepSpec:
    """Validate parsed TOML into a :class:`SweepSpec`; errors name ``source`` and the key."""
    unknown = [k for k in data if k not in SPEC_KEYS]
    if unknown:
        raise SweepSpecError(
            f"{source}: unknown key {unknown[0]!r}; known keys: {', '.join(SPEC_KEYS)}"
        )
    base = _base(data.get("base"), source, folder)
    seeds = _seeds(data.get("seeds", [base.seed if base.seed >= 0 else 1]), source)
    prompts = _prompts(data.get("prompts"), base, source)
    axes_data, cells_data = data.get("axes"), data.get("cells")
    if axes_data and cells_data:
        raise SweepSpecError(
            f"{source}: give either [axes] (a grid) or [[cells]] (an explicit list), not both"
        )
    axes: dict[str, list[Any]] = {}
    if axes_data:
        if not isinstance(axes_data, Mapping):
            raise SweepSpecError(f"{source}: axes must be a table of key = [values]")
        for key, values in axes_data.items():
            if not isinstance(values, list) or not values:
                raise SweepSpecError(
                    f"{source}: axes.{key} must be a non-empty list, e.g. {key} = [1, 2]"
                )
            axes[key] = list(values)
        _check_size(math.prod(len(v) for v in axes.values()), seeds, prompts, source)
        configs = [
            dict(zip(axes, combo, strict=True)) for combo in itertools.product(*axes.values())
        ]
    elif cells_data:
        if not isinstance(cells_data, list) or not all(isinstance(c, Mapping) for c in cells_data):
            raise SweepSpecError(f"{source}: cells must be a list of tables ([[cells]])")
        configs = [dict(c) for c in cells_data]
    else:
        configs = [{}]
    _check_size(len(configs), seeds, prompts, source)
    for index, config in enumerate(configs):
        try:
            base.with_overrides(config)
        except RecipeError as exc:
            where = f"axes.{exc.field}" if axes else f"cells.{index}.{exc.field}"
            raise SweepSpecError(f"{source}: {where}: {exc.value!r} {exc.message}") from None
    objective_data = data.get("objective", {})
    if not isinstance(objective_data, Mapping):
        raise SweepSpecError(f"{source}: objective must be a table ([objective])")
    try:
        objective = Objective.from_dict(objective_data)
    except ObjectiveError as exc:
        raise SweepSpecError(f"{source}: {exc}") from None
    name = data.get("name") or (Path(source).stem if folder is not None else "sweep")
    return SweepSpec(
        name=str(name),
        base=base,
        seeds=seeds,
        prompts=prompts,
        axes=axes,
        configs=tuple(configs),
        objective=objective,
        source=source,
    )


def _check_size(
    configs: int, seeds: tuple[int, ...], prompts: tuple[str, ...], source: str
) -> None:
    """Refuse a spec over MAX_CELLS images before its grid is built (it could be huge)."""
    n_cells = configs * len(seeds) * len(prompts)
    if n_cells > MAX_CELLS:
        raise SweepSpecError(
            f"{source}: {n_cells} images is over {MAX_CELLS}; use fewer axis values or seeds"
        )


def _base(value: Any, source: str, folder: Path | None) -> Recipe:
    if value is None:
        raise SweepSpecError(
            f'{source}: base is missing; set base = "recipe.toml" or a [base] recipe table'
        )
    try:
        if isinstance(value, str):
            path = Path(value).expanduser()
            if not path.is_absolute() and folder is not None:
                path = folder / path
            return Recipe.from_toml_file(path)
        if isinstance(value, Mapping):
            return Recipe.from_dict(value)
    except RecipeError as exc:
        raise SweepSpecError(f"{source}: base.{exc.field}: {exc.value!r} {exc.message}") from None
    raise SweepSpecError(f"{source}: base must be a recipe file path or a [base] table")


def _seeds(value: Any, source: str) -> tuple[int, ...]:
    if (
        not isinstance(value, list)
        or not value
        or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in value)
    ):
        raise SweepSpecError(f"{source}: seeds must be a non-empty list of whole numbers >= 0")
    if len(set(value)) != len(value):
        raise SweepSpecError(f"{source}: seeds has repeats; list each seed once")
    return tuple(value)


def _prompts(value: Any, base: Recipe, source: str) -> tuple[str, ...]:
    if value is None:
        if not base.prompt.strip():
            raise SweepSpecError(f"{source}: no prompts and the base recipe has no prompt")
        return (base.prompt,)
    if not isinstance(value, list) or not value or not all(isinstance(p, str) for p in value):
        raise SweepSpecError(f"{source}: prompts must be a non-empty list of strings")
    return tuple(value)


EXAMPLE_SPEC = """\
# A Likeness sweep: generate every configuration below for every prompt and seed, score each
# image against the workspace's source photos, and rank the configurations.
# Run it with `likeness sweep THIS_FILE`; run the same command again after an interruption
# and it resumes where it stopped (finished images are never generated twice).

name = "lora strength x cfg"

# Each configuration is generated once per prompt and per seed (here 2 prompts x 2 seeds = 4 images).
seeds = [1, 2]
prompts = [
    "raw photo of a woman in a park, visible skin pores, unretouched natural skin texture",
    "studio portrait photo of a woman, plain grey background, soft light",
]

# The recipe every cell starts from: a recipe file (relative to this file) ...
# base = "recipe.toml"
# ... or the recipe inline, as below (any recipe field may be set; keep top-level keys such
# as seeds and prompts above this table: in TOML, keys after [base] belong to it).
[base]
model = "models/bigLove_xl.safetensors"   # single-file checkpoint, diffusers folder, or server name
family = "sdxl"
loras = [{ path = "loras/character_v1.safetensors", strength = 0.7 }]
trigger = ""                              # empty: the workspace's trigger token
trigger_placement = "start_and_middle"
negative = "blurry, deformed, extra fingers"
width = 832
height = 1216
sampler = "dpmpp_2m"
scheduler = "karras"
steps = 30
cfg = 4.0

# A grid: every combination of these values (3 x 3 = 9 configurations). Keys are recipe
# fields; dotted keys reach inside tables and lists: "loras.0.strength", "refiner.denoise",
# "detailer.denoise", "detailer.enabled", "model", "sampler", "steps", "trigger_placement".
[axes]
"loras.0.strength" = [0.5, 0.7, 0.9]
cfg = [3.0, 4.0, 5.0]

# Instead of [axes], an explicit list of configurations:
# [[cells]]
# model = "models/bigLove_xl.safetensors"
# cfg = 4.0
# [[cells]]
# model = "models/juggernaut_xl.safetensors"
# cfg = 5.0

# How configurations are ranked (higher is better), per image, averaged over seeds/prompts:
#   match_weight * match - grain_weight * max(0, grain - grain_ok)
#   - plastic_weight * max(0, plastic - plastic_ok) - flag_weight * number_of_flags
[objective]
match_weight = 1.0
grain_weight = 1.0
grain_ok = 1.5
plastic_weight = 2.0
plastic_ok = 0.3
flag_weight = 0.0
"""
"""The commented example spec written by `likeness sweep new`."""
