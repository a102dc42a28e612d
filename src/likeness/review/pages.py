"""The pages (queue and focus view) and the image routes, which serve by sha256 only."""

from __future__ import annotations

import math
import sqlite3
from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, HTMLResponse, Response

from likeness.imaging import ImageRejected
from likeness.review import decisions as dec
from likeness.review import provenance as prov
from likeness.review.deps import (
    MAX_PAGE_SIZE,
    PAGE_SIZE,
    Db,
    Filter,
    ReviewState,
    State,
    load_queue,
)
from likeness.review.deps import query_string as _qs
from likeness.review.queue import BUILTIN_SORTS
from likeness.review.thumbs import SIZES
from likeness.store.blobs import BlobNotFound, is_sha256
from likeness.store.datasets import list_versions
from likeness.store.images import ORIGINS, get_image

router = APIRouter()
_IMMUTABLE = {"Cache-Control": "private, max-age=31536000, immutable"}
_MEDIA_TYPES = {
    "JPEG": "image/jpeg",
    "PNG": "image/png",
    "WEBP": "image/webp",
    "GIF": "image/gif",
    "BMP": "image/bmp",
    "TIFF": "image/tiff",
    "MPO": "image/jpeg",
}


@router.get("/", response_class=HTMLResponse)
def queue_page(
    request: Request,
    db: Db,
    st: State,
    flt: Filter,
    page: Annotated[int, Query(ge=1)] = 1,
    size: Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE)] = PAGE_SIZE,
) -> HTMLResponse:
    queue = load_queue(db, st, flt)
    pages = max(1, math.ceil(len(queue.entries) / size))
    page = min(page, pages)
    shown = queue.entries[(page - 1) * size : page * size]
    return st.templates.TemplateResponse(
        request,
        "queue.html",
        {
            "entries": shown,
            "queue": queue,
            "flt": flt,
            "page": page,
            "pages": pages,
            "size": size,
            "offset": (page - 1) * size,
            "qs": _qs(flt.params()),
            "page_qs": lambda p: _qs({**flt.params(), "page": p, "size": size}),
            "options": _options(db, st),
            "pass_match": st.settings.identity.pass_match,
            "reviewer": st.reviewer,
            "dataset_name": st.settings.character.name.lower().replace(" ", "-") or "pristine",
        },
    )


@router.get("/focus/{sha}", response_class=HTMLResponse)
def focus_page(
    request: Request,
    sha: str,
    db: Db,
    st: State,
    flt: Filter,
) -> HTMLResponse:
    image = get_image(db, sha) if is_sha256(sha) else None
    if image is None:
        raise HTTPException(404, "no such image")
    queue = load_queue(db, st, flt)
    at = queue.index_of(sha)
    prev_sha = queue.entries[at - 1].sha256 if at is not None and at > 0 else None
    next_sha = (
        queue.entries[at + 1].sha256 if at is not None and at + 1 < len(queue.entries) else None
    )
    if at is None and queue.entries:
        next_sha = queue.entries[0].sha256
    metrics = st.metrics.get(sha)
    reference = _reference(db, st, metrics.nearest_reference, sha)
    provenance = prov.provenance_of(db, st.blobs, sha)
    return st.templates.TemplateResponse(
        request,
        "focus.html",
        {
            "image": image,
            "review": dec.get_review(db, sha),
            "history": list(reversed(dec.history(db, sha)))[:12],
            "metrics": metrics,
            "reference": reference,
            "reference_metrics": st.metrics.get(reference) if reference else None,
            "provenance": prov.summary(provenance),
            "position": (at + 1) if at is not None else None,
            "queue": queue,
            "prev_sha": prev_sha,
            "next_sha": next_sha,
            "qs": _qs(flt.params()),
            "flt": flt,
            "tags": dec.SUGGESTED_TAGS,
            "pass_match": st.settings.identity.pass_match,
            "reviewer": st.reviewer,
        },
    )


# 4. Images, by hash only.
@router.get("/img/{sha}")
def original(sha: str, db: Db, st: State) -> FileResponse:
    image = get_image(db, sha) if is_sha256(sha) else None
    if image is None or not st.blobs.exists(sha):
        raise HTTPException(404, "no such image")
    return FileResponse(
        st.blobs.path(sha),
        media_type=_MEDIA_TYPES.get(image.format.upper(), "application/octet-stream"),
        headers=_IMMUTABLE,
    )


@router.get("/thumb/{sha}")
async def thumbnail(sha: str, st: State, size: int = SIZES[0]) -> Response:
    # Cached thumbnails are small: answer on the event loop, without a thread hop.
    if not is_sha256(sha) or size not in SIZES:
        raise HTTPException(404, "no such image")
    try:
        data = st.thumbs.path(sha, size).read_bytes()
    except FileNotFoundError:
        return await run_in_threadpool(_thumb, st, sha, size, face=False)
    return Response(data, media_type="image/webp", headers=_IMMUTABLE)


@router.get("/face/{sha}")
def face(sha: str, db: Db, st: State, size: int = SIZES[1]) -> FileResponse:
    st.metrics.refresh(db)
    return _thumb(st, sha, size, face=True)


@router.get("/static/{name}")
def static(name: str, st: State) -> Response:
    found = st.static.get(name)
    if found is None:
        raise HTTPException(404, "no such file")
    return Response(found[0], media_type=found[1], headers={"Cache-Control": "no-cache"})


def _thumb(st: ReviewState, sha: str, size: int, *, face: bool) -> FileResponse:
    if not is_sha256(sha) or size not in SIZES:
        raise HTTPException(404, "no such image")
    box = st.metrics.get(sha).box if face else None
    try:
        path = st.thumbs.get(sha, size, box=box)
    except BlobNotFound as exc:
        raise HTTPException(404, "no such image") from exc
    except ImageRejected as exc:
        raise HTTPException(422, f"image {sha[:12]} cannot be shown: {exc}") from exc
    return FileResponse(path, media_type="image/webp", headers=_IMMUTABLE)


def _reference(
    db: sqlite3.Connection, st: ReviewState, nearest: str | None, sha: str
) -> str | None:
    """The nearest reference an analyzer named, else the first source photo (the default
    reference set), never the image itself."""
    if nearest and nearest != sha and get_image(db, nearest) is not None:
        return nearest
    row = db.execute(
        "SELECT sha256 FROM images WHERE origin = 'source' AND excluded = 0 AND sha256 != ? "
        "ORDER BY ingested_at, sha256 LIMIT 1",
        (sha,),
    ).fetchone()
    return row[0] if row else None


def _options(db: sqlite3.Connection, st: ReviewState) -> dict[str, list[str]]:
    runs = sorted(set(prov.runs(db, prov.find_table(db)).values()))
    return {
        "origins": list(ORIGINS),
        "runs": runs,
        "datasets": [v.ref for v in list_versions(db)],
        "states": list(dec.DECISIONS),
        "flags": st.metrics.all_flags(),
        "sorts": st.metrics.numeric_keys() or ["match"],
        "builtin_sorts": list(BUILTIN_SORTS),
    }
