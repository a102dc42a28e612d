"""The photoshoot's JSON API: photos in, datasets cut, generation, model cards and training
queued, progress and results out, all on the signed-in user's workspace.

Every route takes the tenant first (`CurrentTenant`) and a connection to that tenant's
database (`TenantDb`); every id in a path or body (image hash, dataset name, LoRA hash, job
id, card label) is looked up there, or in the queue with the user's id, and an id that is
not found (another user's, or none at all) is 404 with the same body: `{"detail":
"not found"}`. Long work is only queued here; workers run it.
"""

from __future__ import annotations

import re
import secrets
import shutil
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, File, Form, HTTPException, Request, UploadFile
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from likeness.curate.dedup import (
    DuplicateGroup,
    apply_groups,
    dedup_candidates,
    group_near_duplicates,
)
from likeness.curate.ingest import Ingester, IngestResult
from likeness.curate.selection import Selection
from likeness.engines import resolve_seed
from likeness.recipes import Recipe, RecipeError
from likeness.serve import queue
from likeness.serve.auth import CurrentTenant, ServerState, server_state
from likeness.serve.catalog import list_models
from likeness.serve.policy import PathPolicy, RecipeRefused
from likeness.serve.quotas import (
    QuotaExceeded,
    check_disk,
    check_images,
    check_queued,
    check_train_runs,
    usage,
)
from likeness.serve.tenants import MODELS_DIR, Tenant
from likeness.store.blobs import is_sha256
from likeness.store.datasets import DatasetError, get_version, list_versions
from likeness.store.images import list_images
from likeness.store.loras import list_loras, lora_by_sha256
from likeness.train.lora_files import LORAS_DIR

NOT_FOUND = "not found"
_LABEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
MAX_IMAGES_PER_JOB = 64


def tenant_db(tenant: CurrentTenant) -> Iterator[sqlite3.Connection]:
    """A connection to the signed-in user's database, this request's alone."""
    with tenant.lease() as conn:
        yield conn


TenantDb = Annotated[sqlite3.Connection, Depends(tenant_db)]
router = APIRouter(prefix="/api/studio")


def not_found() -> HTTPException:
    return HTTPException(404, NOT_FOUND)


def refused(message: str, status: int = 422) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def policy_for(server: ServerState, tenant: Tenant) -> PathPolicy:
    return PathPolicy(tenant.root, tuple(server.settings.shared_folders()))


def photo_groups(db: sqlite3.Connection, tenant: Tenant) -> list[DuplicateGroup]:
    """Near-duplicate groups among the uploaded photos (origin source; set-aside ones
    included, so the groups stay stable after dedup), as `likeness dedup` finds them."""
    settings = tenant.settings.dedup
    photos = [r for r in dedup_candidates(db) if r.origin == "source"]
    return group_near_duplicates(photos, settings.phash_max_distance, settings.dhash_max_distance)


# -- photos -----------------------------------------------------------------------------------
@router.get("/photos")
def photos(tenant: CurrentTenant, db: TenantDb) -> dict[str, Any]:
    """The source photos (set-aside duplicates included, marked) and the near-duplicate groups."""
    groups = photo_groups(db, tenant)
    return {
        "images": [
            {
                "sha256": r.sha256,
                "name": r.original_name,
                "width": r.width,
                "height": r.height,
                "excluded": r.excluded,
                "excluded_reason": r.excluded_reason,
                "duplicate_of": r.duplicate_of,
            }
            for r in list_images(db, origins=["source"], include_excluded=True)
        ],
        "groups": [g.to_dict() for g in groups],
    }


@router.post("/photos")
def upload_photos(
    request: Request,
    tenant: CurrentTenant,
    db: TenantDb,
    files: Annotated[list[UploadFile], File(description="Photos of the character.")],
) -> JSONResponse:
    """Store uploaded photos as source images, by the rules of `likeness add`: one result per
    file (stored, near_duplicate, duplicate or rejected with its reason); the rest go on."""
    server = server_state(request)
    # 1. Quotas, before reading anything.
    if tenant.limits.upload_files and len(files) > tenant.limits.upload_files:
        return refused(
            f"quota: {len(files)} files in one upload; send at most {tenant.limits.upload_files}",
            403,
        )
    sizes = [f.size or 0 for f in files]
    try:
        check_images(tenant, db, server.db.conn(), adding=len(files))
        check_disk(tenant, adding_bytes=sum(sizes))
    except QuotaExceeded as exc:
        return refused(str(exc), 403)
    # 2. Each file on its own: a bad one is one line, the others are stored.
    ws = tenant.workspace(db)
    ingester = Ingester(ws, origin="source")
    max_bytes = ws.settings.ingest.max_file_bytes
    results: list[IngestResult] = []
    for upload in files:
        name = Path(upload.filename or "upload").name or "upload"
        data = upload.file.read(max_bytes + 1)
        if len(data) > max_bytes:
            size = upload.size or len(data)
            results.append(
                IngestResult(
                    name,
                    "rejected",
                    reason=f"file is {size / 2**20:.0f} MiB, over ingest.max_file_bytes",
                )
            )
            continue
        results.append(ingester.ingest_bytes(data, name=name))
    tenant.forget_disk_usage()
    counts: dict[str, int] = {}
    for r in results:
        counts[r.status] = counts.get(r.status, 0) + 1
    request.state.audit = {"files": [r.path for r in results], "counts": counts}
    return JSONResponse({"results": [r.to_dict() for r in results], "counts": counts})


