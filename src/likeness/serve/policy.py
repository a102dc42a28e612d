"""Which files a user's recipe may name: models the admin shared with everyone, and the
user's own folder; LoRAs and reference photos from the user's own folder only.

Every file field of a recipe goes through :meth:`PathPolicy.check_recipe` before a job is
queued. A name is resolved (symlinks followed) and must then lie inside an allowed folder
(`Path.resolve()` + `is_relative_to`); `..`, `~`, URLs and paths that leave the folders are
refused with one line naming the field. The refusal never says whether the file exists
elsewhere: another user's LoRA and a path that names nothing are refused alike.

Example::

    policy = PathPolicy(user_root=tenant.root, shared=settings.shared_folders())
    recipe = policy.check_recipe(recipe)   # absolute, checked paths; or RecipeRefused
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from likeness.recipes import Recipe

_HOSTED = ("replicate", "fal")


class RecipeRefused(ValueError):
    """A recipe field names something this user may not use; names the field and the fix."""

    def __init__(self, field: str, value: Any, reason: str) -> None:
        self.field = field
        self.value = value
        self.reason = reason
        super().__init__(f"{field}: {value!r} {reason}")


@dataclass(frozen=True)
class PathPolicy:
    """The folders one user's recipes may read from.

    `user_root`: the user's workspace; `shared`: the admin's shared model folders. Both are
    resolved once here.
    """

    user_root: Path
    shared: tuple[Path, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "user_root", Path(self.user_root).resolve())
        object.__setattr__(self, "shared", tuple(Path(p).resolve() for p in self.shared))

    # -- single values ---------------------------------------------------------------------
    def resolve(self, field: str, value: str, *, shared_ok: bool = True) -> Path:
        """The file `value` names, inside the allowed folders, or RecipeRefused.

        Relative names are looked up in the shared folders first (when allowed), then in the
        user's folder; absolute ones must already lie inside one of them.
        """
        text = value.strip()
        where = "the shared models or your folder" if shared_ok else "your own folder"
        if "://" in text or text.startswith(("~", "\\\\")) or "\x00" in text:
            raise RecipeRefused(field, value, f"is not a file in {where}; name one from the lists")
        roots = [*(self.shared if shared_ok else ()), self.user_root]
        path = Path(text)
        candidates = [path] if path.is_absolute() else [root / path for root in roots]
        for candidate in candidates:
            try:
                resolved = candidate.resolve()
            except (OSError, RuntimeError):
                continue
            if any(resolved.is_relative_to(root) for root in roots) and resolved.exists():
                return resolved
        raise RecipeRefused(field, value, f"is not a file in {where}; name one from the lists")

    def resolve_many(
        self, field: str, values: Iterable[str], *, shared_ok: bool = True
    ) -> tuple[str, ...]:
        return tuple(
            str(self.resolve(f"{field}.{i}", v, shared_ok=shared_ok)) for i, v in enumerate(values)
        )

    # -- recipes ---------------------------------------------------------------------------
    def check_recipe(self, recipe: Recipe) -> Recipe:
        """The recipe with every file field resolved inside the allowed folders.

        diffusers: model and passes' files from the shared folders or the user's; LoRAs and
        identity references from the user's folder. comfyui: the server holds the files, so
        model and pass files must be shared ones, named as the server names them, and LoRAs
        are refused (a ComfyUI server's LoRA folder is one for every user). replicate/fal:
        the model is the provider's; LoRAs are the user's own files (uploaded by the engine),
        never URLs or hub names.
        """
        engine = recipe.engine
        overrides: dict[str, Any] = {}
        # 1. The checkpoint.
        if recipe.model.strip() and engine not in _HOSTED:
            found = self.resolve("model", recipe.model)
            if engine == "comfyui":
                self._shared_only("model", recipe.model, found)
            else:
                overrides["model"] = str(found)
        elif engine in _HOSTED:
            self._no_location("model", recipe.model)
        # 2. LoRAs: the user's own files only.
        if recipe.loras and engine == "comfyui":
            raise RecipeRefused(
                "loras",
                [lora.path for lora in recipe.loras],
                "cannot run on ComfyUI here: its LoRA folder is shared by every user; use the "
                "diffusers or a hosted engine for your LoRAs",
            )
        loras = tuple(
            replace(lora, path=str(self.resolve(f"loras.{i}.path", lora.path, shared_ok=False)))
            for i, lora in enumerate(recipe.loras)
        )
        if loras:
            overrides["loras"] = [lora.__dict__ for lora in loras]
        # 3. Passes that read files.
        if recipe.upscale.enabled and recipe.upscale.model.strip():
            overrides["upscale.model"] = self._pass_file(engine, "upscale.model", recipe.upscale)
        ident = recipe.identity
        if ident.enabled:
            for name in ("adapter", "controlnet", "insightface", "image_encoder"):
                value = getattr(ident, name)
                if value.strip():
                    overrides[f"identity.{name}"] = self._pass_file(
                        engine, f"identity.{name}", ident, attr=name
                    )
            overrides["identity.references"] = list(
                self.resolve_many("identity.references", ident.references, shared_ok=False)
            )
        # 4. Engine inputs: plain values, never locations.
        for engine_name, values in recipe.engine_inputs.items():
            for key, value in values.items():
                self._no_location(f"engine_inputs.{engine_name}.{key}", value)
        return recipe.with_overrides(overrides) if overrides else recipe

    def _pass_file(self, engine: str, field: str, section: Any, attr: str = "model") -> str:
        value = getattr(section, attr)
        found = self.resolve(field, value)
        if engine == "comfyui":
            self._shared_only(field, value, found)
            return value
        return str(found)

    def _shared_only(self, field: str, value: str, found: Path) -> None:
        if not any(found.is_relative_to(root) for root in self.shared):
            raise RecipeRefused(
                field, value, "must be a shared model on ComfyUI (the server holds the files)"
            )

    @staticmethod
    def _no_location(field: str, value: Any) -> None:
        text = str(value).strip()
        if "://" in text or text.startswith(("/", "~", "\\")) or ".." in Path(text).parts:
            raise RecipeRefused(field, value, "may not name a URL or a path on this server")


def lora_choices(rows: Iterable[Mapping[str, Any]], user_root: Path) -> list[dict[str, Any]]:
    """The user's LoRAs whose files are inside their folder (what the browser offers)."""
    root = Path(user_root).resolve()
    chosen = []
    for row in rows:
        try:
            inside = Path(row["path"]).resolve().is_relative_to(root)
        except (OSError, RuntimeError):
            inside = False
        if inside:
            chosen.append(dict(row))
    return chosen
