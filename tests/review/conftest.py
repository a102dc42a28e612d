"""Fixtures: a fresh review workspace per test, and a client for its app."""

from __future__ import annotations

import dataclasses
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from likeness.review import create_app

from .builder import LOCAL, ReviewWorkspace, build_review_workspace


@pytest.fixture(scope="session")
def review_template(tmp_path_factory: pytest.TempPathFactory) -> ReviewWorkspace:
    """Built once; each test gets its own copy."""
    return build_review_workspace(tmp_path_factory.mktemp("review") / "ws")


@pytest.fixture
def review_ws(review_template: ReviewWorkspace, tmp_path: Path) -> ReviewWorkspace:
    root = tmp_path / "ws"
    shutil.copytree(review_template.root, root)
    return dataclasses.replace(review_template, root=root.resolve())


@pytest.fixture
def client(review_ws: ReviewWorkspace) -> Iterator[TestClient]:
    app = create_app(review_ws.root, reviewer="tester")
    with TestClient(app, base_url=LOCAL) as c:
        yield c
