"""Registers the ``aim`` backend with Tracelet (entry point ``tracelet``: ``aim``)."""

from __future__ import annotations

from tracelet.plugins import BackendRegistration, Option, hookimpl
from tracelet_aim import __version__

OPTIONS = (
    Option(
        "repo_path",
        str,
        doc="Folder of the local Aim repository (default: the nearest .aim above the "
        "working directory, else the working directory); created when missing.",
    ),
    Option(
        "remote_uri",
        str,
        doc="A remote Aim server, aim://host:53800 (http:// accepted); replaces repo_path.",
    ),
    Option("experiment_name", str, doc="Aim experiment (default: the Tracelet project)."),
    Option("run_name", str, doc="Aim run name (default: the Tracelet run name)."),
    Option(
        "tags",
        (dict, list, tuple, str),
        doc="Tags set when the run starts: a dict (key:value tags) or names.",
    ),
    Option(
        "artifacts_uri",
        str,
        doc="Where artifact files are copied: file://, s3:// or a folder (default: "
        "artifacts/ in the repository's .aim folder; with remote_uri, ./aim-artifacts).",
    ),
    Option(
        "system_tracking_interval",
        float,
        doc="Seconds between Aim's own CPU/GPU samples (default: off; Tracelet's "
        "collectors already sample them).",
        minimum=0.1,
    ),
    Option("log_system_params", bool, False, doc="Let Aim record packages, git and env."),
    Option("capture_terminal_logs", bool, False, doc="Let Aim capture the terminal output."),
)
"""The options the backend accepts, nested, prefixed (``aim_repo_path``) or plain."""


@hookimpl
def tracelet_register_backends() -> list[BackendRegistration]:
    """Register the ``aim`` backend (Aim itself is imported only when a run starts)."""
    from tracelet_aim.backend import AimBackend

    return [BackendRegistration("aim", AimBackend, OPTIONS, "Aim", __version__)]