@router.post("/dedup")
def dedup(request: Request, tenant: CurrentTenant, db: TenantDb) -> dict[str, Any]:
    """Keep the best photo of each near-duplicate group; set the others aside (never deleted)."""
    groups = photo_groups(db, tenant)
    changed = apply_groups(db, groups)
    request.state.audit = {"changed": changed}
    return {"changed": changed, "groups": [g.to_dict() for g in groups]}


# -- datasets ---------------------------------------------------------------------------------
class DatasetBody(BaseModel):
    name: str = Field(max_length=64)
    origins: list[str] = Field(default_factory=lambda: ["source"])
    note: str | None = Field(default=None, max_length=2000)


@router.get("/datasets")
def datasets(tenant: CurrentTenant, db: TenantDb) -> dict[str, Any]:
    return {"versions": [v.to_dict(with_items=False) for v in list_versions(db)]}


@router.post("/datasets")
def create_dataset(body: DatasetBody, tenant: CurrentTenant, db: TenantDb) -> JSONResponse:
    """The next version of dataset `name`: every image of `origins` not set aside, captioned."""
    from likeness.curate.datasets import create_dataset_version

    try:
        made = create_dataset_version(
            tenant.workspace(db), body.name, Selection(origins=tuple(body.origins)), note=body.note
        )
    except (DatasetError, ValueError) as exc:
        return refused(str(exc).strip("'\""), 400)
    return JSONResponse(made.to_dict(with_items=False), status_code=201)


@router.get("/datasets/{dataset}")
def dataset_versions(dataset: str, tenant: CurrentTenant, db: TenantDb) -> dict[str, Any]:
    """Every version of one dataset, newest first, with its items."""
    versions = [v for v in list_versions(db) if v.name == dataset]
    if not versions:
        raise not_found()
    return {
        "name": dataset,
        "versions": [get_version(db, dataset, v.version).to_dict() for v in versions],
    }


# -- models and LoRAs -------------------------------------------------------------------------
@router.get("/models")
def models(request: Request, tenant: CurrentTenant) -> dict[str, Any]:
    """What a recipe may name: shared models, the user's own models, the engines offered."""
    server = server_state(request)
    own = [f"{MODELS_DIR}/{n}" for n in list_models([tenant.root / MODELS_DIR])]
    return {
        "shared": list_models(server.settings.shared_folders()),
        "own": own,
        "engines": list(server.settings.serve.engines),
        "train": server.train_available,
    }


@router.get("/loras")
def loras(tenant: CurrentTenant, db: TenantDb) -> dict[str, Any]:
    return {"loras": [_lora(r) for r in list_loras(db)]}


@router.get("/loras/{lora_sha}")
def lora(lora_sha: str, tenant: CurrentTenant, db: TenantDb) -> dict[str, Any]:
    row = lora_by_sha256(db, lora_sha) if is_sha256(lora_sha) else None
    if row is None:
        raise not_found()
    return _lora(row)


@router.post("/loras")
def upload_lora(
    request: Request,
    tenant: CurrentTenant,
    db: TenantDb,
    file: Annotated[UploadFile, File(description="A LoRA .safetensors file.")],
    dataset: Annotated[str | None, Form(max_length=80)] = None,
    family: Annotated[str | None, Form(max_length=8)] = None,
) -> JSONResponse:
    """Add a LoRA trained elsewhere to the user's list (as `likeness lora add`), optionally on
    one of the user's dataset versions (`NAME@vN`; another user's name is 404)."""
    from likeness.train.lora_files import LoraFileError, add_lora

    name = Path(file.filename or "lora.safetensors").name
    if dataset:
        try:
            _dataset_version(db, dataset)
        except DatasetError:
            raise not_found() from None
    try:
        check_disk(tenant, adding_bytes=file.size or 0)
    except QuotaExceeded as exc:
        return refused(str(exc), 403)
    # 1. The upload into the user's folder (never anywhere else), then recorded and copied in.
    folder = tenant.root / LORAS_DIR
    folder.mkdir(exist_ok=True)
    upload = folder / f".upload-{secrets.token_hex(8)}{Path(name).suffix.lower()}"
    try:
        with upload.open("wb") as out:
            shutil.copyfileobj(file.file, out, 1 << 20)
        added = add_lora(
            tenant.workspace(db), upload, dataset=dataset or None, family=family or None,
            name=Path(name).stem,
        )  # fmt: skip
    except LoraFileError as exc:
        return refused(str(exc).replace(str(upload), name))
    finally:
        upload.unlink(missing_ok=True)
        tenant.forget_disk_usage()
    request.state.audit = {"file": name, "lora": added.row.sha256, "new": added.new}
    return JSONResponse({**_lora(added.row), "new": added.new}, status_code=201)


