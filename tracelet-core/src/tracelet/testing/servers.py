"""A tool's server run for tests and benchmarks: one process group on 127.0.0.1.

Servers such as ``mlflow server`` and ``aim server`` spawn workers of their own (uvicorn),
so :class:`ServerProcess` starts the command in a new process group and stops the whole
group. ``stop()`` then ``start()`` brings a server back on the same port and data, which
fault-injection tests use to take a server away mid-run.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path


def free_port() -> int:
    """A TCP port on 127.0.0.1 nobody listens on now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class ServerProcess:
    """A server started from ``command()``, healthy once ``health_url`` answers 200.

    ``root`` holds its data and ``server.log``; ``port`` is chosen free at construction.
    """

    name = "server"
    """How errors name the server."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.port = free_port()
        self.process: subprocess.Popen | None = None
        self.start_seconds: float | None = None
        """How long the last :meth:`start` took, until the server answered."""

    def command(self) -> Sequence[str]:
        """The command line that starts the server on ``self.port``."""
        raise NotImplementedError

    @property
    def health_url(self) -> str:
        """A URL that answers 200 once the server serves."""
        raise NotImplementedError

    def start(self, timeout: float = 90.0) -> None:
        """Start the server and wait until it is healthy."""
        self.root.mkdir(parents=True, exist_ok=True)
        log = open(self.root / "server.log", "ab")  # noqa: SIM115 - kept open by the server
        self.process = subprocess.Popen(
            list(self.command()),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        began = time.monotonic()
        deadline = began + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited; see {self.root / 'server.log'}")
            if self.healthy():
                self.start_seconds = time.monotonic() - began
                return
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"{self.name} did not answer in {timeout}s")

    def healthy(self) -> bool:
        """Whether the health URL answers 200 now."""
        try:
            with urllib.request.urlopen(self.health_url, timeout=1) as answer:
                return answer.status == 200
        except OSError:
            return False

    def log_tail(self, lines: int = 20) -> str:
        """The last ``lines`` lines of the server's log (for error messages)."""
        path = self.root / "server.log"
        text = path.read_text(errors="replace") if path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self) -> None:
        """Stop the whole process group (SIGTERM, then SIGKILL after 10 s)."""
        if self.process is None or self.process.poll() is not None:
            return
        group = os.getpgid(self.process.pid)
        os.killpg(group, signal.SIGTERM)
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(group, signal.SIGKILL)
            self.process.wait()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(group, signal.SIGKILL)  # any child left behind
