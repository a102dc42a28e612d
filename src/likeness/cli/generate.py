"""`likeness generate`: run a recipe on an engine and store every image with its provenance.

The run is a job (kind ``generate``): interrupted and started again with the same arguments,
it goes on from the last stored image with the same seeds. Each image enters the workspace as
origin ``synthetic``; its provenance (recipe, seed, model/LoRA sha256s, engine, timings) is in
the database (``generations`` table) and inside the PNG (A1111 ``parameters`` + ``likeness``).

``--json`` shape::

    {"job": 3, "resumed": false, "engine": "diffusers", "recipe_hash": "...", "seed": 1234,
     "n": 4, "images": [{"seed": 1234, "sha256": "...", "status": "stored", "reason": null,
     "total_s": 8.1}], "scores": [ImageScore dicts] | null, "score_error": null}
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from likeness.cli.common import (
    JSON_HELP,
    err,
    error_line,
    fail,
    open_workspace,
    out,
    print_json,
    resumable,
)
from likeness.cli.recipe import SET_HELP, load_recipe
from likeness.cli.scaling import RayOption, WorkersOption, build_pool, run_display, scale_ask
from likeness.cli.sweep import MaxCostOption, MaxImagesOption
from likeness.engines import (
    ENGINE_NAMES,
    EngineCannotHonour,
    EngineError,
    EnginePool,
    ProgressUpdate,
    get_engine,
    resolve_seed,
)
from likeness.engines.base import MAX_SEED
from likeness.engines.records import job_seeds, record_generation
from likeness.jobs import Job, job_key, start_job
from likeness.recipes import Recipe, RecipeError

if TYPE_CHECKING:
    from rich.progress import Progress, TaskID

    from likeness.curate.ingest import Ingester
    from likeness.engines import Engine, GeneratedImage
    from likeness.metrics import ImageScore
    from likeness.workspace import Workspace


def generate(
    ctx: typer.Context,
    recipe: Annotated[
        Path | None, typer.Option("--recipe", "-r", help="Recipe TOML file (defaults if left out).")
    ] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help=SET_HELP)] = None,
    n: Annotated[int, typer.Option("-n", min=1, help="How many images.")] = 1,
    engine: Annotated[
        str | None,
        typer.Option(
            help=f"Engine: {', '.join(ENGINE_NAMES)} (default: the recipe's; comfyui when "
            "--comfy-url is given)."
        ),
    ] = None,
    comfy_url: Annotated[
        list[str] | None,
        typer.Option(
            "--comfy-url",
            help="ComfyUI server URL (engine comfyui); repeat it to spread the images over "
            "several servers, one Ray worker each.",
        ),
    ] = None,
    workers: WorkersOption = None,
    ray: RayOption = None,
    allow_pickle: Annotated[
        bool,
        typer.Option("--allow-pickle", help="Accept pickle model files (.ckpt .pt .bin)."),
    ] = False,
    device: Annotated[
        str | None, typer.Option(help="diffusers: cuda, mps or cpu (default: best).")
    ] = None,
    dtype: Annotated[
        str | None, typer.Option(help="diffusers: bf16, fp16 or fp32 (default: by device).")
    ] = None,
    max_cost: MaxCostOption = None,
    max_images: MaxImagesOption = None,
    score: Annotated[
        bool,
        typer.Option("--score/--no-score", help="Score new images against the source photos."),
    ] = True,
    as_json: Annotated[bool, typer.Option("--json", help=JSON_HELP)] = False,
) -> None:
    """Generate images from a recipe and store them, with provenance, as synthetic images.

    The engine checks the whole recipe before any work and names the field it cannot honour.
    Image i gets seed `seed + i` (a random base seed when the recipe's seed is -1).

    Example: likeness generate --recipe elena.toml --set cfg=4.5 -n 8
    """
    # 1. Recipe and engine; refuse before any work.
    try:
        loaded = load_recipe(recipe, set_)
        if engine is None and comfy_url:
            engine = "comfyui"  # a server URL says where to run
        if engine is not None:
            loaded = loaded.with_overrides({"engine": engine})
    except RecipeError as exc:
        fail(str(exc))
    asked = {"workers": workers, "comfy_urls": comfy_url, "ray": ray}
    with (
        open_workspace(ctx) as ws,
        contextlib.closing(
            _build(loaded.engine, asked, allow_pickle, device, dtype, ws, max_cost, max_images)
        ) as runner,
    ):
        try:
            runner.check(loaded)
        except (EngineCannotHonour, ValueError) as exc:
            fail(str(exc))
        except Exception as exc:  # a server that cannot be reached
            fail(f"{loaded.engine}: {type(exc).__name__}: {exc}")
        # 2. The job: same recipe and n resume the unfinished run with its seeds.
        job = start_job(
            ws.db,
            "generate",
            job_key("generate", loaded.recipe_hash(), n),
            total=n,
            params={"recipe": loaded.to_dict(), "n": n, "engine": loaded.engine},
        )
        seeded = _job_seed(ws.db, job.id, loaded)
        if job.resumed:
            err.print(f"resuming job {job.id} ({job.done}/{n} images stored before)")
        # 3. Generate, store, record.
        from likeness.curate.ingest import Ingester

        ingester = Ingester(ws, origin="synthetic")
        rows: list[dict[str, Any]] = []
        with resumable(f"job {job.id}", on_error=job.fail), run_display(runner) as bar:
            images_task = bar.add_task("images", total=n, completed=job.done)
            pooled = isinstance(runner, EnginePool)
            if pooled:  # every batch at once, each image stored as it arrives
                rows = _generate_pooled(runner, ingester, ws.db, job, seeded, n, bar, images_task)
            step_task = bar.add_task("steps", total=1, visible=not pooled)

            def on_progress(update: ProgressUpdate) -> None:
                bar.update(
                    step_task,
                    description=update.stage,
                    completed=update.step,
                    total=max(update.steps, 1),
                )

            # Images stored after the last progress mark (a kill inside a batch) are not
            # stored again: their PNGs would differ by their timings alone.
            stored_before = Counter(job_seeds(ws.db, job.id))
            for start in range(n if pooled else job.done, n, seeded.batch):
                count = min(seeded.batch, n - start)
                chunk = seeded.with_overrides({"seed": (seeded.seed + start) % (MAX_SEED + 1)})
                for image in runner.generate(chunk, count, progress=on_progress):
                    if stored_before[image.seed] > 0:
                        stored_before[image.seed] -= 1
                    else:
                        rows.append(_store(ingester, ws.db, image, job.id, seeded))
                    bar.advance(images_task)
                job.set_progress(start + count)
        stored = sum(r["status"] in ("stored", "near_duplicate") for r in rows)
        job.finish(message=f"{stored} images stored")
        # 4. Score right away, when the workspace has source photos to compare with.
        scores, score_error = (None, None)
        if score and rows:
            scores, score_error = _score(ws, [r["sha256"] for r in rows if r["sha256"]])
    result = {
        "job": job.id,
        "resumed": job.resumed,
        "engine": seeded.engine,
        "recipe_hash": loaded.recipe_hash(),
        "seed": seeded.seed,
        "n": n,
        "images": rows,
        "scores": scores,
        "score_error": score_error,
    }
    if as_json:
        print_json(result)
    else:
        _print_summary(result)


def _build(
    name: str,
    asked: dict[str, Any],
    allow_pickle: bool,
    device: str | None,
    dtype: str | None,
    ws: Workspace,
    max_cost: float | None,
    max_images: int | None,
) -> Engine | EnginePool:
    """The engine, or a pool of workers when ``asked`` (--workers, --comfy-url, --ray) or
    the workspace's [scale] settings want one."""
    ask = scale_ask(ws.settings.scale, name, **asked)
    if ask is not None:
        options = {"allow_pickle": allow_pickle, "device": device, "dtype": dtype}
        return build_pool(ask, name, ws.settings.scale, options)
    comfy_url = asked["comfy_urls"][0] if asked["comfy_urls"] else None
    engine_options: dict[str, Any] = {}
    if name == "diffusers":
        engine_options = {"device": device, "dtype": dtype}
    elif name in ("replicate", "fal"):
        engine_options = {
            "settings": ws.settings.hosted,
            "max_cost": max_cost,
            "max_images": max_images,
        }
    try:
        return get_engine(name, comfy_url=comfy_url, allow_pickle=allow_pickle, **engine_options)
    except ValueError as exc:
        fail(str(exc))
    except Exception as exc:  # a missing extra, a hosted API token that is not set
        fail(f"{name}: {type(exc).__name__}: {exc}")
    raise AssertionError("unreachable")


def _generate_pooled(
    pool: EnginePool,
    ingester: Ingester,
    conn: sqlite3.Connection,
    job: Job,
    recipe: Recipe,
    n: int,
    bar: Progress,
    images_task: TaskID,
) -> list[dict[str, Any]]:
    """Step 3 on a pool of workers: every batch not stored yet is submitted at once and each
    image is stored as it arrives. The job's mark counts the batches stored without a gap
    from the first, as a run here does, so either kind of run resumes the other."""
    starts = list(range(0, n, recipe.batch))
    counts = [min(recipe.batch, n - start) for start in starts]
    stored = Counter(job_seeds(conn, job.id))
    done: set[int] = set()
    for i, (start, count) in enumerate(zip(starts, counts, strict=True)):
        chunk = recipe.with_overrides({"seed": (recipe.seed + start) % (MAX_SEED + 1)})
        seeds = {(chunk.seed + k) % (MAX_SEED + 1) for k in range(count)}
        if sum(stored[seed] for seed in seeds) >= count:
            done.add(i)
        else:
            pool.submit(i, chunk, count)
    bar.update(images_task, completed=sum(counts[i] for i in done))
    made: dict[int, list[dict[str, Any]]] = {}
    failures: list[str] = []
    for arrived in pool.completed():
        i = int(arrived.tag)  # type: ignore[call-overload]
        if arrived.error is not None:
            failures.append(f"seed {arrived.recipe.seed}: {arrived.error}")
            continue
        made[i] = [_store(ingester, conn, image, job.id, recipe) for image in arrived.images]
        bar.advance(images_task, len(arrived.images))
        done.add(i)
        mark = next((k for k in range(len(starts)) if k not in done), len(starts))
        job.set_progress(sum(counts[:mark]))
    if failures:
        raise EngineError(f"{len(failures)} of {len(starts)} batches failed ({failures[0]})")
    return [row for i in sorted(made) for row in made[i]]


def _job_seed(conn: sqlite3.Connection, job_id: int, recipe: Recipe) -> Recipe:
    """The recipe with the job's base seed: chosen once per job, kept across resumes."""
    row = conn.execute("SELECT params FROM jobs WHERE id = ?", (job_id,)).fetchone()
    params = json.loads(row[0]) if row else {}
    if params.get("base_seed") is not None:
        return recipe.with_overrides({"seed": params["base_seed"]})
    seeded = resolve_seed(recipe)
    params["base_seed"] = seeded.seed
    from likeness.store.db import transaction

    with transaction(conn):
        conn.execute(
            "UPDATE jobs SET params = ? WHERE id = ?", (json.dumps(params, sort_keys=True), job_id)
        )
    return seeded


def _store(
    ingester: Ingester,
    conn: sqlite3.Connection,
    image: GeneratedImage,
    job_id: int,
    recipe: Recipe,
) -> dict[str, Any]:
    provenance = dict(image.provenance)
    result = ingester.ingest_bytes(
        image.png,
        name=f"gen-{recipe.recipe_hash()[:8]}-{image.seed}.png",
        on_stored=lambda sha: record_generation(conn, sha, provenance, job_id),
    )
    return {
        "seed": image.seed,
        "sha256": result.sha256,
        "status": result.status,
        "reason": result.reason,
        "total_s": provenance.get("timings", {}).get("total_s"),
    }


def _score(ws: Workspace, shas: list[str]) -> tuple[list[dict[str, Any]] | None, str | None]:
    """Score new images against the workspace's source photos; (scores, reason not scored)."""
    from likeness.evaluate.scorer import reference_paths

    references = reference_paths(ws)
    if not references:
        return None, "no source photos in the workspace to compare with"
    try:
        from likeness.metrics import score_images

        run = score_images([ws.blobs.path(s) for s in shas], references, conn=ws.db)
    except Exception as exc:  # missing optional models must not lose the stored images
        return None, error_line(exc)
    return [_plain(s) for s in run.scores], None


def _plain(score: ImageScore | Mapping[str, Any]) -> dict[str, Any]:
    """The stable JSON shape of a score (``pass``, not ``passed``; no NaN), as `likeness score`."""
    if isinstance(score, Mapping):
        return dict(score)
    return score.to_json()


def _print_summary(result: dict[str, Any]) -> None:
    scores = {s.get("sha256"): s for s in result["scores"] or []}
    table = Table(title=f"job {result['job']}: {result['engine']}, base seed {result['seed']}")
    table.add_column("seed", justify="right")
    table.add_column("image")
    table.add_column("status")
    table.add_column("seconds", justify="right")
    if scores:
        table.add_column("match", justify="right")
        table.add_column("flags")
    for row in result["images"]:
        cells = [
            str(row["seed"]),
            (row["sha256"] or "")[:12],
            row["status"] + (f" ({row['reason']})" if row["reason"] else ""),
            "" if row["total_s"] is None else f"{row['total_s']:.1f}",
        ]
        if scores:
            score = scores.get(row["sha256"]) or {}
            match = score.get("match")
            cells += ["" if match is None else str(match), ", ".join(score.get("flags") or [])]
        table.add_row(*cells)
    out.print(table)
    if result["score_error"]:
        err.print(f"not scored: {result['score_error']}", highlight=False)
