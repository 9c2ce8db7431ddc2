"""Registers the ``mlflow`` backend with Tracelet (entry point ``tracelet``: ``mlflow``)."""

from __future__ import annotations

from tracelet import hookimpl
from tracelet.core.plugins import BackendRegistration

OPTIONS = frozenset({"tracking_uri", "experiment_name", "run_name", "tags", "artifact_location"})
"""The options the backend accepts, nested, prefixed (``mlflow_tracking_uri``) or plain."""


@hookimpl
def tracelet_register_backends() -> list[BackendRegistration]:
    """Register the ``mlflow`` backend (MLflow itself is imported only when a run starts)."""
    from tracelet_mlflow.backend import MlflowBackend

    return [BackendRegistration("mlflow", MlflowBackend, OPTIONS, "MLflow tracking")]
