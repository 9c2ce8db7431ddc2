"""Registers the ``wandb`` backend with Tracelet (entry point ``tracelet``: ``wandb``)."""

from __future__ import annotations

from tracelet.plugins import BackendRegistration, Option, hookimpl
from tracelet_wandb import __version__

OPTIONS = (
    Option(
        "project",
        str,
        doc="W&B project (default: WANDB_PROJECT, else the Tracelet project).",
        env="WANDB_PROJECT",
    ),
    Option(
        "entity",
        str,
        doc="W&B user or team (default: WANDB_ENTITY, else yours).",
        env="WANDB_ENTITY",
    ),
    Option(
        "name",
        str,
        doc="W&B run name (default: WANDB_NAME, else the Tracelet run name).",
        env="WANDB_NAME",
    ),
    Option(
        "tags",
        (list, tuple, str),
        doc="Extra W&B tags set when the run starts (default: WANDB_TAGS, comma-separated).",
        env="WANDB_TAGS",
    ),
    Option("notes", str, doc="Run description (default: WANDB_NOTES).", env="WANDB_NOTES"),
    Option("group", str, doc="Run group (default: WANDB_RUN_GROUP).", env="WANDB_RUN_GROUP"),
    Option("job_type", str, doc="Job type (default: WANDB_JOB_TYPE).", env="WANDB_JOB_TYPE"),
    Option(
        "mode",
        str,
        doc="online, offline or disabled (default: WANDB_MODE, else online).",
        env="WANDB_MODE",
    ),
    Option(
        "dir",
        str,
        doc="Folder holding W&B's wandb/ folder (default: WANDB_DIR, else the working directory).",
        env="WANDB_DIR",
    ),
    Option(
        "api_key",
        str,
        doc="W&B API key (better: WANDB_API_KEY or wandb login).",
        secret=True,
        env="WANDB_API_KEY",
    ),
    Option(
        "base_url",
        str,
        doc="W&B server URL (default: WANDB_BASE_URL, else W&B's cloud).",
        env="WANDB_BASE_URL",
    ),
    Option(
        "init_timeout",
        float,
        30.0,
        doc="Seconds wandb.init may take before Tracelet retries it.",
        minimum=1.0,
    ),
    Option(
        "finish_timeout",
        float,
        60.0,
        doc="Seconds run.finish may wait for uploads (online); the rest stays for wandb sync.",
        minimum=1.0,
    ),
    Option(
        "system_metrics",
        bool,
        False,
        doc="Also let W&B sample CPU/GPU use (Tracelet's collectors already do).",
    ),
)
"""The options the backend accepts, nested, prefixed (``wandb_project``) or plain. An option
not given is read from its ``env`` variable when the run starts (W&B itself would read it
once per process)."""


@hookimpl
def tracelet_register_backends() -> list[BackendRegistration]:
    """Register the ``wandb`` backend (W&B itself is imported only when a run starts)."""
    from tracelet_wandb.backend import WandbBackend

    return [BackendRegistration("wandb", WandbBackend, OPTIONS, "Weights & Biases", __version__)]
