"""Drive a ComfyUI server: graph builder, HTTP + WebSocket client, and the engine.

``ComfyUIEngine(url)`` runs recipes; :func:`build_graph` turns a recipe into the API-format
graph; :mod:`~likeness.engines.comfyui.client` holds one typed function per HTTP call
(``system_info``, ``free``, ``upload_image``, ``submit``, ``history``, ``view``...);
:func:`run_prompt` follows a prompt to the end through dropped connections and restarts.
"""

from __future__ import annotations

from likeness.engines.comfyui.checks import check_graph
from likeness.engines.comfyui.client import connect, free, system_info
from likeness.engines.comfyui.engine import CheckReport, ComfyUIEngine, ServerLacks
from likeness.engines.comfyui.errors import ComfyError
from likeness.engines.comfyui.graph import Graph, GraphOptions, build_graph
from likeness.engines.comfyui.run import NodeProgress, RetryPolicy, RunResult, run_prompt

__all__ = [
    "CheckReport",
    "ComfyError",
    "ComfyUIEngine",
    "Graph",
    "GraphOptions",
    "NodeProgress",
    "RetryPolicy",
    "RunResult",
    "ServerLacks",
    "build_graph",
    "check_graph",
    "connect",
    "free",
    "run_prompt",
    "system_info",
]
