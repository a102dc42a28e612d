"""The review web app: a queue of candidates, a focus view, and the endpoints behind their keys.

Routes only parse, call `likeness.review.*` and render. The database connection comes from the
`get_db` yield dependency (one connection per request, closed afterwards; tests may override
it). Images are served by sha256 only, from the blob store or the thumbnail cache.

Example:
    app = create_app(Path("~/chars/mara").expanduser())
    uvicorn.run(app, host="127.0.0.1", port=8765)
"""

from __future__ import annotations

import getpass
import json
import math
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import (
    FileResponse,
    HTMLResponse,
    JSONResponse,
    PlainTextResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)
from fastapi.templating import Jinja2Templates
from jinja2 import Environment, FileSystemLoader, select_autoescape
from pydantic import BaseModel, Field
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from likeness.config import Settings
from likeness.review import decisions as dec
from likeness.review import provenance as prov
from likeness.review.export import corrections, dataset_from_accepted
from likeness.review.metrics import MetricsIndex
from likeness.review.queue import BUILTIN_SORTS, Queue, QueueError, QueueFilter, build_queue
from likeness.review.security import TOKEN_COOKIE, TOKEN_HEADER, Guard
from likeness.review.thumbs import SIZES, ThumbnailCache
from likeness.store.blobs import BlobNotFound, BlobStore, is_sha256
from likeness.store.datasets import DatasetError, list_versions
from likeness.store.db import connect
from likeness.store.images import ORIGINS, get_image
from likeness.workspace import DB_FILE, Workspace

PAGE_SIZE = 200
MAX_PAGE_SIZE = 1000
THUMB_CACHE_DIR = Path("cache") / "thumbs"
_MEDIA_TYPES = {
    "JPEG": "image/jpeg",
    "PNG": "image/png",
    "WEBP": "image/webp",
    "GIF": "image/gif",
    "BMP": "image/bmp",
    "TIFF": "image/tiff",
    "MPO": "image/jpeg",
}
_STATIC_TYPES = {".css": "text/css", ".js": "text/javascript", ".svg": "image/svg+xml"}


@dataclass
class ReviewState:
    """What every request shares: paths, settings and the caches (no connection)."""

    root: Path
    db_path: Path
    settings: Settings
    blobs: BlobStore
    thumbs: ThumbnailCache
    metrics: MetricsIndex
    reviewer: str
    static: dict[str, tuple[bytes, str]]


def get_db(request: Request) -> Iterator[sqlite3.Connection]:
    """One connection per request, closed when the response is done."""
    state: ReviewState = request.app.state.review
    conn = connect(state.db_path, migrate=False)
    try:
        yield conn
    finally:
        conn.close()


async def get_state(request: Request) -> ReviewState:
    return request.app.state.review


