"""The review web app: a queue of candidates, a focus view, and the endpoints behind their keys.

`create_app` builds one app per workspace; the routes live in `pages` (HTML and images) and
`api` (JSON), and only parse, call `likeness.review.*` and render. Every request passes the
`AccessGuard` first (token, host, origin; see `security`).

Example:
    app = create_app(Path("~/chars/mara").expanduser())
    uvicorn.run(app, host="127.0.0.1", port=8765)
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from urllib.parse import urlencode

from fastapi import FastAPI, Request
from fastapi.responses import PlainTextResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from likeness.review import api, pages
from likeness.review.deps import ReviewState, default_reviewer, get_db
from likeness.review.metrics import MetricsIndex
from likeness.review.security import TOKEN_COOKIE, TOKEN_HEADER, Guard
from likeness.review.thumbs import ThumbnailCache
from likeness.workspace import DB_FILE, Workspace

__all__ = ["THUMB_CACHE_DIR", "AccessGuard", "create_app", "get_db"]

THUMB_CACHE_DIR = Path("cache") / "thumbs"
_STATIC_TYPES = {".css": "text/css", ".js": "text/javascript", ".svg": "image/svg+xml"}


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
        if scope["type"] == "websocket":
            # Browsers let any page open a WebSocket to any host: the same rules apply, with
            # the Origin checked as for a request that changes something.
            ws = HTTPConnection(scope)
            if self.guard.check(
                "WEBSOCKET",
                ws.headers.get("host"),
                ws.headers.get("origin"),
                ws.headers.get("sec-fetch-site"),
                ws.headers.get(TOKEN_HEADER),
                ws.cookies.get(TOKEN_COOKIE),
            ):
                await send({"type": "websocket.close", "code": 1008})
                return
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
        reviewer=reviewer or default_reviewer(),
        static=_load_static(),
        templates=_templates(),
    )
    guard = Guard(token=token, allowed_origins=frozenset(allowed_origins))

    # 2. The app: the guard in front of every request, then the pages and the API.
    app = FastAPI(title="Likeness review", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.review = state
    app.add_middleware(AccessGuard, guard=guard)
    app.include_router(pages.router)
    app.include_router(api.router)
    return app


def _templates() -> Jinja2Templates:
    env = Environment(
        loader=FileSystemLoader(str(Path(__file__).parent / "templates")),
        autoescape=select_autoescape(["html"]),
    )
    return Jinja2Templates(env=env)
