"""Typed calls to a ComfyUI server's HTTP API, each over an ``httpx.Client`` passed in.

The client's ``base_url`` is the server (``http://127.0.0.1:8188``). Every function answers a
typed value or raises :class:`ComfyError` with one readable line per problem; transport errors
(server down, connection dropped) propagate as ``httpx.TransportError`` so callers can retry.

Example::

    with connect("http://127.0.0.1:8188") as http:
        info = system_info(http)
        free(http)
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

import httpx

from likeness.engines.comfyui.errors import ComfyError, prompt_error_lines
from likeness.engines.comfyui.protocol import (
    HistoryEntry,
    ImageRef,
    QueueState,
    Submitted,
    SystemInfo,
    UploadedImage,
    parse_history,
    parse_queue,
    parse_submitted,
    parse_system_stats,
    parse_uploaded,
)

DEFAULT_TIMEOUT = httpx.Timeout(30.0, connect=10.0)


def connect(url: str, *, timeout: httpx.Timeout | float = DEFAULT_TIMEOUT) -> httpx.Client:
    """An ``httpx.Client`` for the server at ``url`` (close it, or use it in a ``with``)."""
    url = url.rstrip("/")
    if not url.startswith(("http://", "https://")):
        raise ComfyError([f"--comfy-url: {url!r} must start with http:// or https://"])
    return httpx.Client(base_url=url, timeout=timeout)


def ws_url(http: httpx.Client, client_id: str) -> str:
    """The WebSocket address for ``client_id`` on the server ``http`` talks to."""
    base = str(http.base_url).rstrip("/")
    scheme, rest = base.split("://", 1)
    return f"{'wss' if scheme == 'https' else 'ws'}://{rest}/ws?clientId={client_id}"


def _json(response: httpx.Response, what: str) -> Any:
    if response.status_code != 200:
        raise ComfyError([f"{what} answered HTTP {response.status_code} {response.reason_phrase}"])
    try:
        return response.json()
    except ValueError:
        raise ComfyError([f"{what} did not answer JSON; is this a ComfyUI server?"]) from None


def _ok(response: httpx.Response, what: str) -> None:
    if response.status_code != 200:
        raise ComfyError([f"{what} answered HTTP {response.status_code} {response.reason_phrase}"])


# ---- server facts ---------------------------------------------------------------------------


def system_info(http: httpx.Client) -> SystemInfo:
    """Versions, RAM and devices (with VRAM) from ``GET /system_stats``."""
    return parse_system_stats(_json(http.get("/system_stats"), "GET /system_stats"))


def object_info(http: httpx.Client, node_class: str | None = None) -> dict[str, Any]:
    """``GET /object_info`` (every node) or ``/object_info/{node_class}`` ({} when unknown)."""
    path = "/object_info" if node_class is None else f"/object_info/{node_class}"
    body = _json(http.get(path), f"GET {path}")
    if not isinstance(body, dict):
        raise ComfyError([f"GET {path} did not answer a JSON object"])
    return body


def list_models(http: httpx.Client, folder: str) -> list[str]:
    """Model files of one folder (``checkpoints``, ``loras``, ``upscale_models``...)."""
    response = http.get(f"/models/{folder}")
    if response.status_code == 404:
        raise ComfyError([f"the server has no model folder {folder!r}"])
    return [str(name) for name in _json(response, f"GET /models/{folder}")]


def queue(http: httpx.Client) -> QueueState:
    """Prompt ids running and waiting (``GET /queue``)."""
    return parse_queue(_json(http.get("/queue"), "GET /queue"))


def history(http: httpx.Client, prompt_id: str) -> HistoryEntry | None:
    """The finished (or failed) prompt ``prompt_id``, or None while it is unknown or running."""
    return parse_history(_json(http.get(f"/history/{prompt_id}"), "GET /history"), prompt_id)


# ---- actions --------------------------------------------------------------------------------


def free(
    target: httpx.Client | str, *, unload_models: bool = True, free_memory: bool = True
) -> None:
    """Ask the server to unload its models and free (V)RAM (``POST /free``).

    ComfyUI applies it when its worker is next idle. ``target`` is a client or a server URL.
    """
    body = {"unload_models": unload_models, "free_memory": free_memory}
    if isinstance(target, str):
        with connect(target) as http:
            _ok(http.post("/free", json=body), "POST /free")
    else:
        _ok(target.post("/free", json=body), "POST /free")


def interrupt(http: httpx.Client, prompt_id: str | None = None) -> None:
    """Stop the running prompt (only ``prompt_id`` when given)."""
    body = {} if prompt_id is None else {"prompt_id": prompt_id}
    _ok(http.post("/interrupt", json=body), "POST /interrupt")


def delete_queued(http: httpx.Client, prompt_ids: list[str]) -> None:
    """Remove waiting prompts from the queue."""
    _ok(http.post("/queue", json={"delete": prompt_ids}), "POST /queue")


def upload_image(
    http: httpx.Client,
    data: bytes,
    filename: str,
    *,
    subfolder: str = "",
    overwrite: bool = False,
) -> UploadedImage:
    """Upload an input image; the server renames it ``name (1).ext`` when another file with
    different bytes already has that name, and keeps the name for identical bytes."""
    fields = {"type": "input", "subfolder": subfolder}
    if overwrite:
        fields["overwrite"] = "true"
    response = http.post(
        "/upload/image", files={"image": (filename, data, "image/png")}, data=fields
    )
    if response.status_code == 400:
        raise ComfyError([f"the server refused the upload of {filename!r} (HTTP 400)"])
    return parse_uploaded(_json(response, "POST /upload/image"))


def view(http: httpx.Client, ref: ImageRef) -> bytes:
    """The bytes of an output (or input/temp) file."""
    response = http.get("/view", params=ref.params())
    if response.status_code == 404:
        raise ComfyError([f"the server has no {ref.type} file {ref.subfolder}/{ref.filename}"])
    if response.status_code == 400:
        raise ComfyError([f"the server refused the file name {ref.filename!r} (HTTP 400)"])
    _ok(response, "GET /view")
    return response.content


def post_prompt(
    http: httpx.Client,
    graph: Mapping[str, Any],
    *,
    client_id: str,
    prompt_id: str,
    extra_pnginfo: Mapping[str, Any] | None = None,
    timeout: float | None = None,
) -> Submitted:
    """``POST /prompt`` once. A refused graph raises ComfyError with a line per node error."""
    body: dict[str, Any] = {"prompt": graph, "client_id": client_id, "prompt_id": prompt_id}
    if extra_pnginfo:
        body["extra_data"] = {"extra_pnginfo": dict(extra_pnginfo)}
    kwargs: dict[str, Any] = {} if timeout is None else {"timeout": timeout}
    response = http.post("/prompt", json=body, **kwargs)
    if response.status_code == 400:
        try:
            payload = response.json()
        except ValueError:
            payload = {}
        raise ComfyError(prompt_error_lines(payload))
    if response.status_code == 403:
        raise ComfyError(["the server refused the request (HTTP 403, a cross-origin check)"])
    return parse_submitted(_json(response, "POST /prompt"))


def prompt_state(http: httpx.Client, prompt_id: str) -> str | None:
    """Where the server has ``prompt_id``: "queue", "history", or None when it has never
    heard of it (or forgot it in a restart).

    The queue is asked first: ComfyUI moves a finished prompt from the queue to the history in
    one step, so asking in this order never misses a prompt that finishes in between.
    """
    if prompt_id in queue(http):
        return "queue"
    if history(http, prompt_id) is not None:
        return "history"
    return None


def submit(
    http: httpx.Client,
    graph: Mapping[str, Any],
    *,
    client_id: str,
    prompt_id: str,
    extra_pnginfo: Mapping[str, Any] | None = None,
    attempts: int = 6,
    backoff: float = 0.5,
    max_backoff: float = 10.0,
    timeout: float | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> Submitted:
    """Queue ``graph`` as ``prompt_id`` exactly once, even when answers get lost.

    After a dropped connection or a timeout the server may already have queued it: the prompt
    id is looked up in ``/history`` and ``/queue`` before posting again, with a growing pause
    while the server is unreachable.
    """
    delay = backoff
    last: Exception | None = None
    for attempt in range(attempts):
        if attempt:
            try:
                if prompt_state(http, prompt_id) is not None:
                    return Submitted(prompt_id=prompt_id, number=None)
            except httpx.TransportError as exc:
                last = exc
                sleep(delay)
                delay = min(delay * 2, max_backoff)
                continue
        try:
            return post_prompt(
                http,
                graph,
                client_id=client_id,
                prompt_id=prompt_id,
                extra_pnginfo=extra_pnginfo,
                timeout=timeout,
            )
        except httpx.TransportError as exc:
            last = exc
            sleep(delay)
            delay = min(delay * 2, max_backoff)
    raise ComfyError(
        [f"could not queue prompt {prompt_id} at {http.base_url} after {attempts} tries: {last}"]
    )
