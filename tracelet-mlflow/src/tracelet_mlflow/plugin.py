"""Registers the ``mlflow`` backend with Tracelet (entry point ``tracelet``: ``mlflow``)."""

from __future__ import annotations

from collections.abc import Mapping

from tracelet.plugins import BackendRegistration, Option, hookimpl
from tracelet_mlflow import __version__

OPTIONS = (
    Option(
        "tracking_uri",
        str,
        doc="Tracking server or database URI (credentials belong in the environment).",
        env="MLFLOW_TRACKING_URI",
    ),
    Option("experiment_name", str, doc="MLflow experiment (default: the Tracelet project)."),
    Option("run_name", str, doc="MLflow run name (default: the Tracelet run name)."),
    Option(
        "tags", (Mapping, list, tuple, str), doc="Extra tags on the MLflow run (dict or names)."
    ),
    Option("artifact_location", str, doc="Artifact root of an experiment Tracelet creates."),
    Option(
        "request_timeout",
        float,
        10.0,
        doc="Seconds one HTTP request may take; Tracelet retries, MLflow does not.",
        minimum=0.1,
    ),
    Option(
        "requests_in_flight",
        int,
        4,
        doc="log_batch requests sent at once within a batch (1: one after another).",
        minimum=1,
    ),
)
"""The options the backend accepts, nested, prefixed (``mlflow_tracking_uri``) or plain."""


@hookimpl
def tracelet_register_backends() -> list[BackendRegistration]:
    """Register the ``mlflow`` backend (MLflow itself is imported only when a run starts)."""
    from tracelet_mlflow.backend import MlflowBackend

    return [BackendRegistration("mlflow", MlflowBackend, OPTIONS, "MLflow tracking", __version__)]
