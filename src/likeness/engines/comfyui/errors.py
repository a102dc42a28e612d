"""ComfyUI's error bodies and frames, turned into one readable line each.

ComfyUI answers a graph it refuses with ``{"error": {...}, "node_errors": {id: {"errors": [...],
"class_type": ...}}}`` and reports a failure while running with an ``execution_error`` frame (also
kept in ``/history``). People need the node, the input, the value and what to do, not the JSON.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from likeness.engines.base import EngineError


class ComfyError(EngineError):
    """A ComfyUI server refused or failed a job; ``lines`` holds one readable line per problem."""

    def __init__(self, lines: Sequence[str]) -> None:
        self.lines = list(lines) or ["ComfyUI reported an error without details"]
        super().__init__("\n".join(self.lines))


def _short(value: Any, limit: int = 80) -> str:
    text = repr(value) if not isinstance(value, str) else f"'{value}'"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _options(extra: Mapping[str, Any]) -> list[Any] | None:
    config = extra.get("input_config")
    if not isinstance(config, list) or not config:
        return None
    if isinstance(config[0], list):
        return config[0]
    if config[0] == "COMBO" and len(config) > 1 and isinstance(config[1], Mapping):
        return list(config[1].get("options", []))
    return None


def node_error_line(node_id: str, class_type: str, error: Mapping[str, Any]) -> str:
    """One line for one entry of ``node_errors[node_id]["errors"]``."""
    kind = str(error.get("type", ""))
    extra = error.get("extra_info") or {}
    name = extra.get("input_name") or error.get("details") or "?"
    where = f"node {node_id} ({class_type})"
    if kind == "value_not_in_list":
        options = _options(extra)
        have = f"; the server has: {', '.join(map(str, options))}" if options else ""
        if options == []:
            have = "; the server has none"
        return (
            f"{where}: {name} {_short(extra.get('received_value'))} is not available "
            f"on the server{have}"
        )
    if kind == "required_input_missing":
        return f"{where}: required input '{name}' is missing"
    if kind in ("value_smaller_than_min", "value_bigger_than_max"):
        return f"{where}: {name}: {error.get('message', kind)}"
    if kind == "invalid_input_type":
        return (
            f"{where}: {name} {_short(extra.get('received_value'))} has the wrong type "
            f"({error.get('message', kind)})"
        )
    if kind == "return_type_mismatch":
        return (
            f"{where}: input '{name}' is linked to a {extra.get('received_type')} output "
            f"but needs {error.get('details', '').rsplit('input_type(', 1)[-1].rstrip(')')}"
        )
    if kind == "bad_linked_input":
        return (
            f"{where}: input '{name}' must be a link [node_id, slot_index], "
            f"not {extra.get('received_value')!r}"
        )
    if kind == "exception_during_inner_validation":
        return (
            f"{where}: input '{name}' links to a node that cannot be validated "
            f"({extra.get('exception_type', 'error')}: {extra.get('exception_message', '')})"
        )
    details = f": {error['details']}" if error.get("details") else ""
    return f"{where}: {error.get('message', kind)}{details} ({kind})"


def node_errors_lines(node_errors: Mapping[str, Any]) -> list[str]:
    """Every error of a ``node_errors`` mapping, one line each, in node id order."""
    lines = []
    for node_id in sorted(node_errors, key=_node_order):
        entry = node_errors[node_id]
        for error in entry.get("errors", []):
            lines.append(node_error_line(str(node_id), str(entry.get("class_type", "?")), error))
    return lines


def prompt_error_lines(body: Mapping[str, Any]) -> list[str]:
    """Lines for a refused ``POST /prompt`` body (``error`` plus ``node_errors``)."""
    lines = node_errors_lines(body.get("node_errors") or {})
    if lines:
        return lines
    error = body.get("error")
    if isinstance(error, Mapping):
        details = f" ({error['details']})" if error.get("details") else ""
        return [f"ComfyUI refused the prompt: {error.get('message', error.get('type'))}{details}"]
    if isinstance(error, str):
        return [f"ComfyUI refused the prompt: {error}"]
    return ["ComfyUI refused the prompt without saying why"]


def execution_error_line(data: Mapping[str, Any]) -> str:
    """One line for an ``execution_error`` frame (or its copy in ``/history``)."""
    message = " ".join(str(data.get("exception_message", "")).split())
    return (
        f"node {data.get('node_id')} ({data.get('node_type')}) failed while running: "
        f"{data.get('exception_type', 'error')}: {message}"
    )


def interrupted_line(data: Mapping[str, Any]) -> str:
    return f"the job was interrupted on the server at node {data.get('node_id')} ({data.get('node_type')})"


def _node_order(node_id: str) -> tuple[int, str]:
    return (int(node_id), "") if str(node_id).isdigit() else (1 << 62, str(node_id))
