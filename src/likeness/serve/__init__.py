"""Service mode: one server for many people, each with their own workspace, fully isolated.

`create_server_app` is imported on first use, so the CLI's account commands do not load
FastAPI. See DESIGN.md beside this file.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from likeness.serve.app import create_server_app

__all__ = ["create_server_app"]


def __getattr__(name: str) -> object:
    if name == "create_server_app":
        from likeness.serve.app import create_server_app

        return create_server_app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
