"""The server's edge, in front of every route: who may talk to it, and the audit trail.

`EdgeGuard` answers 403 before any route runs when the Host header is not one the server
answers to (DNS rebinding), or when a request that changes something (or opens a WebSocket)
comes from another site's page (its Origin, or `Sec-Fetch-Site: cross-site` without one). It
adds the review app's security headers to every response, and HSTS when cookies are Secure.

`AuditTrail` writes one audit row into the signed-in user's workspace after each request
that changes something: the route, the ids it named (path, and the id fields of a JSON
body), the status answered, the client, and what the route added (`request.state.audit`).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from functools import partial
from typing import Any

import anyio
from starlette.requests import HTTPConnection
from starlette.responses import PlainTextResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from likeness.review.app import SECURITY_HEADERS
from likeness.review.security import SAFE_METHODS, Guard, is_loopback
from likeness.serve.audit import record

HSTS = (b"strict-transport-security", b"max-age=31536000")
# `same-origin`, not the review app's `no-referrer`: with no referrer at all, Chromium sends
# `Origin: null` on a form post (the sign-in form), which the Origin guard must refuse. Other
# sites still get no referrer.
REFERRER = (b"referrer-policy", b"same-origin")
NO_STORE = (b"cache-control", b"no-store")
AUDIT_BODY_FIELDS = ("sha256", "decision", "name", "label", "dataset", "engine", "model", "n")
_MAX_AUDIT_BODY = 64 * 1024


def host_name(host_header: str) -> str:
    """The host part of a Host header (no port, no IPv6 brackets)."""
    # Copied from likeness.review.security._hostname.
    host = host_header.strip()
    if host.startswith("["):
        return host[1 : host.find("]")] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


class EdgeGuard:
    """Host and Origin checks and security headers (pure ASGI, so WebSockets pass it too).

    `hosts`: names the server answers to; empty means loopback names only when
    `loopback_only`, else any.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        hosts: Iterable[str] = (),
        loopback_only: bool = True,
        allowed_origins: Iterable[str] = (),
        hsts: bool = False,
    ) -> None:
        self.app = app
        self.hosts = frozenset(h.lower() for h in hosts)
        self.loopback_only = loopback_only
        self.origins = Guard(allowed_origins=frozenset(allowed_origins))
        self.headers = [
            *(h for h in SECURITY_HEADERS if h[0] != REFERRER[0]),
            REFERRER,
            *([HSTS] if hsts else []),
        ]

    def refusal(self, method: str, conn: HTTPConnection) -> str | None:
        """Why this request is refused (403), or None."""
        host = conn.headers.get("host") or ""
        name = host_name(host).lower()
        if self.hosts and name not in self.hosts:
            return f"host {host!r} refused: this server answers to {', '.join(sorted(self.hosts))}"
        if not self.hosts and self.loopback_only and not is_loopback(name):
            return f"host {host!r} refused: this server answers on loopback names only"
        if method in SAFE_METHODS:
            return None
        origin = conn.headers.get("origin")
        if not self.origins.origin_ok(origin, host):
            return f"origin {origin!r} may not change anything here"
        if origin is None and conn.headers.get("sec-fetch-site") == "cross-site":
            return "a cross-site request may not change anything here"
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        conn = HTTPConnection(scope)
        method = scope.get("method", "WEBSOCKET")
        reason = self.refusal(method, conn)
        if scope["type"] == "websocket":
            if reason:
                await send({"type": "websocket.close", "code": 1008, "reason": "refused"})
                return
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                if not any(k.lower() == b"cache-control" for k, _ in headers):
                    headers.append(NO_STORE)
                message["headers"] = headers + self.headers
            await send(message)

        if reason:
            await PlainTextResponse(reason, status_code=403)(scope, receive, send_with_headers)
            return
        await self.app(scope, receive, send_with_headers)


class AuditTrail:
    """One audit row per state-changing request of a signed-in user (after the answer)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in SAFE_METHODS:
            await self.app(scope, receive, send)
            return
        conn = HTTPConnection(scope)
        is_json = (conn.headers.get("content-type") or "").startswith("application/json")
        body = bytearray()
        status: list[int] = []

        async def receive_and_keep() -> Message:
            message = await receive()
            if is_json and message["type"] == "http.request" and len(body) < _MAX_AUDIT_BODY:
                body.extend(message.get("body", b""))
            return message

        async def send_and_note(message: Message) -> None:
            if message["type"] == "http.response.start":
                status.append(message["status"])
            await send(message)

        await self.app(scope, receive_and_keep, send_and_note)
        state = scope.get("state") or {}
        tenant = state.get("tenant")
        if tenant is None or state.get("audited"):
            return  # not signed in (refused before any route), or the route wrote its own row
        route = scope.get("route")
        path_params = dict(scope.get("path_params") or {})
        fields = _body_fields(bytes(body)) if is_json else {}
        detail: dict[str, Any] = {"client": conn.client.host if conn.client else None}
        if path_params:
            detail["path"] = path_params
        if fields:
            detail["body"] = fields
        detail.update(state.get("audit") or {})
        target = (
            next(iter(path_params.values()), None) or fields.get("sha256") or fields.get("name")
        )
        await anyio.to_thread.run_sync(
            partial(
                _write,
                tenant,
                action=f"{scope['method']} {getattr(route, 'path', scope['path'])}",
                target=None if target is None else str(target),
                status=status[0] if status else None,
                detail=detail,
            )
        )


def _body_fields(body: bytes) -> dict[str, Any]:
    try:
        data = json.loads(body or b"{}")
    except ValueError:
        return {}
    if not isinstance(data, dict):
        return {}
    kept = {k: data[k] for k in AUDIT_BODY_FIELDS if k in data}
    if isinstance(data.get("loras"), list):
        kept["loras"] = [x.get("sha256") for x in data["loras"] if isinstance(x, dict)]
    return kept


def _write(tenant: Any, **row: Any) -> None:
    with tenant.lease() as conn:
        record(conn, actor=tenant.name, **row)
