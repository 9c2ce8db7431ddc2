"""Debian's Chromium for browser tests and benchmarks, driven headless (by Playwright)."""

from __future__ import annotations

from pathlib import Path

from tracelet.testing.debian import apt_install, can_install

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
"""Headless, as root, on a machine with no network: without the background-networking
flags Chromium's connections are refused many at a time."""


def chromium_path(install: bool = True) -> str:
    """Debian's ``chromium``, installed first (as root) when it is missing and ``install``;
    RuntimeError when it is missing and cannot be installed."""
    if not Path(CHROMIUM).exists() and install and can_install():
        apt_install("chromium")
    if not Path(CHROMIUM).exists():
        raise RuntimeError(f"no {CHROMIUM}: install Debian's chromium package")
    return CHROMIUM
