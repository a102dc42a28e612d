"""Human review: a local web app (queue, focus view, keyboard decisions) whose accepted images
become the next dataset version. `decisions` holds the data access, `app` the web edge.

`create_app` is imported on first use, so the CLI can use `decisions` and `export` without
loading FastAPI.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from likeness.review.app import create_app

__all__ = ["create_app"]


def __getattr__(name: str) -> object:
    if name == "create_app":
        from likeness.review.app import create_app

        return create_app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
