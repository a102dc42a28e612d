"""`likeness comfy ...`: look at a ComfyUI server, free its memory, export recipes as graphs.

`check` and `free` form the `comfy` group (`app`); `export_comfy` is the command function of
`likeness recipe export-comfy`.

`check --json` prints::

    {"url": "http://127.0.0.1:8188", "ok": true, "recipe": "elena.toml" | null,
     "system": {"comfyui_version": "0.3.64", "python_version": "...", "pytorch_version": "...",
                "os": "posix", "ram_total": 25276510208, "ram_free": ...,
                "devices": [{"name": "cuda:0 ...", "type": "cuda", "index": 0,
                             "vram_total": ..., "vram_free": ..., "torch_vram_total": ...,
                             "torch_vram_free": ...}]},
     "missing": ["missing node class FaceDetailer (slot 'detailer'): install ...", ...]}

and exits 1 when ``missing`` is not empty.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from likeness.cli.common import JSON_HELP, err, fail, out, print_json
from likeness.engines.base import EngineCannotHonour, resolve_seed
from likeness.recipes import Recipe, RecipeError

if TYPE_CHECKING:
    from likeness.engines.comfyui.protocol import SystemInfo

# httpx and the ComfyUI client are imported inside the commands: `likeness --help` stays fast.

app = typer.Typer(
    help="Talk to a ComfyUI server: check what it has, free its memory.", no_args_is_help=True
)

URL = Annotated[str, typer.Argument(help="The ComfyUI server, e.g. http://127.0.0.1:8188.")]
GIB = 1024**3


def _load_recipe(path: Path) -> Recipe:
    try:
        return Recipe.from_toml_file(path)
    except RecipeError as exc:
        fail(str(exc))
        raise  # unreachable: fail exits


@app.command("check")
def check(
    url: URL,
    recipe: Annotated[
        Path | None,
        typer.Option("--recipe", "-r", help="Also list what this recipe would miss there."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help=JSON_HELP)] = False,
) -> None:
    """Show the server's versions, devices and VRAM, and what a recipe would miss.

    Every missing node class and model file gets its own line; exits 1 when anything is
    missing, so scripts can stop before queueing work.

    Example: likeness comfy check http://127.0.0.1:8188 --recipe elena.toml
    """
    import httpx

    from likeness.engines.comfyui import client
    from likeness.engines.comfyui.engine import ComfyUIEngine, recipe_refusals
    from likeness.engines.comfyui.errors import ComfyError

    loaded = _load_recipe(recipe) if recipe is not None else None
    refused: list[str] = []
    if loaded is not None:
        try:
            recipe_refusals(loaded)
        except (EngineCannotHonour, RecipeError) as exc:
            refused.append(str(exc))
    try:
        with client.connect(url, timeout=httpx.Timeout(15.0, connect=5.0)) as http:
            engine = ComfyUIEngine(url, http=http)
            report = engine.report(loaded if loaded is not None and not refused else None)
    except httpx.TransportError as exc:
        fail(f"cannot reach ComfyUI at {url} ({type(exc).__name__}); is the server running?")
        return
    except ComfyError as exc:
        fail(str(exc))
        return
    missing = refused + list(report.missing)
    if as_json:
        data = report.to_dict()
        data.update(
            {"recipe": str(recipe) if recipe else None, "missing": missing, "ok": not missing}
        )
        print_json(data)
    else:
        _print_report(report.system, url, recipe, missing)
    if missing:
        raise typer.Exit(1)


def _print_report(system: SystemInfo, url: str, recipe: Path | None, missing: list[str]) -> None:
    out.print(
        f"ComfyUI {system.comfyui_version} at {url} (PyTorch {system.pytorch_version}, "
        f"Python {system.python_version.split()[0]}, RAM {system.ram_free / GIB:.1f} of "
        f"{system.ram_total / GIB:.1f} GiB free)",
        highlight=False,
    )
    table = Table(title="devices")
    for column in ("device", "type", "VRAM free", "VRAM total"):
        table.add_column(column)
    for d in system.devices:
        table.add_row(
            d.name, d.type, f"{d.vram_free / GIB:.1f} GiB", f"{d.vram_total / GIB:.1f} GiB"
        )
    out.print(table)
    if recipe is None:
        return
    if not missing:
        out.print(f"[green]ok:[/green] the server has everything {recipe} needs", highlight=False)
        return
    err.print(f"[red]{recipe} cannot run on this server:[/red]", highlight=False)
    for line in missing:
        err.print(f"  {line}", highlight=False, markup=False)


@app.command("free")
def free(url: URL) -> None:
    """Unload the server's models and free its memory (POST /free), e.g. before training on
    the same GPU. ComfyUI does it as soon as its queue is idle.

    Example: likeness comfy free http://127.0.0.1:8188
    """
    import httpx

    from likeness.engines.comfyui import client
    from likeness.engines.comfyui.errors import ComfyError

    try:
        client.free(url)
    except httpx.TransportError as exc:
        fail(f"cannot reach ComfyUI at {url} ({type(exc).__name__}); is the server running?")
    except ComfyError as exc:
        fail(str(exc))
    out.print(f"asked ComfyUI at {url} to unload its models and free memory", highlight=False)


def export_comfy(
    recipe: Annotated[
        Path, typer.Argument(help="The recipe TOML file.", exists=True, dir_okay=False)
    ],
    output: Annotated[
        Path | None,
        typer.Argument(
            help="Where to write the graph (default: RECIPE with .api.json; - for stdout)."
        ),
    ] = None,
    prefix: Annotated[str, typer.Option(help="SaveImage filename prefix.")] = "likeness/img",
) -> None:
    """Write the recipe as a ComfyUI API-format graph ("Load (API format)" in ComfyUI).

    A random seed (-1) is fixed first and printed. Identity reference images are named by
    their file names: put them in ComfyUI's input folder.

    Example: likeness recipe export-comfy elena.toml elena.api.json
    """
    from likeness.engines.comfyui.graph import GraphOptions, build_graph

    loaded = _load_recipe(recipe)
    if loaded.seed == -1:
        loaded = resolve_seed(loaded)
        err.print(f"seed -1: using seed {loaded.seed}", highlight=False)
    references = (
        [Path(r).name for r in loaded.identity.references] if loaded.identity.enabled else []
    )
    graph = build_graph(loaded, references=references, options=GraphOptions(filename_prefix=prefix))
    text = json.dumps(graph.api(), indent=2) + "\n"
    if output is not None and str(output) == "-":
        out.file.write(text)
        return
    target = output or recipe.with_suffix(".api.json")
    target.write_text(text, encoding="utf-8")
    err.print(f"wrote {target} ({len(graph.nodes)} nodes)", highlight=False)
