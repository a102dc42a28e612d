"""Who may talk to the review server.

- Loopback only by default. A server bound to any other address must have a token: requests
  without it (header `X-Likeness-Token`, or the cookie set by visiting `/?token=...`) get 401.
- Without a token, the Host header must name the loopback interface, so a web page that
  rebinds its own DNS name to 127.0.0.1 still cannot read the queue.
- A state-changing request whose Origin is another site gets 403 (as ComfyUI does): a page
  open in the same browser cannot decide, export or cut datasets behind the reviewer's back.
"""

from __future__ import annotations

import ipaddress
import secrets
from dataclasses import dataclass, field
from urllib.parse import urlsplit

TOKEN_HEADER = "X-Likeness-Token"
TOKEN_COOKIE = "likeness_token"
LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def is_loopback(host: str) -> bool:
    """True for `localhost` and loopback addresses (127.0.0.0/8, ::1)."""
    host = host.strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def new_token() -> str:
    return secrets.token_urlsafe(24)


def token_for_bind(host: str, token: str | None) -> str | None:
    """The token a server bound to `host` must require: the given one, a new one for any
    non-loopback host, or None (no token) on loopback.

    Example: token_for_bind("0.0.0.0", None) -> "k3J..." (print it once, then require it)
    """
    if token:
        return token
    return None if is_loopback(host) else new_token()


@dataclass(frozen=True)
class Verdict:
    status: int
    message: str


@dataclass(frozen=True)
class Guard:
    token: str | None = None
    allowed_origins: frozenset[str] = field(default_factory=frozenset)

    def token_ok(self, header: str | None, cookie: str | None) -> bool:
        if self.token is None:
            return True
        for given in (header, cookie):
            if given and secrets.compare_digest(given.encode(), self.token.encode()):
                return True
        return False

    def query_token_ok(self, given: str | None) -> bool:
        return bool(
            self.token and given and secrets.compare_digest(given.encode(), self.token.encode())
        )

    def check(
        self,
        method: str,
        host_header: str | None,
        origin: str | None,
        fetch_site: str | None,
        token_header: str | None,
        token_cookie: str | None,
    ) -> Verdict | None:
        """None when the request may proceed, else the status and a one-line reason."""
        hostname = _hostname(host_header or "")
        if self.token is None and not is_loopback(hostname):
            return Verdict(
                403,
                f"host {host_header!r} refused: this server answers on 127.0.0.1 only "
                "(serve with --host and a token to share it)",
            )
        if not self.token_ok(token_header, token_cookie):
            return Verdict(
                401,
                f"token required: send header {TOKEN_HEADER} or open the URL with ?token=... "
                "printed when the server started",
            )
        if method.upper() not in SAFE_METHODS and not self.origin_ok(origin, host_header):
            return Verdict(403, f"origin {origin!r} may not change this review")
        if method.upper() not in SAFE_METHODS and origin is None and fetch_site == "cross-site":
            return Verdict(403, "cross-site request may not change this review")
        return None

    def origin_ok(self, origin: str | None, host_header: str | None) -> bool:
        """No Origin (a script, curl) passes; a browser's Origin must be this server's own
        host:port or one of `allowed_origins`."""
        if origin is None:
            return True
        if origin in self.allowed_origins:
            return True
        parts = urlsplit(origin)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            return False
        return bool(host_header) and parts.netloc.lower() == host_header.lower()


def _hostname(host_header: str) -> str:
    host = host_header.strip()
    if host.startswith("["):
        return host[1 : host.find("]")] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host
