"""Debian packages a test needs (a database server, a browser), installed by the tests
themselves on a fresh machine: CI starts as root on a new Debian machine, where nothing
installed by hand is there."""

from __future__ import annotations

import os
import shutil
import subprocess

INSTALL_TIMEOUT = 900.0
"""Seconds ``apt-get`` may take to install a package on a fresh machine."""


def can_install() -> bool:
    """Whether this process can install packages (root, with ``apt-get``)."""
    return os.geteuid() == 0 and shutil.which("apt-get") is not None


def apt_install(package: str) -> None:
    """``apt-get install --no-install-recommends package``, fetching the package lists first
    when the machine has none yet; RuntimeError with apt's output when it fails."""
    install = ("install", "-y", "--no-install-recommends", package)
    result = _apt_get(*install)
    if result.returncode != 0:  # a fresh machine may have no package lists yet
        update = _apt_get("update")
        result = _apt_get(*install)
        if result.returncode != 0:
            output = update.stdout + update.stderr + result.stdout + result.stderr
            raise RuntimeError(f"apt-get install {package} failed:\n{output[-3000:]}")


def _apt_get(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    return subprocess.run(
        ["apt-get", "-qq", "-o", "DPkg::Lock::Timeout=300", *args],
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=INSTALL_TIMEOUT,
    )
