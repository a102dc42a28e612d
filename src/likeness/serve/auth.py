"""Sign-in, sessions and the dependency every route starts with.

`require_tenant` resolves the signed-in user from the session cookie (a server-side session:
expiry and revocation are checked on every request), checks the CSRF token of any request
that changes something, and returns the user's `Tenant`: the only workspace the route can
reach. Without a session, pages redirect to /login and the API answers 401; a route never
runs, so no id is ever looked up for someone who is not signed in.

Cookies: the session cookie is `Secure` (HTTPS only; browsers allow it on localhost),
`HttpOnly` (no script reads it) and `SameSite=Strict` (never sent with a request another site
starts, not even a link: a link from elsewhere lands on the sign-in page, one reload away).
With Secure, its name carries the `__Host-` prefix, so no subdomain can set or shadow it.
"""

from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Depends, Form, HTTPException, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.exceptions import WebSocketException
from starlette.requests import HTTPConnection
from starlette.status import WS_1008_POLICY_VIOLATION

from likeness.review.security import SAFE_METHODS
from likeness.serve.accounts import get_user, get_user_by_id, verify_token
from likeness.serve.audit import record
from likeness.serve.sessions import Session, create_session, lookup_session, revoke_session
from likeness.serve.tenants import Tenant

if TYPE_CHECKING:
    from fastapi.templating import Jinja2Templates

    from likeness.serve.serverdb import ServerDb
    from likeness.serve.settings import ServeSettings
    from likeness.serve.tenants import TenantRegistry

CSRF_HEADER = "X-CSRF-Token"
LOGIN_MAX_AGE = 15 * 60


@dataclass
class ServerState:
    """What every request of the server shares (no connection, no user)."""

    root: Path
    settings: ServeSettings
    db: ServerDb
    tenants: TenantRegistry
    templates: Jinja2Templates
    static: dict[str, tuple[bytes, str]]
    train_available: bool

    @property
    def secure(self) -> bool:
        return self.settings.serve.cookie_secure

    @property
    def session_cookie(self) -> str:
        return "__Host-likeness_session" if self.secure else "likeness_session"

    @property
    def login_cookie(self) -> str:
        return "__Host-likeness_login" if self.secure else "likeness_login"


class NotSignedIn(Exception):
    """No live session: pages go to /login, the API answers 401."""


def server_state(conn: HTTPConnection) -> ServerState:
    return conn.app.state.serve


def current_session(conn: HTTPConnection) -> Session | None:
    server = server_state(conn)
    return lookup_session(server.db.conn(), conn.cookies.get(server.session_cookie))


def require_tenant(request: Request) -> Tenant:
    """The signed-in user's tenant; 401/redirect without a session, 403 on a wrong CSRF token."""
    server = server_state(request)
    session = current_session(request)
    if session is None:
        raise NotSignedIn()
    if request.method not in SAFE_METHODS:
        given = request.headers.get(CSRF_HEADER) or ""
        if not hmac.compare_digest(given.encode(), session.csrf.encode()):
            raise HTTPException(403, "CSRF token missing or wrong: reload the page and try again")
    user = get_user_by_id(server.db.conn(), session.user_id)
    if user is None or user.disabled:
        raise NotSignedIn()
    tenant = server.tenants.get(user)
    request.state.tenant = tenant
    request.state.session = session
    return tenant


def require_ws_tenant(websocket: HTTPConnection) -> Tenant:
    """`require_tenant` for WebSockets (read-only: no CSRF token; the Origin is checked at
    the edge). Closes with 1008 without a session."""
    server = server_state(websocket)
    session = current_session(websocket)
    user = get_user_by_id(server.db.conn(), session.user_id) if session else None
    if user is None or user.disabled:
        raise WebSocketException(WS_1008_POLICY_VIOLATION, "sign in first")
    tenant = server.tenants.get(user)
    websocket.state.tenant = tenant
    return tenant


CurrentTenant = Annotated[Tenant, Depends(require_tenant)]
WsTenant = Annotated[Tenant, Depends(require_ws_tenant)]


