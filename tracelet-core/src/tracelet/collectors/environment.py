"""The environment collector: Python, platform, command line and key package versions."""

from __future__ import annotations

import os
import platform
import socket
import sys
from importlib import metadata

from tracelet import __version__
from tracelet.plugins import CollectorPlugin
from tracelet.redaction import redact_argv

PACKAGES = (
    "torch",
    "numpy",
    "lightning",
    "pytorch-lightning",
    "transformers",
    "jax",
    "tensorflow",
    "scikit-learn",
    "mlflow",
    "wandb",
    "clearml",
    "aim",
)


class EnvironmentCollector(CollectorPlugin):
    """Records the environment once, at start, as ``env/...`` parameters."""

    interval = None

    def collect(self) -> dict[str, str | int]:
        """Python, platform, host, command line (secrets redacted) and package versions."""
        found: dict[str, str | int] = {
            "python": platform.python_version(),
            "implementation": platform.python_implementation(),
            "platform": platform.platform(),
            "hostname": socket.gethostname(),
            "cpu_count": os.cpu_count() or 0,
            "executable": sys.executable,
            "tracelet": __version__,
        }
        if self.config.get("track_args", True):
            found["argv"] = " ".join(redact_argv(sys.argv))
        for package in PACKAGES:
            try:
                found[f"packages/{package}"] = metadata.version(package)
            except metadata.PackageNotFoundError:
                continue
        return found
