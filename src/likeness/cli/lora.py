"""`likeness lora`: the workspace's LoRA files and their lineage (dataset -> LoRA -> results)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from likeness.cli.common import JSON_HELP, fail, open_workspace, out, print_json
from likeness.engines.base import sha256_file
from likeness.store.datasets import DatasetError, parse_ref
from likeness.store.loras import (
    LoraError,
    LoraLineage,
    LoraRow,
    find_lora,
    list_loras,
    lora_by_sha256,
    lora_lineage,
)
from likeness.train.lora_files import LoraFileError, add_lora, inspect_lora
from likeness.train.store import judged_loras

app = typer.Typer(
    help="LoRA files: trained here or added, with the dataset behind them and what used them.",
    no_args_is_help=True,
)


@app.command("list")
def list_(
    ctx: typer.Context,
    dataset: Annotated[
        str | None, typer.Option(help="Only LoRAs of this dataset: NAME or NAME@vN.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help=JSON_HELP)] = False,
) -> None:
    """Every recorded LoRA with its dataset version and how often it was used.

    Example: likeness lora list --dataset mara
    """
    with open_workspace(ctx) as ws:
        try:
            name, version = parse_ref(dataset) if dataset else (None, None)
        except DatasetError as exc:
            fail(str(exc))
        rows = list_loras(ws.db, dataset=name, dataset_version=version)
        uses = {row.sha256: lora_lineage(ws.db, row.sha256) for row in rows}
        judged = judged_loras(ws.db)
    if as_json:
        print_json(
            [
                {**row.to_dict(), **_counts(uses[row.sha256]), "judge": _judge(judged, row.id)}
                for row in rows
            ]
        )
        return
    if not rows:
        out.print("no LoRAs yet: `likeness train`, or `likeness lora add FILE --dataset NAME@vN`")
        return
    table = Table("id", "name", "model", "steps", "dataset", "source", "sha256", "used", "judged")
    for row in rows:
        counts = _counts(uses[row.sha256])
        table.add_row(
            str(row.id),
            row.name,
            f"{row.family} r{row.rank} a{row.alpha:g}",
            "-" if row.steps is None else str(row.steps),
            row.dataset or "-",
            row.source,
            row.sha256[:10],
            f"{counts['sweeps']} sweeps, {counts['cards']} cards, {counts['generations']} images",
            _judged_cell(_judge(judged, row.id)),
        )
    out.print(table)


@app.command("show")
def show(
    ctx: typer.Context,
    ref: Annotated[str, typer.Argument(help="LoRA id, sha256 (or 8+ digits of it), name or file.")],
    as_json: Annotated[bool, typer.Option("--json", help=JSON_HELP)] = False,
) -> None:
    """One LoRA: its dataset version, and the sweeps, model cards and images made with it.

    Example: likeness lora show mara-v2
    """
    with open_workspace(ctx) as ws:
        row = _find(ws.db, ref)
        lineage = lora_lineage(ws.db, row.sha256)
        judge = _judge(judged_loras(ws.db), row.id)
    exists = Path(row.path).is_file()
    if as_json:
        print_json(
            {
                **row.to_dict(with_metadata=True),
                "exists": exists,
                "lineage": lineage.to_dict(),
                "judge": judge,
            }
        )
        return
    out.print(f"[bold]{row.name}[/bold] (LoRA {row.id}, {row.source})", highlight=False)
    out.print(f"file      {row.path}{'' if exists else '  [red](missing)[/red]'}", highlight=False)
    out.print(f"sha256    {row.sha256}", highlight=False)
    out.print(
        f"model     {row.family}, rank {row.rank}, alpha {row.alpha:g}, "
        f"steps {'-' if row.steps is None else row.steps}, base {row.base_model}",
        highlight=False,
    )
    run = f", training run {row.train_run}" if row.train_run is not None else ""
    out.print(f"dataset   {row.dataset or '- (not recorded)'}{run}", highlight=False)
    trigger = row.metadata.get("likeness_trigger") or row.metadata.get("modelspec.trigger_phrase")
    if trigger:
        out.print(f"trigger   {trigger}", highlight=False)
    if judge is not None:
        out.print(f"judged    {_judged_cell(judge)}", highlight=False)
    _print_lineage(lineage)


@app.command("add")
def add(
    ctx: typer.Context,
    file: Annotated[Path, typer.Argument(help="The LoRA .safetensors trained elsewhere.")],
    dataset: Annotated[
        str | None,
        typer.Option(help="The dataset version it was trained on: NAME@vN (its lineage)."),
    ] = None,
    name: Annotated[str | None, typer.Option(help="Its name (default: the file name).")] = None,
    family: Annotated[
        str | None,
        typer.Option(help="sdxl, sd15 or flux; needed only when the file does not say."),
    ] = None,
    base_model: Annotated[
        str | None, typer.Option(help="The base model it was trained on (default: metadata).")
    ] = None,
    in_place: Annotated[
        bool,
        typer.Option(help="Record the file where it is instead of copying it into loras/."),
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help=JSON_HELP)] = False,
) -> None:
    """Record a LoRA trained elsewhere (kohya, ai-toolkit, ...) with its dataset version.

    The file is copied into the workspace's loras/ folder unless --in-place. Without
    --dataset, the version the file names (configs from `train export-config` make the
    trainers write it) is used when this workspace has it with the same content.

    Example: likeness lora add ~/Downloads/mara_v2.safetensors --dataset mara@v2
    """
    with open_workspace(ctx) as ws:
        try:
            added = add_lora(
                ws,
                file,
                dataset=dataset,
                name=name,
                family=family,
                base_model=base_model,
                in_place=in_place,
            )
        except (LoraFileError, LoraError, DatasetError, ValueError) as exc:
            fail(str(exc))
    row = added.row
    if as_json:
        print_json({**row.to_dict(), "new": added.new, "dataset_from": added.dataset_from})
        return
    verb = "recorded" if added.new else "already recorded"
    out.print(
        f"{verb} [bold]{row.name}[/bold] (LoRA {row.id}): {row.family}, rank {row.rank}, "
        f"alpha {row.alpha:g}, dataset {row.dataset or '-'} -> {row.path}",
        highlight=False,
    )
    if added.dataset_from == "metadata":
        out.print(f"dataset {row.dataset} read from the file's metadata (its hash matches)")


def _find(conn: Any, ref: str) -> LoraRow:
    """A LoRA by id, sha256, name, or by the content of a file at ``ref``."""
    path = Path(ref).expanduser()
    if path.is_file():
        row = lora_by_sha256(conn, sha256_file(path))
        if row is None:
            try:
                info = inspect_lora(path)
            except LoraFileError as exc:
                fail(str(exc))
            fail(
                f"{path} ({info.family or 'unknown family'}, rank {info.rank}) is not recorded; "
                f"record it with `likeness lora add {path} --dataset NAME@vN`"
            )
        return row  # type: ignore[return-value]
    try:
        return find_lora(conn, ref)
    except LoraError as exc:
        fail(str(exc))
    raise AssertionError("unreachable")


def _judge(judged: dict[int, Any], lora_id: int) -> dict[str, Any] | None:
    """``{"metrics": ..., "best": bool}`` of a LoRA that is a training checkpoint, or None."""
    if lora_id not in judged:
        return None
    metrics, best = judged[lora_id]
    return {"metrics": metrics, "best": best}


def _judged_cell(judge: dict[str, Any] | None) -> str:
    if judge is None:
        return "-"
    m = judge["metrics"]
    if not m:
        return "best" if judge["best"] else "not judged"
    text = (
        f"match {m['match']:.2f}, pass {m['pass_rate']:.0%}"
        if m.get("match") is not None
        else f"no face, pass {m['pass_rate']:.0%}"
    )
    if m.get("memorised"):
        text += f", {m['memorised']} memorised"
    return f"{text}, best of its run" if judge["best"] else text


def _counts(lineage: LoraLineage) -> dict[str, int]:
    return {
        "sweeps": len(lineage.sweeps),
        "cards": len(lineage.cards),
        "generations": lineage.generations,
    }


def _print_lineage(lineage: LoraLineage) -> None:
    out.print(f"images    {lineage.generations} generated with it", highlight=False)
    if lineage.sweeps:
        table = Table("sweep", "name", "images", "finished", title="sweeps")
        for use in lineage.sweeps:
            table.add_row(str(use.id), use.name, str(use.images), use.finished_at or "-")
        out.print(table)
    if lineage.cards:
        table = Table("card", "label", "first try", "mean match", "finished", title="model cards")
        for use in lineage.cards:
            summary = use.summary or {}
            rate = summary.get("first_try_rate")
            match = summary.get("mean_match")
            table.add_row(
                str(use.id),
                use.name,
                "-" if rate is None else f"{rate:.0%}",
                "-" if match is None else f"{match:.3f}",
                use.finished_at or "-",
            )
        out.print(table)
    if not lineage.sweeps and not lineage.cards:
        out.print("no sweep or model card has used it yet")
