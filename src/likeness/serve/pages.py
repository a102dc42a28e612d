"""The photoshoot pages (HTML), the job progress WebSocket and the public assets.

Pages render what the studio API returns; their scripts (`static/studio.js`) call that API
with the session's CSRF token. `/ws/jobs/{job_id}` pushes a job's progress until it ends.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from importlib import resources
from pathlib import Path
from typing import Any

import anyio
from fastapi import APIRouter, HTTPException, Request, WebSocket, WebSocketDisconnect
from fastapi.responses import HTMLResponse, JSONResponse, Response

from likeness.review.metrics import MetricsIndex
from likeness.serve import queue
from likeness.serve.auth import CurrentTenant, WsTenant, server_state
from likeness.serve.catalog import list_models
from likeness.serve.studio import NOT_FOUND, TenantDb, not_found, photo_groups
from likeness.serve.tenants import MODELS_DIR, Tenant
from likeness.store.datasets import get_version, list_versions
from likeness.store.images import get_image, list_images
from likeness.store.loras import list_loras

STATIC_TYPES = {".css": "text/css", ".js": "text/javascript", ".svg": "image/svg+xml"}
WS_POLL_SECONDS = 0.3
RECENT_RESULTS = 24
router = APIRouter()
public = APIRouter()


def load_assets() -> dict[str, tuple[bytes, str]]:
    """The server's own static files, by name."""
    files: dict[str, tuple[bytes, str]] = {}
    for entry in resources.files("likeness.serve").joinpath("static").iterdir():
        suffix = Path(entry.name).suffix
        if suffix in STATIC_TYPES:
            files[entry.name] = (entry.read_bytes(), STATIC_TYPES[suffix])
    return files


@public.get("/assets/{name}")
def asset(name: str, request: Request) -> Response:
    """Styles and scripts of the sign-in page and the studio (nothing personal: public)."""
    found = request.app.state.assets.get(name)
    if found is None:
        raise HTTPException(404, NOT_FOUND)
    return Response(found[0], media_type=found[1], headers={"Cache-Control": "no-cache"})


@router.get("/studio", response_class=HTMLResponse)
def studio(request: Request, tenant: CurrentTenant, db: TenantDb) -> Response:
    """The photoshoot: photos, dataset, generation, jobs, results and cards on one page."""
    from likeness.evaluate import store

    server = server_state(request)
    settings = tenant.settings
    photos = list_images(db, origins=["source"], include_excluded=True)
    groups = photo_groups(db, tenant)
    metrics = tenant.review.metrics
    metrics.refresh(db)
    recent = db.execute(
        "SELECT sha256 FROM images WHERE origin = 'synthetic' AND excluded = 0 "
        "ORDER BY ingested_at DESC, sha256 LIMIT ?",
        (RECENT_RESULTS,),
    ).fetchall()
    results = [image for (sha,) in recent if (image := get_image(db, sha)) is not None]
    return server.templates.TemplateResponse(
        request,
        "studio.html",
        {
            "character": settings.character,
            "photos": photos,
            "groups": [g for g in groups if any(not o.excluded for o in g.others)],
            "versions": list_versions(db),
            "models": list_models(server.settings.shared_folders())
            + [f"{MODELS_DIR}/{n}" for n in list_models([tenant.root / MODELS_DIR])],
            "engines": server.settings.serve.engines,
            "loras": list_loras(db),
            "train": server.train_available,
            "jobs": queue.list_jobs(server.db.conn(), tenant.user_id, limit=12),
            "results": [(r, metrics.get(r.sha256)) for r in results],
            "cards": store.list_cards(db),
            "pass_match": settings.identity.pass_match,
        },
    )


@router.get("/studio/jobs/{job_id}", response_class=HTMLResponse)
def job_page(job_id: int, request: Request, tenant: CurrentTenant, db: TenantDb) -> Response:
    server = server_state(request)
    job = queue.get_job(server.db.conn(), tenant.user_id, job_id)
    if job is None:
        raise not_found()
    metrics = tenant.review.metrics
    metrics.refresh(db)
    return server.templates.TemplateResponse(
        request,
        "job.html",
        {
            "job": job,
            "job_json": json.dumps(job.to_dict(with_params=False)),
            "shown": _shown(job, metrics),
            "pass_match": tenant.settings.identity.pass_match,
        },
    )


def _shown(job: queue.QueuedJob, metrics: MetricsIndex) -> list[dict[str, Any]]:
    rows = []
    for image in job.result.get("images") or []:
        sha = image.get("sha256")
        if sha:
            rows.append({**image, "metrics": metrics.get(sha)})
    return rows


@router.get("/studio/datasets/{dataset}", response_class=HTMLResponse)
def dataset_page(dataset: str, request: Request, tenant: CurrentTenant, db: TenantDb) -> Response:
    name = dataset
    versions = [v for v in list_versions(db) if v.name == name]
    if not versions:
        raise not_found()
    server = server_state(request)
    return server.templates.TemplateResponse(
        request,
        "dataset.html",
        {"name": name, "versions": [get_version(db, name, v.version) for v in reversed(versions)]},
    )


@router.get("/studio/cards/{label}", response_class=HTMLResponse)
def card_page(label: str, request: Request, tenant: CurrentTenant, db: TenantDb) -> Response:
    from likeness.evaluate.card import CardError, load_card

    try:
        card = load_card(tenant.workspace(db), label).to_json()
    except CardError:
        raise not_found() from None
    server = server_state(request)
    return server.templates.TemplateResponse(request, "card.html", {"card": card})


# -- progress ---------------------------------------------------------------------------------
@router.websocket("/ws/jobs/{job_id}")
async def job_progress(websocket: WebSocket, job_id: int, tenant: WsTenant) -> None:
    """The job's JSON (as /api/studio/jobs/{id}, without params) whenever it changes, until
    it ends; another user's or an unknown job is refused as 404 before the socket opens."""
    server = server_state(websocket)
    job = await anyio.to_thread.run_sync(_job, server, tenant, job_id)
    if job is None:
        if "websocket.http.response" in websocket.scope.get("extensions", {}):
            await websocket.send_denial_response(JSONResponse({"detail": NOT_FOUND}, 404))
        else:
            await websocket.close(code=4404)
        return
    await websocket.accept()
    last: str | None = None
    try:
        while True:
            job = await anyio.to_thread.run_sync(_job, server, tenant, job_id)
            if job is None:
                break
            text = json.dumps(job.to_dict(with_params=False), sort_keys=True)
            if text != last:
                await websocket.send_text(text)
                last = text
            if job.finished:
                break
            await asyncio.sleep(WS_POLL_SECONDS)
        await websocket.close()
    except WebSocketDisconnect:
        return


def _job(server: Any, tenant: Tenant, job_id: int) -> queue.QueuedJob | None:
    try:
        return queue.get_job(server.db.conn(), tenant.user_id, job_id)
    except sqlite3.Error:
        return None
