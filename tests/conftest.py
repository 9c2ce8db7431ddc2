"""Shared fixtures: every test runs in its own directory with a clean Tracelet environment."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import tracelet
from tracelet.storage import LocalStore

QUIET = {"TRACELET_TRACK_SYSTEM": "0", "TRACELET_TRACK_ENV": "0", "TRACELET_TRACK_GIT": "0"}
"""Collectors add samples and parameters to every run; tests that want them say so."""


@pytest.fixture(autouse=True)
def isolated(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Run in ``tmp_path`` with no TRACELET_* variables but the collectors switched off
    (unless marked ``collectors``); stop any run left active."""
    for name in list(os.environ):
        if name.startswith("TRACELET_"):
            monkeypatch.delenv(name)
    if request.node.get_closest_marker("collectors") is None:
        for name, value in QUIET.items():
            monkeypatch.setenv(name, value)
    monkeypatch.chdir(tmp_path)
    yield tmp_path
    tracelet.stop_logging()


@pytest.fixture
def store_path(tmp_path: Path) -> Path:
    """Where the default local store of a test lives."""
    return tmp_path / ".tracelet"


@pytest.fixture
def read_store(store_path: Path):
    """Open the test's local store for reading back (closed after the test)."""
    opened: list[LocalStore] = []

    def open_store(path: Path | None = None) -> LocalStore:
        store = LocalStore(path or store_path)
        opened.append(store)
        return store

    yield open_store
    for store in opened:
        store.close()


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory):
    """A real MLflow tracking server for the whole session (started on first use)."""
    from tracelet_mlflow.testing import MlflowServer

    server = MlflowServer(tmp_path_factory.mktemp("mlflow-server"))
    server.start()
    yield server
    server.stop()
