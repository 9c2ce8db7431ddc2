"""The environment collector: Python, platform, host, command line, installed packages and
environment variables, with secrets redacted."""

from __future__ import annotations

import os
import platform
import socket
import sys
from importlib import metadata

from tracelet import __version__
from tracelet.plugins import CollectorPlugin
from tracelet.redaction import REDACTED, is_secret_key, redact_argv, redact_uri

SECRET_NAMES = ("KEY", "TOKEN", "SECRET", "PASSWORD", "CREDENTIAL")
"""An environment variable whose name contains one of these is recorded as ``***``."""

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
        """Python, platform, host, command line, key package versions (parameters), every
        installed package and the environment variables (texts when long), secrets
        redacted."""
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
        found["installed"] = installed_packages()
        found["variables"] = environment_variables()
        return found


def installed_packages() -> str:
    """Every installed distribution, one ``name==version`` a line, sorted."""
    names = {_name_and_version(d) for d in metadata.distributions()}
    return "\n".join(f"{name}=={version}" for name, version in sorted(names, key=_folded))


def _name_and_version(distribution: metadata.Distribution) -> tuple[str, str]:
    """The ``Name`` and ``Version`` fields of ``distribution``'s metadata, read from its
    first lines: ``Distribution.metadata`` parses the whole file (the long description
    too) as an e-mail message, once for the name and again for the version, which made
    listing a few hundred packages cost the training loop's thread 0.1 s at start."""
    read = distribution.read_text
    text = read("METADATA") or read("PKG-INFO") or read("") or ""  # "": an egg-info file
    fields: dict[str, str] = {}
    for line in text.splitlines():
        if not line:  # the headers end at the first empty line
            break
        field, _, value = line.partition(":")
        field = field.lower()
        if field in ("name", "version") and field not in fields:
            fields[field] = value.strip()
            if len(fields) == 2:
                break
    return fields.get("name") or "?", fields.get("version") or "?"


def _folded(pair: tuple[str, str]) -> str:
    return pair[0].lower()


def environment_variables() -> str:
    """The environment, ``NAME=value`` a line, sorted. A variable named like a secret
    (containing KEY, TOKEN, SECRET, PASSWORD, CREDENTIAL, or as Tracelet's parameter
    redaction reads names) shows ``***``; every value loses the credentials of its URIs."""
    lines = []
    for name, value in sorted(os.environ.items()):
        upper = name.upper()
        if is_secret_key(name) or any(word in upper for word in SECRET_NAMES):
            value = REDACTED
        lines.append(f"{name}={redact_uri(value)}")
    return "\n".join(lines)
