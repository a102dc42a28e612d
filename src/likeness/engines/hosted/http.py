"""The HTTP code Replicate and fal share: auth, retry rules, polling, downloads.

Retry rules (a flaky network must never bill the same image twice):

- ``GET`` (status, results, downloads) and cancels are safe to repeat: retried on a dropped
  connection, a timeout, HTTP 429 (after its ``Retry-After``) and 5xx, with a growing pause.
- A ``POST`` that creates work is sent again only when the server cannot have seen it (the
  connection was never made) or refused it outright (HTTP 429, after ``Retry-After``). Any
  other lost answer raises :class:`SubmitUncertain`; the provider code then looks for the work
  it may have created (Replicate) or stops with one line (fal), and never posts blindly.

The token goes only to the API's own origin: output files on a CDN are fetched without it.
"""

from __future__ import annotations

import email.utils
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

import httpx

from likeness.engines.hosted.errors import HostedError, SubmitUncertain, status_line
from likeness.engines.hosted.secrets import ApiToken

T = TypeVar("T")
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
DEFAULT_TIMEOUT = httpx.Timeout(30.0, connect=10.0)


@dataclass(frozen=True)
class RetryPolicy:
    """How hard to retry safe requests: ``attempts`` tries, pauses from ``backoff`` doubling
    up to ``max_backoff`` seconds; a ``Retry-After`` is honoured up to ``max_retry_after``."""

    attempts: int = 6
    backoff: float = 0.5
    max_backoff: float = 30.0
    max_retry_after: float = 300.0


def retry_after(response: httpx.Response, default: float, cap: float) -> float:
    """Seconds to wait from a ``Retry-After`` header (seconds or an HTTP date)."""
    header = (response.headers.get("Retry-After") or "").strip()
    if not header:
        return default
    try:
        return min(max(float(header), 0.0), cap)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(header)
    except (TypeError, ValueError):
        return default
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return min(max((when - datetime.now(UTC)).total_seconds(), 0.0), cap)


def origin(url: httpx.URL | str) -> tuple[str, str, int | None]:
    u = httpx.URL(str(url))
    return (u.scheme, u.host, u.port)


