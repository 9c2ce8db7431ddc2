"""``track_stdout``: what the program prints becomes the texts ``stdout`` and ``stderr``.

While a run is active, ``sys.stdout`` and ``sys.stderr`` are wrapped: every write goes to
the terminal first, unchanged (colours, progress bars, ``isatty`` and ``fileno`` are the
stream's own), and a copy is kept. When the run stops, each stream's copy is logged as
one text, cleaned as a terminal would show it: a line rewritten with carriage returns
(a tqdm bar) keeps its last state, and colour codes are removed. At most
:data:`MAX_CHARS` characters of each stream are kept (the last ones). Output written
below Python (by C code straight to the file descriptor) is not captured.
"""

from __future__ import annotations

import re
import sys
import threading
from collections import deque
from typing import Any

from tracelet import __version__
from tracelet.forks import fork_safe
from tracelet.hookspecs import hookimpl
from tracelet.plugins import FrameworkPlugin, FrameworkRegistration, report_once

MAX_CHARS = 8_000_000
"""Characters kept per stream (the most recent)."""
_ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]")


class TeeStream:
    """A text stream that writes through to ``stream`` and keeps a copy of the text."""

    def __init__(self, stream: Any) -> None:
        self.stream = stream
        self._kept: deque[str] = deque()
        self._size = 0
        self._lock = fork_safe(threading.Lock())  # a forked child prints too

    def write(self, text: str) -> int:
        """Write ``text`` to the stream, then keep it."""
        written = self.stream.write(text)
        try:
            self._keep(text)
        except Exception as error:  # never fail the user's print
            report_once("tracelet output capture", f"a write was not kept: {error!r}")
        return written

    def writelines(self, lines: Any) -> None:
        """Write each of ``lines``."""
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        """Flush the stream."""
        self.stream.flush()

    def __getattr__(self, name: str) -> Any:  # isatty, fileno, encoding, buffer ...
        return getattr(self.stream, name)

    def _keep(self, text: str) -> None:
        if not isinstance(text, str) or not text:
            return
        with self._lock:
            self._kept.append(text)
            self._size += len(text)
            while self._size > MAX_CHARS and len(self._kept) > 1:
                self._size -= len(self._kept.popleft())

    def captured(self) -> str:
        """Everything kept, as a terminal would show it."""
        with self._lock:
            text = "".join(self._kept)
        return as_shown(text[-MAX_CHARS:])


def as_shown(text: str) -> str:
    """``text`` without colour codes, each line as it ends up after carriage returns."""
    text = _ANSI.sub("", text)
    return "\n".join(line.rstrip("\r").rsplit("\r", 1)[-1] for line in text.split("\n"))


class OutputCapture(FrameworkPlugin):
    """Wraps ``sys.stdout`` and ``sys.stderr`` for the run's lifetime (``track_stdout``)."""

    def __init__(self) -> None:
        super().__init__()
        self.experiment: Any = None
        self._tees: dict[str, TeeStream] = {}

    def attach(self, experiment: Any) -> None:
        """Wrap the streams, if ``track_stdout`` is on."""
        if not self.config.get("track_stdout", True):
            return
        self.experiment = experiment
        for name in ("stdout", "stderr"):
            stream = getattr(sys, name)
            if stream is not None:
                self._tees[name] = tee = TeeStream(stream)
                setattr(sys, name, tee)

    def detach(self) -> None:
        """Unwrap the streams (where nobody replaced them since) and log what they kept."""
        for name, tee in self._tees.items():
            if getattr(sys, name) is tee:
                setattr(sys, name, tee.stream)
            text = tee.captured()
            if text.strip():
                try:
                    self.experiment.log_text(name, text)
                except Exception as error:
                    report_once("tracelet output capture", f"{name} not logged: {error!r}")
        self._tees.clear()


@hookimpl
def tracelet_register_frameworks() -> list[FrameworkRegistration]:
    """Register the output capture (it only acts when ``track_stdout`` is on)."""
    return [
        FrameworkRegistration(
            "output-capture",
            OutputCapture,
            "what the program prints, as the texts stdout and stderr",
            selectable=False,
            version=__version__,
        )
    ]