def _lora(row: Any) -> dict[str, Any]:
    data = row.to_dict()
    data.pop("path", None)  # a server path means nothing in the browser
    return data


# -- work: generate, card, train --------------------------------------------------------------
class LoraChoice(BaseModel):
    sha256: str
    strength: float = 0.7


class RecipeBody(BaseModel):
    """The recipe of a generation or a card: the form's fields, or a whole recipe (`recipe`,
    as in a recipe TOML file) that the fields then override."""

    engine: str | None = None
    model: str | None = None
    prompt: str | None = Field(default=None, max_length=4000)
    negative: str | None = Field(default=None, max_length=4000)
    steps: int | None = None
    cfg: float | None = None
    width: int | None = None
    height: int | None = None
    seed: int | None = None
    loras: list[LoraChoice] = Field(default_factory=list)
    recipe: dict[str, Any] | None = None


class GenerateBody(RecipeBody):
    n: int = Field(default=4, ge=1, le=MAX_IMAGES_PER_JOB)


class CardBody(RecipeBody):
    label: str = Field(max_length=64)
    shots: list[str] = Field(default_factory=list)
    tries: int | None = Field(default=None, ge=1, le=10)


class TrainBody(BaseModel):
    dataset: str = Field(max_length=80)
    """`NAME` or `NAME@vN` of one of your datasets."""
    name: str = Field(default="", max_length=64)
    model: str
    family: str = "sdxl"
    steps: int = Field(default=2000, ge=1, le=100_000)
    recipe: dict[str, Any] = Field(default_factory=dict)


def build_recipe(
    body: RecipeBody, tenant: Tenant, db: sqlite3.Connection, server: ServerState
) -> Recipe:
    """The checked recipe: LoRAs by hash from the user's list (404 for any other), every
    file inside the allowed folders, the engine one the admin offers."""
    data: dict[str, Any] = dict(body.recipe or {})
    data.setdefault("trigger", tenant.settings.character.trigger)
    for name in ("engine", "model", "prompt", "negative", "steps", "cfg", "width", "height"):
        value = getattr(body, name)
        if value is not None:
            data[name] = value
    if body.seed is not None:
        data["seed"] = body.seed
    if body.loras:
        chosen = []
        for choice in body.loras:
            row = lora_by_sha256(db, choice.sha256) if is_sha256(choice.sha256) else None
            if row is None:
                raise not_found()
            chosen.append({"path": row.path, "strength": choice.strength})
        data["loras"] = chosen
    data.setdefault("engine", server.settings.serve.engines[0])
    recipe = Recipe.from_dict(data)
    if recipe.engine not in server.settings.serve.engines:
        raise RecipeRefused(
            "engine",
            recipe.engine,
            f"is not offered here; engines: {', '.join(server.settings.serve.engines)}",
        )
    return policy_for(server, tenant).check_recipe(recipe)


def _queue_work(
    request: Request,
    tenant: Tenant,
    db: sqlite3.Connection,
    kind: str,
    params: dict[str, Any],
    *,
    images: int,
) -> JSONResponse:
    server = server_state(request)
    conn = server.db.conn()
    try:
        check_queued(tenant, conn)
        if images:
            check_images(tenant, db, conn, adding=images)
        check_disk(tenant)
        if kind == "train":
            check_train_runs(tenant, conn)
    except QuotaExceeded as exc:
        return refused(str(exc), 403)
    job = queue.enqueue(conn, tenant.user_id, kind, params, total=images or None)
    request.state.audit = {"job": job.id, "kind": kind}
    return JSONResponse({"job": job.to_dict()}, status_code=202)


def _source_count(db: sqlite3.Connection) -> int:
    return db.execute(
        "SELECT COUNT(*) FROM images WHERE origin = 'source' AND excluded = 0"
    ).fetchone()[0]


