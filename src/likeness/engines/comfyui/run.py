"""Run one API-format graph on a ComfyUI server to the end, surviving dropped connections.

The wire protocol (ComfyUI's ``websockets_api_example.py``): open the WebSocket with our own
``clientId``, POST the graph with our own ``prompt_id``, read frames until ``executing`` with
``node: null`` for that prompt, then read ``/history/{id}``. On top of it:

1. a lost ``/prompt`` answer never queues twice (:func:`client.submit` looks first);
2. a dropped WebSocket is reopened with backoff; then the prompt is looked up: finished ->
   read the history; still queued -> keep following; forgotten (the server restarted) ->
   submitted again, once;
3. silence on the socket is covered by polling ``/history`` every ``idle_poll`` seconds, and
   a server whose WebSocket cannot be reached (a proxy that drops upgrades) is polled instead.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import httpx

from likeness.engines.comfyui import client
from likeness.engines.comfyui.errors import ComfyError
from likeness.engines.comfyui.protocol import HistoryEntry, Submitted, parse_frame


@dataclass(frozen=True)
class NodeProgress:
    """A ``progress`` frame (``value`` of ``max`` steps in ``node``), or a node starting
    (``value == max == 0``)."""

    prompt_id: str
    node: str
    value: int
    max: int


@dataclass(frozen=True)
class RetryPolicy:
    """How hard to try. ``reconnect_attempts`` per outage, pauses from ``backoff`` doubling to
    ``max_backoff`` seconds; ``resubmits`` after the server forgot the prompt."""

    reconnect_attempts: int = 8
    backoff: float = 0.5
    max_backoff: float = 10.0
    resubmits: int = 1
    idle_poll: float = 10.0
    poll_interval: float = 1.0
    timeout: float = 6 * 3600.0
    submit_timeout: float | None = None


@dataclass(frozen=True)
class RunResult:
    """A finished prompt: its history entry and what it took to get there."""

    submitted: Submitted
    entry: HistoryEntry
    reconnects: int
    resubmits: int
    wall_s: float
    reused: bool = False


ProgressFn = Callable[[NodeProgress], None]


def _ws_connect(url: str, timeout: float, headers: Mapping[str, str] | None = None) -> Any:
    from websockets.sync.client import connect

    kwargs: dict[str, Any] = {"open_timeout": timeout, "max_size": 2**26, "compression": None}
    if headers:
        kwargs["additional_headers"] = dict(headers)
    try:  # websockets >= 17 asks callers that keep the socket to say so
        return connect(url, legacy=True, **kwargs)
    except TypeError:
        return connect(url, **kwargs)


def _ws_errors() -> tuple[type[BaseException], ...]:
    from websockets.exceptions import ConnectionClosed, InvalidHandshake

    return (ConnectionClosed, InvalidHandshake, OSError)


def run_prompt(
    http: httpx.Client,
    graph: Mapping[str, Any],
    *,
    client_id: str | None = None,
    prompt_id: str | None = None,
    extra_pnginfo: Mapping[str, Any] | None = None,
    on_progress: ProgressFn | None = None,
    policy: RetryPolicy = RetryPolicy(),
    reuse: bool = False,
    sleep: Callable[[float], None] = time.sleep,
) -> RunResult:
    """Queue ``graph``, follow it to the end and return its history entry.

    With ``reuse``, a ``prompt_id`` the server already finished is not run again (its history
    entry is returned, ``reused=True``) and one still queued is followed, not queued twice:
    with a prompt id derived from the graph, running a killed job again picks up its work.

    Raises :class:`ComfyError` with one line per problem when the server refuses the graph,
    a node fails while running, the job is interrupted, or the server stays unreachable.
    """
    client_id = client_id or str(uuid.uuid4())
    prompt_id = prompt_id or str(uuid.uuid4())
    started = time.monotonic()
    deadline = started + policy.timeout
    state = _Follow(http, graph, client_id, prompt_id, extra_pnginfo, policy, sleep)
    try:
        # 1. Listen before submitting, so no frame of ours is missed.
        state.open_socket()
        # 2. Queue it (once, whatever happens to the answer), unless the server has it.
        known = state.known_entry() if reuse else None
        if known is not None and known.failure_line() is None:
            return RunResult(Submitted(prompt_id, known.number), known, 0, 0, 0.0, reused=True)
        if reuse and known is None and state.in_queue():
            submitted = Submitted(prompt_id, None)
        else:
            submitted = state.submit()
        # A server older than client-chosen ids (before 0.3.4x) names the prompt itself.
        state.prompt_id = submitted.prompt_id
        # 3. Follow it to the end: frames, or /history polls when no WebSocket gets through.
        if state.ws is not None:
            state.follow(deadline, on_progress)
        else:
            state.poll(deadline)
    finally:
        state.close()
    # 4. Read how it ended.
    entry = state.final_entry()
    failure = entry.failure_line()
    if failure is not None:
        raise ComfyError([failure])
    return RunResult(
        submitted=submitted,
        entry=entry,
        reconnects=state.reconnects,
        resubmits=state.resubmits,
        wall_s=time.monotonic() - started,
    )


class _Follow:
    """The recovery state of one run (kept out of ``run_prompt`` so each step reads alone)."""

    def __init__(
        self,
        http: httpx.Client,
        graph: Mapping[str, Any],
        client_id: str,
        prompt_id: str,
        extra_pnginfo: Mapping[str, Any] | None,
        policy: RetryPolicy,
        sleep: Callable[[float], None],
    ) -> None:
        self.http, self.graph, self.client_id, self.prompt_id = http, graph, client_id, prompt_id
        self.extra_pnginfo, self.policy, self.sleep = extra_pnginfo, policy, sleep
        self.reconnects = 0
        self.resubmits = 0
        self.finished = False
        self.ws: Any = None

    def open_socket(self) -> None:
        """Open the WebSocket; without one (a proxy that drops upgrades) fall back to polling,
        as long as the server answers HTTP."""
        try:
            self.ws = self.reconnect(first=True)
        except ComfyError as unreachable:
            try:
                client.queue(self.http)
            except (httpx.TransportError, ComfyError):
                raise unreachable from None
            self.ws = None

    def close(self) -> None:
        if self.ws is not None:
            self.ws.close()
            self.ws = None

    def follow(self, deadline: float, on_progress: ProgressFn | None) -> None:
        """Read frames until our end marker, reopening the socket when it drops."""
        while True:
            if time.monotonic() > deadline:
                raise ComfyError(
                    [f"prompt {self.prompt_id} did not finish within {self.policy.timeout:.0f} s"]
                )
            try:
                raw = self.ws.recv(timeout=self.policy.idle_poll)
            except TimeoutError:
                with contextlib.suppress(httpx.TransportError):
                    if client.history(self.http, self.prompt_id) is not None:
                        return
                continue
            except _ws_errors():
                self.recover()
                if self.finished:
                    return
                continue
            frame = parse_frame(raw)
            if frame is None or frame.prompt_id != self.prompt_id:
                continue
            if frame.type == "progress" and on_progress is not None:
                data = frame.data
                on_progress(
                    NodeProgress(self.prompt_id, str(data.get("node")),
                                 int(data.get("value", 0)), int(data.get("max", 0)))
                )  # fmt: skip
            elif frame.type == "executing":
                node = frame.data.get("node")
                if node is None:
                    return
                if on_progress is not None:
                    on_progress(NodeProgress(self.prompt_id, str(node), 0, 0))

    def poll(self, deadline: float) -> None:
        """No WebSocket: ask where the prompt is every ``poll_interval`` seconds."""
        while time.monotonic() <= deadline:
            where = self._state_with_retries()
            if where == "history":
                return
            if where is None:
                self._lost()
            self.sleep(self.policy.poll_interval)
        raise ComfyError(
            [f"prompt {self.prompt_id} did not finish within {self.policy.timeout:.0f} s"]
        )

    def submit(self) -> Submitted:
        return client.submit(
            self.http,
            self.graph,
            client_id=self.client_id,
            prompt_id=self.prompt_id,
            extra_pnginfo=self.extra_pnginfo,
            attempts=self.policy.reconnect_attempts,
            backoff=self.policy.backoff,
            max_backoff=self.policy.max_backoff,
            timeout=self.policy.submit_timeout,
            sleep=self.sleep,
        )

    def known_entry(self) -> HistoryEntry | None:
        """The server's history entry for our prompt id (None when it has none)."""
        delay = self.policy.backoff
        for _ in range(self.policy.reconnect_attempts):
            try:
                return client.history(self.http, self.prompt_id)
            except httpx.TransportError:
                self.sleep(delay)
                delay = min(delay * 2, self.policy.max_backoff)
        raise ComfyError([f"ComfyUI at {self.http.base_url} does not answer HTTP"])

    def in_queue(self) -> bool:
        return self._state_with_retries() == "queue"

    def reconnect(self, *, first: bool = False) -> Any:
        url = client.ws_url(self.http, self.client_id)
        delay = self.policy.backoff
        last: BaseException | None = None
        tries = 0
        from websockets.exceptions import InvalidHandshake

        while tries < self.policy.reconnect_attempts:
            tries += 1
            try:
                return _ws_connect(url, timeout=10.0, headers=self.auth_headers())
            except _ws_errors() as exc:
                last = exc
                if first and isinstance(exc, InvalidHandshake):
                    break  # the server (or a proxy) answered but refused the upgrade
                self.sleep(delay)
                delay = min(delay * 2, self.policy.max_backoff)
        where = str(self.http.base_url)
        what = "reach" if first else "reconnect to"
        raise ComfyError(
            [f"could not {what} ComfyUI at {where} after {tries} "
             f"tries ({type(last).__name__}: {last}); is the server running?"]
        )  # fmt: skip

    def auth_headers(self) -> dict[str, str]:
        """The credentials the HTTP client sends (a token for a proxy in front of ComfyUI)."""
        return {
            k: v for k, v in self.http.headers.items() if k.lower() in ("authorization", "cookie")
        }

    def recover(self) -> None:
        """The socket dropped: reopen it, then find out what became of the prompt."""
        self.close()
        self.reconnects += 1
        self.ws = self.reconnect()
        where = self._state_with_retries()
        if where == "history":
            self.finished = True
        elif where is None:
            self._lost()

    def _lost(self) -> None:
        """The server forgot the prompt (it restarted): submit it again, once."""
        if self.resubmits >= self.policy.resubmits:
            raise ComfyError(
                [f"prompt {self.prompt_id} vanished from the server (restarted?) again "
                 f"after {self.resubmits} resubmission(s); giving up"]
            )  # fmt: skip
        self.resubmits += 1
        self.submit()

    def _state_with_retries(self) -> str | None:
        delay = self.policy.backoff
        for _ in range(self.policy.reconnect_attempts):
            try:
                return client.prompt_state(self.http, self.prompt_id)
            except httpx.TransportError:
                self.sleep(delay)
                delay = min(delay * 2, self.policy.max_backoff)
        raise ComfyError([f"ComfyUI at {self.http.base_url} stopped answering HTTP"])

    def final_entry(self) -> HistoryEntry:
        delay = min(self.policy.backoff, 0.2)
        for _ in range(self.policy.reconnect_attempts):
            try:
                entry = client.history(self.http, self.prompt_id)
            except httpx.TransportError:
                entry = None
            if entry is not None:
                return entry
            self.sleep(delay)
            delay = min(delay * 2, self.policy.max_backoff)
        raise ComfyError([f"prompt {self.prompt_id} ended but the server has no history of it"])