class HostedHttp:
    """One provider's API over an ``httpx.Client`` (passed in, or opened here).

    Args:
        provider (`str`): "replicate" or "fal", the first word of every error line.
        base_url (`str`): the API (``https://api.replicate.com``); the token is sent to this
            origin and to ``also_authorise`` origins only.
        token (`ApiToken`): sent as ``Authorization: {scheme} {token}``.
        scheme (`str`): "Bearer" (Replicate) or "Key" (fal).
    """

    def __init__(
        self,
        provider: str,
        base_url: str,
        token: ApiToken,
        *,
        scheme: str,
        also_authorise: tuple[str, ...] = (),
        http: httpx.Client | None = None,
        policy: RetryPolicy = RetryPolicy(),
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        base = base_url.rstrip("/")
        if not base.startswith(("http://", "https://")):
            raise HostedError(f"{provider}: API URL {base_url!r} must start with https://")
        self.provider = provider
        self.base_url = base
        self._token = token
        self._scheme = scheme
        self._origins = {origin(base), *(origin(u) for u in also_authorise)}
        self.http = http if http is not None else httpx.Client(timeout=DEFAULT_TIMEOUT)
        self._owns_http = http is None
        self.policy = policy
        self.sleep = sleep

    # ---- plumbing ----------------------------------------------------------------------
    def url(self, path_or_url: str) -> str:
        if path_or_url.startswith(("http://", "https://")):
            return path_or_url
        return f"{self.base_url}/{path_or_url.lstrip('/')}"

    def authorised(self, url: str) -> bool:
        return origin(url) in self._origins

    def _headers(self, url: str, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        headers = dict(extra or {})
        if self.authorised(url):
            headers["Authorization"] = f"{self._scheme} {self._token.value}"
        return headers

    def close(self) -> None:
        if self._owns_http:
            self.http.close()

    # ---- safe requests -----------------------------------------------------------------
    def request(
        self,
        method: str,
        path_or_url: str,
        *,
        expect: tuple[int, ...] = (200,),
        headers: Mapping[str, str] | None = None,
        timeout: httpx.Timeout | float | None = None,
        **kwargs: Any,
    ) -> httpx.Response:
        """A request that is safe to repeat (GET, a cancel): retried per the policy; an
        unexpected status raises HostedError with what the server said."""
        url = self.url(path_or_url)
        delay = self.policy.backoff
        last = ""
        for attempt in range(self.policy.attempts):
            if attempt:
                self.sleep(delay)
                delay = min(delay * 2, self.policy.max_backoff)
            try:
                response = self.http.request(
                    method,
                    url,
                    headers=self._headers(url, headers),
                    timeout=timeout or DEFAULT_TIMEOUT,
                    **kwargs,
                )
            except httpx.TransportError as exc:
                last = f"{type(exc).__name__}: {exc}"
                continue
            if response.status_code in expect:
                return response
            if response.status_code in RETRY_STATUSES:
                last = status_line(self.provider, method, url, response)
                if response.status_code == 429:
                    delay = retry_after(response, delay, self.policy.max_retry_after)
                continue
            raise HostedError(status_line(self.provider, method, url, response))
        raise HostedError(
            f"{self.provider}: {method} {httpx.URL(url).path} failed {self.policy.attempts} "
            f"times; last: {last}"
        )

    def get_json(self, path_or_url: str, **kwargs: Any) -> Any:
        return _json(self.request("GET", path_or_url, **kwargs), self.provider, path_or_url)

    def download(self, url: str) -> bytes:
        """The bytes at ``url`` (an output file): retried like a GET; no token to other hosts."""
        return self.request("GET", url, timeout=httpx.Timeout(120.0, connect=10.0)).content

    # ---- requests that create work -----------------------------------------------------
    def create(
        self,
        path_or_url: str,
        *,
        expect: tuple[int, ...] = (200, 201, 202),
        headers: Mapping[str, str] | None = None,
        timeout: httpx.Timeout | float | None = None,
        **kwargs: Any,
    ) -> Any:
        """POST once; sent again only when it cannot have arrived (no connection) or was
        refused with 429. A lost answer raises SubmitUncertain; an error status HostedError."""
        url = self.url(path_or_url)
        delay = self.policy.backoff
        for attempt in range(self.policy.attempts):
            if attempt:
                self.sleep(delay)
                delay = min(delay * 2, self.policy.max_backoff)
            try:
                response = self.http.post(
                    url,
                    headers=self._headers(url, headers),
                    timeout=timeout or DEFAULT_TIMEOUT,
                    **kwargs,
                )
            except (httpx.ConnectError, httpx.ConnectTimeout):
                continue  # never reached the server: nothing was created
            except httpx.TransportError as exc:
                raise SubmitUncertain(
                    f"{self.provider}: POST {httpx.URL(url).path} got no answer "
                    f"({type(exc).__name__}: {exc})"
                ) from exc
            if response.status_code in expect:
                return _json(response, self.provider, path_or_url)
            if response.status_code == 429:
                delay = retry_after(response, delay, self.policy.max_retry_after)
                continue
            if response.status_code >= 500:
                raise SubmitUncertain(status_line(self.provider, "POST", url, response))
            raise HostedError(status_line(self.provider, "POST", url, response))
        raise HostedError(
            f"{self.provider}: POST {httpx.URL(url).path} could not be sent after "
            f"{self.policy.attempts} tries (no connection or rate limited); nothing was created"
        )


def _json(response: httpx.Response, provider: str, where: str) -> Any:
    try:
        return response.json()
    except ValueError:
        raise HostedError(
            f"{provider}: {httpx.URL(where).path or where} did not answer JSON "
            f"(HTTP {response.status_code})"
        ) from None


@dataclass(frozen=True)
class PollPolicy:
    """Status polling: ``interval`` growing 1.5x per poll up to ``max_interval``; give up
    (and cancel) after ``timeout`` seconds."""

    interval: float = 1.0
    max_interval: float = 10.0
    timeout: float = 1800.0


def poll(
    fetch: Callable[[], T],
    finished: Callable[[T], bool],
    *,
    policy: PollPolicy,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
    on_update: Callable[[T], None] | None = None,
    first: T | None = None,
) -> T:
    """Fetch until ``finished``: pauses grow from ``interval`` to ``max_interval``. Raises
    TimeoutError after ``policy.timeout`` seconds (the caller cancels the work)."""
    started = clock()
    delay = policy.interval
    state = first if first is not None else fetch()
    while True:
        if on_update is not None:
            on_update(state)
        if finished(state):
            return state
        if clock() - started > policy.timeout:
            raise TimeoutError(f"not finished after {policy.timeout:g} s")
        sleep(delay)
        delay = min(delay * 1.5, policy.max_interval)
        state = fetch()
