"""fal's queue API, the calls Likeness makes (``https://queue.fal.run``).

``POST {queue}/{app}`` with the model input as the JSON body answers ``{"request_id",
"status_url", "response_url", "cancel_url", "queue_position"}``; ``GET {status_url}?logs=1``
answers ``{"status": "IN_QUEUE", "queue_position"}``, ``{"status": "IN_PROGRESS", "logs":
[{"message", ...}]}`` or ``{"status": "COMPLETED", "logs", "metrics": {"inference_time"},
"error"?}``; ``GET {response_url}`` answers the model's output (``{"images": [{"url", "width",
"height", "content_type"}], "seed", "timings", "has_nsfw_concepts"}`` for fal-ai/flux-lora) or
an error with ``{"detail": ...}``; ``PUT {cancel_url}`` asks to cancel (202, or 400 when the
request already finished). The header is ``Authorization: Key $FAL_KEY``.

Uploads (a dataset zip, a local LoRA file): ``POST {rest}/storage/upload/initiate?storage_type=
gcs`` with ``{"file_name", "content_type"}`` answers ``{"upload_url", "file_url"}``; the bytes
are PUT to ``upload_url`` (a signed URL: no token is sent there) and models read ``file_url``.

fal has no documented idempotency key and no way to look a queued request up by its input, so a
submit whose answer was lost is not sent again: the command stops with one line.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from likeness.engines.hosted.errors import HostedError, SubmitUncertain, one_line
from likeness.engines.hosted.http import HostedHttp, origin

FINAL = ("COMPLETED",)


def submit(http: HostedHttp, app: str, inputs: Mapping[str, Any]) -> dict[str, Any]:
    """Queue one request; its status/response/cancel URLs must stay on the queue's host."""
    try:
        body = http.create(f"/{app}", json=dict(inputs))
    except SubmitUncertain as exc:
        raise HostedError(
            f"{exc}; fal may have queued it, and it cannot be looked up by its input, so it "
            "was not sent again (no double billing): check your fal dashboard's requests, "
            "then run the same command again"
        ) from exc
    if not isinstance(body, dict) or not body.get("request_id"):
        raise HostedError(f"fal: POST /{app} did not answer a request_id")
    for key in ("status_url", "response_url", "cancel_url"):
        url = body.get(key)
        if not isinstance(url, str) or origin(url) != origin(http.base_url):
            raise HostedError(
                f"fal: the queue answered a {key} off its own host ({url!r}); refusing to "
                "send the key there"
            )
    return body


def status(http: HostedHttp, handle: Mapping[str, Any]) -> dict[str, Any]:
    body = http.get_json(str(handle["status_url"]), params={"logs": 1})
    if not isinstance(body, dict) or body.get("status") not in (
        "IN_QUEUE",
        "IN_PROGRESS",
        "COMPLETED",
    ):
        raise HostedError(f"fal: request {handle['request_id']} answered an unknown status")
    return body


def result(http: HostedHttp, handle: Mapping[str, Any], what: str) -> dict[str, Any]:
    """The output of a COMPLETED request; an error answer is one line."""
    try:
        body = http.get_json(str(handle["response_url"]))
    except HostedError as exc:
        raise HostedError(f"fal request {handle['request_id']} ({what}) failed: {exc}") from exc
    if not isinstance(body, dict):
        raise HostedError(f"fal request {handle['request_id']} ({what}) answered no object")
    return body


def cancel(http: HostedHttp, handle: Mapping[str, Any]) -> None:
    http.request("PUT", str(handle["cancel_url"]), expect=(200, 202, 400))


def failure_line(handle: Mapping[str, Any], state: Mapping[str, Any], what: str) -> str:
    error = one_line(state.get("error") or "no error message", 300)
    kind = f" [{state['error_type']}]" if state.get("error_type") else ""
    return f"fal request {handle['request_id']} ({what}) failed{kind}: {error}"


def log_messages(state: Mapping[str, Any]) -> str:
    logs = state.get("logs") or []
    return "\n".join(str(x.get("message", "")) for x in logs if isinstance(x, dict))


def upload(http: HostedHttp, rest_url: str, data: bytes, file_name: str, content_type: str) -> str:
    """Put ``data`` in fal storage; returns the URL models read it from."""
    init = http.request(
        "POST",
        f"{rest_url.rstrip('/')}/storage/upload/initiate",
        params={"storage_type": "gcs"},
        json={"file_name": file_name, "content_type": content_type},
    ).json()
    if not isinstance(init, dict) or not init.get("upload_url") or not init.get("file_url"):
        raise HostedError("fal: storage upload/initiate answered no upload_url / file_url")
    http.request(
        "PUT",
        str(init["upload_url"]),
        expect=(200, 201, 204),
        content=data,
        headers={"Content-Type": content_type},
    )
    return str(init["file_url"])