# No framing (a page that frames the queue could collect a reviewer's key presses), no
# content sniffing of served images, scripts and styles from this server only.
SECURITY_HEADERS = [
    (b"x-frame-options", b"DENY"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (
        b"content-security-policy",
        b"default-src 'self'; img-src 'self' data:; script-src 'self'; style-src 'self'; "
        b"frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
    ),
]


class AccessGuard:
    """ASGI middleware applying `security.Guard` to every HTTP request before any route runs,
    and adding SECURITY_HEADERS to every response. A valid `?token=` on a GET sets the token
    cookie and redirects to the same URL without it."""

    def __init__(self, app: ASGIApp, guard: Guard):
        self.app = app
        self.guard = guard

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        verdict = self.guard.check(
            request.method,
            request.headers.get("host"),
            request.headers.get("origin"),
            request.headers.get("sec-fetch-site"),
            request.headers.get(TOKEN_HEADER),
            request.cookies.get(TOKEN_COOKIE),
        )
        response: Response | None = None
        if verdict and verdict.status == 401 and request.method == "GET":
            given = request.query_params.get("token")
            if self.guard.query_token_ok(given):
                rest = [(k, v) for k, v in request.query_params.multi_items() if k != "token"]
                target = request.url.path + (f"?{urlencode(rest)}" if rest else "")
                response = RedirectResponse(target, status_code=303)
                response.set_cookie(
                    TOKEN_COOKIE, given or "", httponly=True, samesite="strict", path="/"
                )
        if response is None and verdict:
            response = PlainTextResponse(verdict.message, status_code=verdict.status)

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = list(message.get("headers", [])) + SECURITY_HEADERS
            await send(message)

        if response is not None:
            await response(scope, receive, send_with_headers)
            return
        await self.app(scope, receive, send_with_headers)


Db = Annotated[sqlite3.Connection, Depends(get_db)]
State = Annotated[ReviewState, Depends(get_state)]


class DecideBody(BaseModel):
    sha256: str
    decision: str = Field(description="accepted, rejected or undecided")
    note: str | None = None
    tags: list[str] = Field(default_factory=list)
    reviewer: str | None = None
    expected_revision: int | None = None


class UndoBody(BaseModel):
    sha256: str
    reviewer: str | None = None
    expected_revision: int | None = None


class DatasetBody(BaseModel):
    name: str
    note: str | None = None


def _load_static() -> dict[str, tuple[bytes, str]]:
    files: dict[str, tuple[bytes, str]] = {}
    for entry in resources.files("likeness.review").joinpath("static").iterdir():
        suffix = Path(entry.name).suffix
        if suffix in _STATIC_TYPES:
            files[entry.name] = (entry.read_bytes(), _STATIC_TYPES[suffix])
    return files


def create_app(
    workspace_root: Path,
    *,
    token: str | None = None,
    allowed_origins: tuple[str, ...] | list[str] = (),
    reviewer: str | None = None,
) -> FastAPI:
    """The review app for one workspace.

    `token`: required on every request when given (set it whenever the server listens on
    anything but loopback; `security.token_for_bind` decides). `allowed_origins`: extra
    browser origins (e.g. `https://review.example`) allowed to POST besides the server's own.
    """
    # 1. Open the workspace once: validates it and brings the schema forward.
    with Workspace.open(Path(workspace_root)) as ws:
        root, settings, blobs = ws.root, ws.settings, ws.blobs
    state = ReviewState(
        root=root,
        db_path=root / DB_FILE,
        settings=settings,
        blobs=blobs,
        thumbs=ThumbnailCache(root / THUMB_CACHE_DIR, blobs, max_pixels=settings.ingest.max_pixels),
        metrics=MetricsIndex(settings.identity.distance_threshold, settings.identity.pass_match),
        reviewer=reviewer or _default_reviewer(),
        static=_load_static(),
    )
    guard = Guard(token=token, allowed_origins=frozenset(allowed_origins))

    # 2. The app, its templates and the request guard.
    app = FastAPI(title="Likeness review", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.review = state
    env = Environment(
        loader=FileSystemLoader(str(Path(__file__).parent / "templates")),
        autoescape=select_autoescape(["html"]),
    )
    templates = Jinja2Templates(env=env)

    app.add_middleware(AccessGuard, guard=guard)

    # 3. Pages.
    @app.get("/", response_class=HTMLResponse)
    def queue_page(
        request: Request,
        db: Db,
        st: State,
        flt: Annotated[QueueFilter, Depends(_filter)],
        page: Annotated[int, Query(ge=1)] = 1,
        size: Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE)] = PAGE_SIZE,
    ) -> HTMLResponse:
        queue = _queue(db, st, flt)
        pages = max(1, math.ceil(len(queue.entries) / size))
        page = min(page, pages)
        shown = queue.entries[(page - 1) * size : page * size]
        return templates.TemplateResponse(
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
                "filter_qs": lambda **kw: _qs(_merge(flt.params(), kw)),
                "options": _options(db, st),
                "pass_match": st.settings.identity.pass_match,
                "reviewer": st.reviewer,
                "dataset_name": st.settings.character.name.lower().replace(" ", "-") or "pristine",
            },
        )

    @app.get("/focus/{sha}", response_class=HTMLResponse)
    def focus_page(
        request: Request,
        sha: str,
        db: Db,
        st: State,
        flt: Annotated[QueueFilter, Depends(_filter)],
    ) -> HTMLResponse:
        image = get_image(db, sha) if is_sha256(sha) else None
        if image is None:
            raise HTTPException(404, "no such image")
        queue = _queue(db, st, flt)
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
        return templates.TemplateResponse(
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
    @app.get("/img/{sha}")
    def original(sha: str, db: Db, st: State) -> FileResponse:
        image = get_image(db, sha) if is_sha256(sha) else None
        if image is None or not st.blobs.exists(sha):
            raise HTTPException(404, "no such image")
        return FileResponse(
            st.blobs.path(sha),
            media_type=_MEDIA_TYPES.get(image.format.upper(), "application/octet-stream"),
            headers=_IMMUTABLE,
        )

    @app.get("/thumb/{sha}")
    async def thumbnail(sha: str, st: State, size: int = SIZES[0]) -> Response:
        # Cached thumbnails are small: answer on the event loop, without a thread hop.
        if not is_sha256(sha) or size not in SIZES:
            raise HTTPException(404, "no such image")
        try:
            data = st.thumbs.path(sha, size).read_bytes()
        except FileNotFoundError:
            return await run_in_threadpool(_thumb, st, sha, size, face=False)
        return Response(data, media_type="image/webp", headers=_IMMUTABLE)

    @app.get("/face/{sha}")
    def face(sha: str, db: Db, st: State, size: int = SIZES[1]) -> FileResponse:
        st.metrics.refresh(db)
        return _thumb(st, sha, size, face=True)

    @app.get("/static/{name}")
    def static(name: str, st: State) -> Response:
        found = st.static.get(name)
        if found is None:
            raise HTTPException(404, "no such file")
        return Response(found[0], media_type=found[1], headers={"Cache-Control": "no-cache"})

    # 5. The API the keys call.
    @app.get("/api/queue")
    def api_queue(
        db: Db,
        st: State,
        flt: Annotated[QueueFilter, Depends(_filter)],
        page: Annotated[int, Query(ge=1)] = 1,
        size: Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE)] = PAGE_SIZE,
    ) -> dict[str, Any]:
        queue = _queue(db, st, flt)
        shown = queue.entries[(page - 1) * size : page * size]
        return {
            "total": len(queue.entries),
            "page": page,
            "size": size,
            "left": queue.tally.undecided,
            "tally": {
                "accepted": queue.tally.accepted,
                "rejected": queue.tally.rejected,
                "undecided": queue.tally.undecided,
            },
            "items": [
                {
                    "sha256": e.sha256,
                    "origin": e.origin,
                    "name": e.original_name,
                    "decision": e.decision,
                    "revision": e.revision,
                    "tags": list(e.tags),
                    "run": e.run,
                    "flags": list(e.metrics.flags),
                    "metrics": e.metrics.values,
                }
                for e in shown
            ],
        }

    @app.get("/api/review/{sha}")
    def api_review(sha: str, db: Db) -> dict[str, Any]:
        if not is_sha256(sha) or get_image(db, sha) is None:
            raise HTTPException(404, "no such image")
        return {
            "review": dec.get_review(db, sha).to_dict(),
            "history": [h.to_dict() for h in dec.history(db, sha)],
        }

    @app.get("/api/counts")
    def api_counts(db: Db) -> dict[str, int]:
        return dec.count_decisions(db).to_dict()

    @app.post("/api/decide")
    def api_decide(body: DecideBody, db: Db, st: State) -> JSONResponse:
        try:
            review = dec.decide(
                db,
                body.sha256,
                body.decision,  # type: ignore[arg-type]
                reviewer=body.reviewer or st.reviewer,
                note=body.note,
                tags=body.tags,
                expected_revision=body.expected_revision,
            )
        except dec.ReviewError as exc:
            return _review_error(exc)
        return JSONResponse(review.to_dict())

    @app.post("/api/undo")
    def api_undo(body: UndoBody, db: Db, st: State) -> JSONResponse:
        try:
            review = dec.undo(
                db,
                body.sha256,
                reviewer=body.reviewer or st.reviewer,
                expected_revision=body.expected_revision,
            )
        except dec.ReviewError as exc:
            return _review_error(exc)
        return JSONResponse(review.to_dict())

    @app.post("/api/to-dataset")
    def api_to_dataset(body: DatasetBody, db: Db, st: State) -> JSONResponse:
        ws = Workspace(root=st.root, settings=st.settings, db=db, blobs=st.blobs)
        try:
            made = dataset_from_accepted(ws, body.name, note=body.note)
        except DatasetError as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        return JSONResponse(made.to_dict())

    @app.get("/export/corrections.jsonl")
    def export_corrections(db: Db, st: State) -> StreamingResponse:
        ws = Workspace(root=st.root, settings=st.settings, db=db, blobs=st.blobs)
        lines = [json.dumps(r, sort_keys=True, default=str) + "\n" for r in corrections(ws)]
        return StreamingResponse(
            iter(lines),
            media_type="application/x-ndjson",
            headers={"Content-Disposition": 'attachment; filename="corrections.jsonl"'},
        )

    return app