def not_signed_in(request: Request, exc: Exception) -> Response:
    """Pages (GET, not /api/) go to the sign-in page and come back; the API gets 401."""
    if request.method == "GET" and not request.url.path.startswith("/api/"):
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return RedirectResponse(f"/login?next={quote(target, safe='')}", status_code=303)
    return JSONResponse({"detail": "sign in first"}, status_code=401)


def page_context(request: Request) -> dict[str, Any]:
    """Template values every page gets (a Jinja2Templates context processor)."""
    tenant = getattr(request.state, "tenant", None)
    session = getattr(request.state, "session", None)
    return {
        "account": tenant.name if tenant else None,
        "csrf": session.csrf if session else "",
    }


def safe_next(target: str | None) -> str:
    """Where to go after signing in: a path on this server only (no open redirect)."""
    if not target or not target.startswith("/") or target.startswith(("//", "/\\")):
        return "/studio"
    return target


# -- routes --------------------------------------------------------------------------------------
router = APIRouter()


@router.get("/login", response_class=HTMLResponse)
def login_page(request: Request, next: str | None = None) -> Response:
    server = server_state(request)
    if current_session(request) is not None:
        return RedirectResponse(safe_next(next), status_code=303)
    return _login_form(request, server, next=safe_next(next))


@router.post("/login")
def login(
    request: Request,
    name: Annotated[str, Form(max_length=64)],
    token: Annotated[str, Form(max_length=200)],
    csrf: Annotated[str, Form(max_length=200)] = "",
    next: Annotated[str, Form(max_length=2000)] = "/studio",
) -> Response:
    """Sign in with a name and a token: a new session, its cookie, and back where you were."""
    server = server_state(request)
    # 1. The form must come from our own sign-in page (double-submit token).
    expected = request.cookies.get(server.login_cookie) or ""
    if not expected or not hmac.compare_digest(csrf.encode(), expected.encode()):
        return _login_form(
            request,
            server,
            next=safe_next(next),
            error="the form expired; sign in again",
            status=403,
        )
    conn = server.db.conn()
    client = request.client.host if request.client else None
    user = verify_token(conn, name.strip(), token.strip())
    # 2. Refused: one message whatever was wrong; the account's own trail notes the attempt.
    if user is None:
        known = get_user(conn, name.strip())
        if known is not None:
            tenant = server.tenants.get(known)
            _audit(tenant, "sign-in.refused", 401, {"client": client})
        return _login_form(
            request, server, next=safe_next(next), error="name or token is wrong", status=401
        )
    # 3. A session and its cookie.
    value, _session = create_session(
        conn, user.id, hours=server.settings.serve.session_hours, client=client
    )
    tenant = server.tenants.get(user)
    _audit(tenant, "sign-in", 303, {"client": client})
    response = RedirectResponse(safe_next(next), status_code=303)
    response.set_cookie(
        server.session_cookie,
        value,
        max_age=int(server.settings.serve.session_hours * 3600),
        path="/",
        secure=server.secure,
        httponly=True,
        samesite="strict",
    )
    response.delete_cookie(
        server.login_cookie, path="/", secure=server.secure, httponly=True, samesite="strict"
    )
    return response


@router.post("/logout")
def logout(request: Request, tenant: CurrentTenant) -> Response:
    """End this session (the cookie is cleared, and the server forgets the session)."""
    server = server_state(request)
    revoke_session(server.db.conn(), request.cookies.get(server.session_cookie))
    response = JSONResponse({"redirect": "/login"})
    response.delete_cookie(
        server.session_cookie, path="/", secure=server.secure, httponly=True, samesite="strict"
    )
    return response


def _login_form(
    request: Request,
    server: ServerState,
    *,
    next: str,
    error: str | None = None,
    status: int = 200,
) -> Response:
    token = secrets.token_urlsafe(24)
    response = server.templates.TemplateResponse(
        request,
        "login.html",
        {"next": next, "login_csrf": token, "error": error},
        status_code=status,
    )
    response.set_cookie(
        server.login_cookie,
        token,
        max_age=LOGIN_MAX_AGE,
        path="/",
        secure=server.secure,
        httponly=True,
        samesite="strict",
    )
    return response


def _audit(tenant: Tenant, action: str, status: int, detail: dict[str, Any]) -> None:
    with tenant.lease() as conn:
        record(conn, actor=tenant.name, action=action, status=status, detail=detail)
