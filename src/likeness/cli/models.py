"""`likeness models ...`: work on model files themselves.

`convert --json` prints ``{"source": "ip-adapter.bin", "output": "ip-adapter.safetensors",
"tensors": 1234, "bytes": 1691411456}``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from likeness.cli.common import JSON_HELP, err, fail, out, print_json

app = typer.Typer(help="Model files: convert pickles to safetensors.", no_args_is_help=True)


@app.command("convert")
def convert(
    source: Annotated[
        Path,
        typer.Argument(help="A pickle weights file (.bin/.pt/.pth/.ckpt).", dir_okay=False),
    ],
    output: Annotated[
        Path | None,
        typer.Option(
            "--output",
            "-o",
            help="Where to write (default: SOURCE with .safetensors).",
            dir_okay=False,
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help=JSON_HELP)] = False,
) -> None:
    """Convert a pickle weights file to .safetensors, so no --allow-pickle is needed.

    The file is read with torch.load(weights_only=True): tensors and plain containers only,
    nothing in it runs. Nested tables are flattened with a dot: InstantID's and IP-Adapter's
    {"image_proj": ..., "ip_adapter": ...} become image_proj.* and ip_adapter.* keys, the
    layout diffusers and ComfyUI read back.

    Example: likeness models convert ip-adapter.bin -o ip-adapter.safetensors
    """
    from safetensors import safe_open

    from likeness.engines.diffusers.adapters import convert_to_safetensors

    if not source.expanduser().is_file():
        fail(f"{source}: does not exist; pass a .bin/.pt/.pth/.ckpt weights file")
    try:
        target = convert_to_safetensors(source, output)
    except (ValueError, OSError) as exc:
        fail(str(exc))
        return
    with safe_open(str(target), framework="pt") as handle:
        count = len(list(handle.keys()))
    result = {
        "source": str(source),
        "output": str(target),
        "tensors": count,
        "bytes": target.stat().st_size,
    }
    if as_json:
        print_json(result)
        return
    out.print(f"{source} -> {target}", highlight=False, markup=False)
    err.print(f"{count} tensors, {result['bytes'] / 1e6:.1f} MB", highlight=False)
