"""Typed shapes of ComfyUI's answers (as observed on 0.3.64), parsed from its JSON.

Parsing is strict where the client relies on a field and lenient elsewhere, so a newer server
that adds fields still works; a missing field the client needs raises ``ComfyError`` naming it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from likeness.engines.comfyui.errors import ComfyError, execution_error_line, interrupted_line


def _need(data: Any, key: str, where: str) -> Any:
    if not isinstance(data, Mapping) or key not in data:
        raise ComfyError([f"unexpected answer from ComfyUI: {where} has no '{key}'"])
    return data[key]


@dataclass(frozen=True)
class Device:
    name: str
    type: str
    index: int | None
    vram_total: int
    vram_free: int
    torch_vram_total: int
    torch_vram_free: int


@dataclass(frozen=True)
class SystemInfo:
    """``GET /system_stats``: versions, RAM and devices."""

    comfyui_version: str
    python_version: str
    pytorch_version: str
    os: str
    ram_total: int
    ram_free: int
    devices: tuple[Device, ...]
    argv: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "comfyui_version": self.comfyui_version,
            "python_version": self.python_version,
            "pytorch_version": self.pytorch_version,
            "os": self.os,
            "ram_total": self.ram_total,
            "ram_free": self.ram_free,
            "devices": [d.__dict__.copy() for d in self.devices],
        }


def parse_system_stats(body: Any) -> SystemInfo:
    system = _need(body, "system", "/system_stats")
    devices = tuple(
        Device(
            name=str(d.get("name", "")),
            type=str(d.get("type", "")),
            index=d.get("index"),
            vram_total=int(d.get("vram_total") or 0),
            vram_free=int(d.get("vram_free") or 0),
            torch_vram_total=int(d.get("torch_vram_total") or 0),
            torch_vram_free=int(d.get("torch_vram_free") or 0),
        )
        for d in _need(body, "devices", "/system_stats")
    )
    return SystemInfo(
        comfyui_version=str(system.get("comfyui_version", "unknown")),
        python_version=str(system.get("python_version", "")),
        pytorch_version=str(system.get("pytorch_version", "")),
        os=str(system.get("os", "")),
        ram_total=int(system.get("ram_total") or 0),
        ram_free=int(system.get("ram_free") or 0),
        devices=devices,
        argv=tuple(system.get("argv") or ()),
    )


@dataclass(frozen=True)
class Submitted:
    """``POST /prompt`` accepted: the id, the queue number (None when recovered after a lost
    answer) and the node errors of outputs that were dropped (usually empty)."""

    prompt_id: str
    number: int | None
    node_errors: Mapping[str, Any] = field(default_factory=dict)


def parse_submitted(body: Any) -> Submitted:
    return Submitted(
        prompt_id=str(_need(body, "prompt_id", "POST /prompt")),
        number=body.get("number"),
        node_errors=body.get("node_errors") or {},
    )


@dataclass(frozen=True)
class ImageRef:
    """A file on the server, as ``/view`` wants it."""

    filename: str
    subfolder: str
    type: str

    def params(self) -> dict[str, str]:
        return {"filename": self.filename, "subfolder": self.subfolder, "type": self.type}


@dataclass(frozen=True)
class HistoryEntry:
    """One prompt of ``GET /history/{id}``: its outputs per node and how it ended."""

    prompt_id: str
    number: int
    graph: Mapping[str, Any]
    outputs: Mapping[str, tuple[ImageRef, ...]]
    status: str  # "success" | "error" (| "" for an entry without status)
    completed: bool
    messages: tuple[tuple[str, Mapping[str, Any]], ...]

    def message(self, kind: str) -> Mapping[str, Any] | None:
        for name, data in self.messages:
            if name == kind:
                return data
        return None

    def timestamp(self, kind: str) -> float | None:
        """Server time (seconds) of a status message such as ``execution_start``."""
        data = self.message(kind)
        if data is None or "timestamp" not in data:
            return None
        return float(data["timestamp"]) / 1000.0

    def failure_line(self) -> str | None:
        """The readable failure of an entry that did not succeed, else None."""
        error = self.message("execution_error")
        if error is not None:
            return execution_error_line(error)
        interrupted = self.message("execution_interrupted")
        if interrupted is not None:
            return interrupted_line(interrupted)
        if self.status == "error":
            return f"prompt {self.prompt_id} ended with an error on the server"
        return None


def parse_history(body: Any, prompt_id: str) -> HistoryEntry | None:
    """The entry for ``prompt_id`` in a ``/history`` answer, or None when the server has none."""
    if not isinstance(body, Mapping) or prompt_id not in body:
        return None
    entry = body[prompt_id]
    prompt = _need(entry, "prompt", f"/history/{prompt_id}")
    outputs = {
        str(node): tuple(
            ImageRef(str(i["filename"]), str(i.get("subfolder", "")), str(i.get("type", "output")))
            for i in (out.get("images") or [])
        )
        for node, out in (entry.get("outputs") or {}).items()
    }
    status = entry.get("status") or {}
    return HistoryEntry(
        prompt_id=prompt_id,
        number=int(prompt[0]),
        graph=prompt[2],
        outputs=outputs,
        status=str(status.get("status_str") or ""),
        completed=bool(status.get("completed")),
        messages=tuple((str(m[0]), m[1]) for m in status.get("messages") or []),
    )


@dataclass(frozen=True)
class QueueState:
    """``GET /queue``: prompt ids running and waiting."""

    running: tuple[str, ...]
    pending: tuple[str, ...]

    def __contains__(self, prompt_id: object) -> bool:
        return prompt_id in self.running or prompt_id in self.pending


def parse_queue(body: Any) -> QueueState:
    return QueueState(
        running=_queue_ids(_need(body, "queue_running", "/queue"), "queue_running"),
        pending=_queue_ids(_need(body, "queue_pending", "/queue"), "queue_pending"),
    )


def _queue_ids(items: Any, key: str) -> tuple[str, ...]:
    """The prompt ids of a queue list; each entry is [number, prompt_id, graph, extra, outputs]."""
    if not isinstance(items, list) or not all(
        isinstance(item, list) and len(item) > 1 for item in items
    ):
        raise ComfyError([f"unexpected answer from ComfyUI: /queue '{key}' is not a list of runs"])
    return tuple(str(item[1]) for item in items)


@dataclass(frozen=True)
class UploadedImage:
    """``POST /upload/image``: the name the server stored (renamed on a clash)."""

    name: str
    subfolder: str
    type: str

    @property
    def load_name(self) -> str:
        """What LoadImage's ``image`` input expects."""
        return f"{self.subfolder}/{self.name}" if self.subfolder else self.name


def parse_uploaded(body: Any) -> UploadedImage:
    return UploadedImage(
        name=str(_need(body, "name", "/upload/image")),
        subfolder=str(body.get("subfolder", "")),
        type=str(body.get("type", "input")),
    )


# ---- WebSocket frames ------------------------------------------------------------------------


@dataclass(frozen=True)
class Frame:
    """One JSON WebSocket frame: ``type`` and ``data``; binary preview frames are not parsed."""

    type: str
    data: Mapping[str, Any]

    @property
    def prompt_id(self) -> str | None:
        value = self.data.get("prompt_id")
        return None if value is None else str(value)


def parse_frame(text: str | bytes) -> Frame | None:
    """A text frame as a :class:`Frame`; binary frames (previews) and junk give None."""
    if isinstance(text, bytes):
        return None
    try:
        msg = json.loads(text)
    except ValueError:
        return None
    if not isinstance(msg, Mapping) or not isinstance(msg.get("type"), str):
        return None
    data = msg.get("data")
    return Frame(msg["type"], data if isinstance(data, Mapping) else {})
