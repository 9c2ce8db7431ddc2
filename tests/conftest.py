"""Shared fixtures: every test runs in its own directory with a clean Tracelet environment."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import tracelet
from tracelet.storage import LocalStore

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
"""No test sends MLflow telemetry (nothing here reaches the internet anyway). Its thread also
starts inside ``import mlflow`` and imports modules while the importing thread does: once in
four processes importing MLflow at the same time on 2 cores, that raced into ``cannot import
name 'unknown_fields' from 'google.protobuf'``, and a failed import cannot be retried."""

QUIET = {
    "TRACELET_TRACK_SYSTEM": "0",
    "TRACELET_TRACK_ENV": "0",
    "TRACELET_TRACK_GIT": "0",
    "TRACELET_TRACK_STDOUT": "0",
}
"""Collectors (and output capture) add samples, parameters and texts to every run; tests
that want them say so."""


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


@pytest.fixture
def wandb_offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """W&B in offline mode, quiet, with every folder it writes under ``tmp_path``."""
    root = tmp_path / "wandb-root"
    root.mkdir()
    for name in list(os.environ):
        if name.startswith("WANDB_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_ERROR_REPORTING", "false")
    for variable, folder in (
        ("WANDB_DIR", "dir"),
        ("WANDB_CACHE_DIR", "cache"),
        ("WANDB_DATA_DIR", "data"),
        ("WANDB_CONFIG_DIR", "config"),
        ("WANDB_ARTIFACT_DIR", "artifacts"),
    ):
        (root / folder).mkdir()
        monkeypatch.setenv(variable, str(root / folder))
    return root / "dir"


@pytest.fixture
def clearml_offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """ClearML in offline mode, its cache (and so its offline sessions) under ``tmp_path``;
    returns the folder of the offline sessions."""
    for name in list(os.environ):
        if name.startswith(("CLEARML_", "TRAINS_")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("CLEARML_OFFLINE_MODE", "1")
    monkeypatch.setenv("CLEARML_CACHE_DIR", str(tmp_path / "clearml-cache"))
    return tmp_path / "clearml-cache" / "offline"


@pytest.fixture
def every_backend(tmp_path, store_path, mlflow_server, wandb_offline, clearml_offline):
    """Every backend at once: ``(backend_options, readers)``, the readers being each tool's
    read-back adapter (local store, MLflow server, W&B and ClearML offline, an Aim repo)."""
    from tracelet.testing.local import LocalReadBack
    from tracelet_aim.testing import AimReadBack
    from tracelet_clearml.testing import ClearmlReadBack
    from tracelet_mlflow.testing import MlflowReadBack
    from tracelet_wandb.testing import WandbReadBack

    aim_repo = tmp_path / "aim-repo"
    options = {
        "mlflow": {"tracking_uri": mlflow_server.url},
        "wandb": {"dir": str(wandb_offline)},
        "clearml": {"offline": True},
        "aim": {"repo_path": str(aim_repo)},
    }
    readers = {
        "local": LocalReadBack(store_path),
        "mlflow": MlflowReadBack(mlflow_server.url),
        "wandb": WandbReadBack(wandb_offline / "wandb"),
        "clearml": ClearmlReadBack(clearml_offline),
        "aim": AimReadBack(aim_repo),
    }
    return options, readers
