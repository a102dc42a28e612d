"""The workspace's current recipe: `<workspace>/recipe.toml`, the one the loop and the model
card run by default.

It is an ordinary recipe file (see `likeness recipe show`). `likeness sweep ... --best-out
recipe.toml` writes the winner of a sweep there; after training a new LoRA, point its
`loras` entry at the new file. A recipe without a trigger gets the workspace's trigger token.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from likeness.recipes import Recipe, RecipeError

if TYPE_CHECKING:
    from likeness.workspace import Workspace

RECIPE_FILE = "recipe.toml"


def recipe_path(ws: Workspace) -> Path:
    return ws.root / RECIPE_FILE


def current_recipe(ws: Workspace, path: Path | None = None) -> Recipe:
    """The recipe at ``path`` (default `<workspace>/recipe.toml`), with the workspace trigger
    filled in when the recipe has none. Raises RecipeError naming the file and the fix."""
    path = path or recipe_path(ws)
    if not path.is_file():
        raise RecipeError(
            "recipe",
            str(path),
            "does not exist; write one (`likeness recipe show --json`, or "
            f"`likeness sweep SPEC --best-out {path}`) or pass --recipe FILE",
        )
    return with_workspace_trigger(Recipe.from_toml_file(path), ws)


def with_workspace_trigger(recipe: Recipe, ws: Workspace) -> Recipe:
    """``recipe`` with the workspace's trigger token when its own trigger is empty."""
    if recipe.trigger.strip() or not ws.settings.character.trigger:
        return recipe
    return recipe.with_overrides({"trigger": ws.settings.character.trigger})
