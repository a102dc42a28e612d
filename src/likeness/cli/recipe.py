"""`likeness recipe`: read, check and edit generation recipes (TOML files).

``--json`` shapes:

- ``show``: the full recipe as a dict (every field, defaults filled in) plus
  ``{"prompt_sent": "...", "recipe_hash": "..."}``;
- ``validate``: ``{"recipe": "elena.toml", "ok": true, "field": null, "error": null,
  "engine": "diffusers" | null, "missing": ["identity.adapter: ... does not exist ...", ...]}``.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from likeness.cli.common import JSON_HELP, fail, out, print_json
from likeness.recipes import Recipe, RecipeError, build_prompt, write_text_atomic

app = typer.Typer(
    help="Generation recipes: show them with defaults, validate them, set fields.",
    no_args_is_help=True,
)

SET_HELP = "Override a field: key=value, dotted for nested fields (loras.0.strength=0.8)."


def parse_assignments(assignments: list[str]) -> dict[str, str]:
    """``["cfg=5", "loras.0.strength=0.8"]`` -> ``{"cfg": "5", "loras.0.strength": "0.8"}``."""
    parsed: dict[str, str] = {}
    for item in assignments:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise RecipeError("--set", item, "is not key=value (e.g. cfg=4.5)")
        parsed[key.strip()] = value.strip()
    return parsed


def load_recipe(path: Path | None, assignments: list[str] | None = None) -> Recipe:
    """The recipe in ``path`` (defaults when None) with ``key=value`` overrides applied."""
    recipe = Recipe.from_toml_file(path) if path is not None else Recipe()
    if assignments:
        recipe = recipe.with_overrides(parse_assignments(assignments))
    return recipe


@app.command("show")
def show(
    recipe: Annotated[
        Path | None, typer.Argument(help="Recipe TOML file; the defaults when left out.")
    ] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help=SET_HELP)] = None,
    as_json: Annotated[bool, typer.Option("--json", help=JSON_HELP)] = False,
) -> None:
    """Print a recipe with every default filled in, and the prompt an engine would send.

    Example: likeness recipe show elena.toml --set cfg=5
    """
    try:
        loaded = load_recipe(recipe, set_)
    except RecipeError as exc:
        fail(str(exc))
    prompt = build_prompt(loaded)
    if as_json:
        print_json({**loaded.to_dict(), "prompt_sent": prompt, "recipe_hash": loaded.recipe_hash()})
        return
    out.print(loaded.to_toml(), highlight=False, markup=False)
    out.print(f"# prompt sent: {prompt}", highlight=False, markup=False)


@app.command("validate")
def validate(
    recipe: Annotated[Path, typer.Argument(help="Recipe TOML file.")],
    engine: Annotated[
        bool,
        typer.Option(
            "--engine/--no-engine",
            help="Also ask the recipe's engine whether it can run it (no generation).",
        ),
    ] = False,
    comfy_url: Annotated[
        str | None, typer.Option("--comfy-url", help="ComfyUI server, for engine comfyui.")
    ] = None,
    allow_pickle: Annotated[
        bool, typer.Option("--allow-pickle", help="Accept .ckpt/.pt/.bin model files.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help=JSON_HELP)] = False,
) -> None:
    """Check a recipe: field values, the identity pass's local files (diffusers), and with
    --engine what the engine cannot honour.

    Exit status 0 when valid, 1 when not (one line naming the field; one line per missing
    identity file: adapter, ControlNet, InsightFace folder, references).

    Example: likeness recipe validate elena.toml --engine
    """
    result: dict[str, Any] = {
        "recipe": str(recipe),
        "ok": True,
        "field": None,
        "error": None,
        "engine": None,
        "missing": [],
    }
    try:
        loaded = Recipe.from_toml_file(recipe)
        missing = identity_files_missing(loaded, allow_pickle=allow_pickle)
        if missing:
            first = missing[0]
            result.update(missing=[str(p) for p in missing], field=first.field)
            raise first
        if engine:
            from likeness.engines import get_engine

            result["engine"] = loaded.engine
            runner = get_engine(loaded.engine, comfy_url=comfy_url, allow_pickle=allow_pickle)
            try:
                runner.check(loaded)
            finally:
                runner.close()
    except Exception as exc:  # RecipeError, EngineCannotHonour, a server that cannot be reached
        result.update(ok=False, field=getattr(exc, "field", None), error=str(exc))
    if as_json:
        print_json(result)
    elif result["ok"]:
        out.print(f"{recipe}: ok", highlight=False)
    else:
        for line in result["missing"] or [result["error"]]:
            out.print(f"[red]{recipe}:[/red] {escape(line)}", highlight=False)
    if not result["ok"]:
        raise typer.Exit(1)


def identity_files_missing(recipe: Recipe, *, allow_pickle: bool) -> list[Any]:
    """Every identity file problem of a diffusers recipe (files are local there; a ComfyUI
    server names its own with ``--engine``)."""
    if not recipe.identity.enabled or recipe.engine != "diffusers":
        return []
    from likeness.engines.diffusers.adapters import identity_problems

    return list(identity_problems(recipe.identity, allow_pickle=allow_pickle))


@app.command("set")
def set_fields(
    recipe: Annotated[Path, typer.Argument(help="Recipe TOML file (created if missing).")],
    assignments: Annotated[list[str], typer.Argument(help=SET_HELP)],
) -> None:
    """Write key=value pairs into a recipe file, keeping the fields it does not mention.

    The whole recipe is validated first; nothing is written when a value is wrong.

    Example: likeness recipe set elena.toml cfg=4.5 loras.0.path=elena-v2.safetensors
    """
    try:
        raw = tomllib.loads(recipe.read_text(encoding="utf-8")) if recipe.exists() else {}
        overrides = parse_assignments(assignments)
        updated = Recipe.from_dict(raw).with_overrides(overrides).to_dict()
    except tomllib.TOMLDecodeError as exc:
        fail(f"{recipe}: is not valid TOML ({exc}); fix the syntax")
    except UnicodeDecodeError:
        fail(f"{recipe}: is not UTF-8 text; pass a TOML recipe file")
    except OSError as exc:
        fail(f"{recipe}: cannot be read ({exc.strerror or exc})")
    except RecipeError as exc:
        fail(str(exc))
    for key in overrides:
        _copy_field(raw, updated, key.split("."))
    import tomli_w

    write_text_atomic(recipe, tomli_w.dumps(raw))
    out.print(f"{recipe}: set {', '.join(overrides)}", highlight=False)


def _copy_field(raw: dict[str, Any], full: dict[str, Any], parts: list[str]) -> None:
    """Copy the field at ``parts`` from the full recipe into the file's own table."""
    top = parts[0]
    if top == "loras" or len(parts) == 1 or not isinstance(full[top], dict):
        raw[top] = full[top]
        return
    table = raw.setdefault(top, {})
    table[parts[1]] = full[top][parts[1]]