_IMMUTABLE = {"Cache-Control": "private, max-age=31536000, immutable"}


def _default_reviewer() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "reviewer"


def _filter(
    origin: str | None = None,
    run: str | None = None,
    dataset: str | None = None,
    state: str | None = None,
    flag: str | None = None,
    sort: str = "match",
    order: str | None = None,
) -> QueueFilter:
    return QueueFilter(
        origin=origin or None,
        run=run or None,
        dataset=dataset or None,
        state=state or None,  # type: ignore[arg-type]
        flag=flag or None,
        sort=sort or "match",
        order=order or None,  # type: ignore[arg-type]
    )


def _queue(db: sqlite3.Connection, st: ReviewState, flt: QueueFilter) -> Queue:
    st.metrics.refresh(db)
    runs = prov.runs(db, prov.find_table(db))
    try:
        return build_queue(db, st.metrics, runs, flt)
    except QueueError as exc:
        raise HTTPException(400, str(exc)) from exc


def _thumb(st: ReviewState, sha: str, size: int, *, face: bool) -> FileResponse:
    if not is_sha256(sha) or size not in SIZES:
        raise HTTPException(404, "no such image")
    box = st.metrics.get(sha).box if face else None
    try:
        path = st.thumbs.get(sha, size, box=box)
    except BlobNotFound as exc:
        raise HTTPException(404, "no such image") from exc
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


def _review_error(exc: dec.ReviewError) -> JSONResponse:
    if isinstance(exc, dec.ReviewConflict):
        return JSONResponse({"error": str(exc), "current": exc.current.to_dict()}, status_code=409)
    if isinstance(exc, dec.UnknownImage):
        return JSONResponse({"error": str(exc)}, status_code=404)
    return JSONResponse({"error": str(exc)}, status_code=422)


def _qs(params: dict[str, Any]) -> str:
    clean = {k: v for k, v in params.items() if v not in (None, "")}
    return ("?" + urlencode(clean)) if clean else ""


def _merge(base: dict[str, str], changes: dict[str, Any]) -> dict[str, Any]:
    merged: dict[str, Any] = dict(base)
    for key, value in changes.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = value
    return merged
