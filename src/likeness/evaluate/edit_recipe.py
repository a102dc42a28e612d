"""The edit recipe: which instruction-edit model runs enrichment, and how.

A small TOML file (``likeness enrich --recipe edit.toml``)::

    engine = "diffusers"                       # the engine whose edit() runs the model
    model = "~/models/qwen-image-edit-2509"    # diffusers folder: Qwen-Image-Edit (2509),
                                               # FLUX.1 Kontext or InstructPix2Pix
    steps = 30                                 # sampling steps per edit
    seed = 0                                   # noise seed of every edit
    max_side = 1024                            # sources are shrunk to this long side first
    loras = [{ path = "~/loras/angles.safetensors", strength = 1.0 }]

Edits run at about 1024 px and are upscaled later, if at all (FIELD_NOTES: an edit at 4096 px
costs a minute per step). The recipe's hash is part of every edit's key: another model, seed or
LoRA strength makes new edits; the same recipe finds the edits already made.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import math
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from likeness.recipes import LoraSpec, RecipeError

EDIT_ENGINES = ("diffusers",)
FIELDS = ("engine", "model", "steps", "seed", "max_side", "loras")


@dataclass(frozen=True)
class EditRecipe:
    """How edits are made (see the module docstring for the TOML form)."""

    engine: str = "diffusers"
    model: str = ""
    steps: int = 30
    seed: int = 0
    max_side: int = 1024
    loras: tuple[LoraSpec, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "loras", tuple(self.loras))
        if self.engine not in EDIT_ENGINES:
            raise RecipeError(
                "engine",
                self.engine,
                "has no instruction-edit model in Likeness; run enrichment on diffusers with an "
                'edit model folder (engine = "diffusers")',
            )
        if not self.model.strip():
            raise RecipeError(
                "model",
                self.model,
                "is empty; set the diffusers folder of an edit model (Qwen-Image-Edit, FLUX "
                "Kontext or InstructPix2Pix)",
            )
        if not 1 <= self.steps <= 500:
            raise RecipeError("steps", self.steps, "must be between 1 and 500")
        if not 0 <= self.seed < 2**64:
            raise RecipeError("seed", self.seed, "must be between 0 and 2**64 - 1")
        if not 64 <= self.max_side <= 8192:
            raise RecipeError("max_side", self.max_side, "must be between 64 and 8192")
        for i, lora in enumerate(self.loras):
            if not str(lora.path).strip():
                raise RecipeError(f"loras.{i}.path", lora.path, "is empty; name a LoRA file")
            if not math.isfinite(lora.strength) or not -5.0 <= lora.strength <= 5.0:
                raise RecipeError(f"loras.{i}.strength", lora.strength, "must be in [-5, 5]")

    def to_dict(self) -> dict[str, Any]:
        return {
            "engine": self.engine,
            "model": self.model,
            "steps": self.steps,
            "seed": self.seed,
            "max_side": self.max_side,
            "loras": [{"path": lo.path, "strength": lo.strength} for lo in self.loras],
        }

    def recipe_hash(self) -> str:
        blob = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "edit recipe") -> EditRecipe:
        """Build from parsed TOML; an unknown or mistyped key is named with its fix."""
        if not isinstance(data, Mapping):
            raise RecipeError(source, data, "must be a table of fields")
        for key in data:
            if key not in FIELDS:
                close = difflib.get_close_matches(key, FIELDS, n=1)
                hint = f"; did you mean {close[0]!r}?" if close else f"; known: {', '.join(FIELDS)}"
                raise RecipeError(key, data[key], f"is not an edit recipe field{hint}")
        kwargs: dict[str, Any] = {}
        for key in ("engine", "model"):
            if key in data:
                if not isinstance(data[key], str):
                    raise RecipeError(key, data[key], "must be a string")
                kwargs[key] = data[key]
        for key in ("steps", "seed", "max_side"):
            if key in data:
                value = data[key]
                if isinstance(value, bool) or not isinstance(value, int):
                    raise RecipeError(key, value, "must be a whole number")
                kwargs[key] = value
        if "loras" in data:
            kwargs["loras"] = tuple(_lora(v, i) for i, v in enumerate(_list(data["loras"])))
        return cls(**kwargs)

    @classmethod
    def from_toml_file(cls, path: str | Path) -> EditRecipe:
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise RecipeError(
                "recipe", str(path), "does not exist; pass an edit recipe TOML file"
            ) from None
        except (OSError, UnicodeDecodeError) as exc:
            raise RecipeError("recipe", str(path), f"cannot be read ({exc})") from None
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise RecipeError(str(path), "", f"is not valid TOML ({exc}); fix the syntax") from None
        return cls.from_dict(data, source=str(path))


def _list(value: Any) -> list[Any]:
    if not isinstance(value, list):
        raise RecipeError("loras", value, 'must be a list, e.g. [{ path = "a.safetensors" }]')
    return value


def _lora(value: Any, index: int) -> LoraSpec:
    where = f"loras.{index}"
    if not isinstance(value, Mapping) or not isinstance(value.get("path"), str):
        raise RecipeError(
            where, value, 'must be a table with a path, e.g. { path = "a.safetensors" }'
        )
    unknown = [k for k in value if k not in ("path", "strength")]
    if unknown:
        raise RecipeError(f"{where}.{unknown[0]}", value[unknown[0]], "is not a LoRA field")
    strength = value.get("strength", 1.0)
    if isinstance(strength, bool) or not isinstance(strength, int | float):
        raise RecipeError(f"{where}.strength", strength, "must be a number")
    return LoraSpec(path=value["path"], strength=float(strength))
