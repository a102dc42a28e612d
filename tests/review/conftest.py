"""Fixtures: a fresh review workspace per test, and a client for its app."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from likeness.review import create_app

from .builder import LOCAL, ReviewWorkspace, build_review_workspace


@pytest.fixture
def review_ws(tmp_path: Path) -> ReviewWorkspace:
    return build_review_workspace(tmp_path / "ws")


@pytest.fixture
def client(review_ws: ReviewWorkspace) -> Iterator[TestClient]:
    app = create_app(review_ws.root, reviewer="tester")
    with TestClient(app, base_url=LOCAL) as c:
        yield c
