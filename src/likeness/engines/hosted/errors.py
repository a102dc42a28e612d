"""Errors of the hosted engines, each one readable line.

Replicate answers errors as RFC 7807 problem details (``{"type", "title", "status", "detail"}``,
plus ``invalid_fields`` for a refused input); older endpoints and fal answer ``{"detail": ...}``
where ``detail`` may be a list of pydantic-style ``{"loc", "msg"}`` items. People need the
endpoint, the status and what the server said, not the JSON.
"""

from __future__ import annotations

from typing import Any

import httpx

from likeness.engines.base import EngineError


class HostedError(EngineError):
    """A hosted API refused or failed a request; the message is one line."""


class SubmitUncertain(HostedError):
    """A request that creates (and bills) work got no answer: it may or may not exist now."""


class HostedBudgetExceeded(RuntimeError):
    """The next prediction or training would pass ``max_images`` / ``max_cost``.

    Not an :class:`EngineError`: a sweep must stop here, not record a failed cell and go on.
    """


def one_line(text: Any, limit: int = 400) -> str:
    """``text`` with every run of whitespace (newlines too) made one space, cut at ``limit``."""
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def problem_line(response: httpx.Response) -> str:
    """What an error response says, from its JSON body (or its text)."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        text = one_line(response.text, 200)
        return text or response.reason_phrase
    parts: list[str] = []
    title = body.get("title")
    if title:
        parts.append(str(title))
    detail = body.get("detail")
    if isinstance(detail, list):  # fal / FastAPI validation errors
        for item in detail:
            if isinstance(item, dict):
                loc = ".".join(str(x) for x in item.get("loc", []) if x != "body")
                parts.append(f"{loc}: {item.get('msg', item)}" if loc else str(item.get("msg")))
            else:
                parts.append(str(item))
    elif detail:
        parts.append(str(detail))
    for field in body.get("invalid_fields") or []:
        if isinstance(field, dict):
            parts.append(f"{field.get('field', '?')}: {field.get('description', field)}")
    if not parts and body.get("error"):
        parts.append(str(body["error"]))
    return one_line("; ".join(parts) or response.reason_phrase)


def status_line(provider: str, method: str, url: httpx.URL | str, response: httpx.Response) -> str:
    """``replicate: POST /v1/... answered HTTP 422: Input validation failed; seed: ...``."""
    path = httpx.URL(str(url)).path
    return (
        f"{provider}: {method} {path} answered HTTP {response.status_code}: "
        f"{problem_line(response)}"
    )
