"""Registers the ``clearml`` backend with Tracelet (entry point ``tracelet``: ``clearml``)."""

from __future__ import annotations

from tracelet.plugins import BackendRegistration, Option, hookimpl
from tracelet_clearml import __version__

OPTIONS = (
    Option("project_name", str, doc="ClearML project (default: the Tracelet project)."),
    Option("task_name", str, doc="ClearML task name (default: the Tracelet run name)."),
    Option("tags", (list, tuple, str), doc="Extra tags on the task."),
    Option("output_uri", str, doc="Where artifacts and models are stored (s3://, gs://, a path)."),
    Option("task_type", str, "training", doc="ClearML task type (training, testing, ...)."),
    Option(
        "offline",
        bool,
        doc="Offline session instead of a server (default: CLEARML_OFFLINE_MODE).",
    ),
    Option(
        "request_timeout",
        float,
        30.0,
        doc="Seconds a request to the ClearML server may wait for an answer.",
        minimum=1.0,
    ),
    Option(
        "auto_connect",
        bool,
        False,
        doc="Let ClearML hook frameworks, argparse, stdout and resource monitoring itself.",
    ),
)
"""The options the backend accepts, nested, prefixed (``clearml_project_name``) or plain.
Server address and credentials stay in ClearML's own ``CLEARML_*`` variables."""


@hookimpl
def tracelet_register_backends() -> list[BackendRegistration]:
    """Register the ``clearml`` backend (ClearML itself is imported only when a run starts)."""
    from tracelet_clearml.backend import ClearmlBackend

    return [BackendRegistration("clearml", ClearmlBackend, OPTIONS, "ClearML", __version__)]