@router.post("/generate")
def generate(
    request: Request, body: GenerateBody, tenant: CurrentTenant, db: TenantDb
) -> JSONResponse:
    """Queue `n` images of the recipe; each is stored, then scored against your photos."""
    server = server_state(request)
    try:
        recipe = build_recipe(body, tenant, db, server)
        recipe.require_model()
    except (RecipeRefused, RecipeError) as exc:
        return refused(str(exc))
    if not _source_count(db):
        return refused(
            "upload photos of the character first: they are what images are scored against", 409
        )
    recipe = resolve_seed(recipe)
    params = {"recipe": recipe.to_dict(), "n": body.n, "base_seed": recipe.seed}
    return _queue_work(request, tenant, db, "generate", params, images=body.n)


@router.post("/card")
def card(request: Request, body: CardBody, tenant: CurrentTenant, db: TenantDb) -> JSONResponse:
    """Queue the model card (or some of its shots) with the recipe."""
    from likeness.evaluate.card_spec import load_card_spec
    from likeness.serve.work import card_spec

    server = server_state(request)
    if not _LABEL.match(body.label):
        return refused(f"label: {body.label!r} must be 1-64 letters, digits, '_', '.' or '-'")
    try:
        recipe = build_recipe(body, tenant, db, server)
        recipe.require_model()
        spec = card_spec(load_card_spec(), body.shots)
    except (RecipeRefused, RecipeError, ValueError) as exc:
        return refused(str(exc))
    if not _source_count(db):
        return refused(
            "upload photos of the character first: they are what images are scored against", 409
        )
    tries = body.tries or tenant.settings.card.tries
    params = {"recipe": recipe.to_dict(), "label": body.label, "shots": body.shots, "tries": tries}
    return _queue_work(request, tenant, db, "card", params, images=len(spec.shots) * tries)


@router.post("/train")
def train(request: Request, body: TrainBody, tenant: CurrentTenant, db: TenantDb) -> JSONResponse:
    """Queue a LoRA training run on one of your dataset versions (when this server trains)."""
    server = server_state(request)
    if not server.train_available:
        return refused("training is not available on this server", 501)
    try:
        version = _dataset_version(db, body.dataset)
    except DatasetError:
        raise not_found() from None
    try:
        model = policy_for(server, tenant).resolve("model", body.model)
    except RecipeRefused as exc:
        return refused(str(exc))
    recipe = {
        **body.recipe,
        "dataset": version.ref,
        "model": str(model),
        "family": body.family,
        "steps": body.steps,
        "name": body.name or f"{version.name}-v{version.version}",
    }
    return _queue_work(request, tenant, db, "train", {"recipe": recipe}, images=0)


def _dataset_version(db: sqlite3.Connection, ref: str) -> Any:
    from likeness.store.datasets import parse_ref

    name, number = parse_ref(ref)
    return get_version(db, name, number)


# -- jobs, cards, usage, audit ----------------------------------------------------------------
@router.get("/jobs")
def jobs(request: Request, tenant: CurrentTenant) -> dict[str, Any]:
    conn = server_state(request).db.conn()
    return {"jobs": [j.to_dict(with_params=False) for j in queue.list_jobs(conn, tenant.user_id)]}


@router.get("/jobs/{job_id}")
def job(job_id: int, request: Request, tenant: CurrentTenant) -> dict[str, Any]:
    found = queue.get_job(server_state(request).db.conn(), tenant.user_id, job_id)
    if found is None:
        raise not_found()
    return found.to_dict()


@router.post("/jobs/{job_id}/cancel")
def cancel(job_id: int, request: Request, tenant: CurrentTenant) -> dict[str, Any]:
    found = queue.request_cancel(server_state(request).db.conn(), tenant.user_id, job_id)
    if found is None:
        raise not_found()
    return found.to_dict(with_params=False)


@router.get("/cards")
def cards(tenant: CurrentTenant, db: TenantDb) -> dict[str, Any]:
    from likeness.evaluate import store

    return {
        "cards": [
            {"label": c.label, "created_at": c.created_at, "summary": c.summary}
            for c in store.list_cards(db)
        ]
    }


@router.get("/cards/{label}")
def card_result(label: str, tenant: CurrentTenant, db: TenantDb) -> dict[str, Any]:
    from likeness.evaluate.card import CardError, load_card

    try:
        return load_card(tenant.workspace(db), label).to_json()
    except CardError:
        raise not_found() from None


@router.get("/usage")
def quota_usage(request: Request, tenant: CurrentTenant, db: TenantDb) -> dict[str, Any]:
    now = usage(tenant, db, server_state(request).db.conn())
    return {"usage": now.to_dict(), "limits": tenant.limits.__dict__}


@router.get("/audit")
def audit_trail(tenant: CurrentTenant, db: TenantDb, limit: int = 100) -> dict[str, Any]:
    from likeness.serve.audit import entries

    return {"entries": [e.to_dict() for e in entries(db, limit=max(1, min(limit, 1000)))]}
