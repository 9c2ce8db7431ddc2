"""The forms a backend's options take, for the option tests of every backend."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml


def options_in_form(form: str, backend: str, options: dict[str, Any]) -> dict[str, Any]:
    """``options`` of ``backend`` as ``config=`` holds them in ``form``: ``nested``
    (``{"wandb": {...}}``), ``prefixed`` (``wandb_project``) or ``plain``; for ``yaml`` they
    are written to ``tracelet.yaml`` in the working directory and ``config=`` gets none."""
    if form == "nested":
        return {backend: options}
    if form == "prefixed":
        return {f"{backend}_{key}": value for key, value in options.items()}
    if form == "plain":
        return dict(options)
    if form == "yaml":
        Path("tracelet.yaml").write_text(yaml.safe_dump({backend: options}))
        return {}
    raise ValueError(f"unknown form {form!r}")
