"""How the dispatcher reaches the run's :class:`~tracelet.core.journal_writer.JournalWriter`:
in a process of its own (:class:`ProcessLink`, the default) or in the training process
(:class:`ThreadLink`). Both take the same messages, in order, and hand the writer's replies
to the same callback.

A writer process costs the training process one ``pickle.dumps`` and one pipe write per
message (about 0.1 us a point, against 1.5 us to journal and watch a point here), and the
pipe's limited room passes back-pressure on: a writer that cannot keep up (a full disk)
fills the pipe, then the buffer, then the caller waits, exactly as in the training
process. If the process cannot be started, or dies, the run goes on with a
:class:`ThreadLink` (reported once) and loses nothing it had queued.
"""

from __future__ import annotations

import contextlib
import os
import select
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import tracelet
from tracelet.core.framing import encode, read_frame
from tracelet.core.journal_writer import JournalWriter, Reply
from tracelet.records import RunInfo
from tracelet.reporting import report_once

PIPE_BYTES = 1 << 20
"""Room asked for in the pipe to the writer (Linux grants up to ``pipe-max-size``)."""
_F_SETPIPE_SZ = 1031


class LinkBroken(Exception):
    """The writer process is gone; nothing more can be sent to it."""


class LinkTimeout(Exception):
    """A message could not be sent before the caller gave up (the writer stopped reading)."""


class JournalLink(Protocol):
    """Takes the dispatcher's messages to the writer."""

    pid: int | None
    """The writer process's id (None: the writer runs in the training process)."""

    def send(self, message: tuple[Any, ...], give_up: Callable[[], bool]) -> None:
        """Send one message; raise :class:`LinkTimeout` once ``give_up()`` while waiting for
        room, :class:`LinkBroken` if the writer is gone."""

    def wait_ready(self, timeout: float) -> bool:
        """Wait (up to ``timeout`` seconds) until the writer can take messages; True if it can."""

    def close(self, deadline: float) -> bool:
        """Let the writer finish what it has (until ``deadline``, a ``time.monotonic()``
        value, then stop it); True if it finished."""


class ThreadLink:
    """The writer in the training process, called on the sender's thread."""

    pid = None

    def __init__(self, writer: JournalWriter) -> None:
        self.writer = writer

    def wait_ready(self, timeout: float) -> bool:
        """Always ready."""
        return True

    def send(self, message: tuple[Any, ...], give_up: Callable[[], bool]) -> None:
        """Have the writer act on ``message`` now."""
        self.writer.handle(message)

    def close(self, deadline: float) -> bool:
        """Nothing to wait for: every message was acted on when it was sent."""
        return True


class ProcessLink:
    """A writer process fed through a pipe; its replies are read on a daemon thread.

    ``on_end(expected)`` is called once the replies end: ``expected`` is False when the
    process did not end cleanly after :meth:`close` (it died, or was killed at the deadline).
    """

    def __init__(
        self,
        store_path: str | os.PathLike[str],
        run: RunInfo,
        on_reply: Reply,
        on_end: Callable[[bool], None],
    ) -> None:
        self._process = subprocess.Popen(
            writer_command(),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            bufsize=0,  # written with os.write on its descriptor, never through a buffer
            start_new_session=True,  # a Ctrl-C in the terminal is the training process's
        )
        self.pid: int | None = self._process.pid
        assert self._process.stdin is not None
        self._stdin = self._process.stdin
        self._fd = self._stdin.fileno()
        with contextlib.suppress(OSError, ValueError):
            import fcntl

            fcntl.fcntl(self._fd, _F_SETPIPE_SZ, PIPE_BYTES)
        os.set_blocking(self._fd, False)
        self._closing = False
        self._ready = threading.Event()
        self._on_reply = on_reply
        self._on_end = on_end
        self.send(("open", str(store_path), run, os.getpid()), lambda: False)
        self._replies = threading.Thread(
            target=self._read_replies, name="tracelet-journal-replies", daemon=True
        )
        self._replies.start()

    def wait_ready(self, timeout: float) -> bool:
        """Wait until the writer has started (imported, opened the store); True if it has.
        Its start-up then costs the training loop nothing."""
        return self._ready.wait(timeout) and self._process.poll() is None

    def send(self, message: tuple[Any, ...], give_up: Callable[[], bool]) -> None:
        """Write ``message`` to the pipe, waiting (the GIL released) while it is full."""
        data = memoryview(encode(message))
        while data:
            try:
                data = data[os.write(self._fd, data) :]
            except BlockingIOError:
                if give_up():
                    raise LinkTimeout from None
                select.select([], [self._fd], [], 0.05)
            except (BrokenPipeError, ValueError, OSError) as error:
                raise LinkBroken(str(error)) from None

    def close(self, deadline: float) -> bool:
        """Send the deadline, close the pipe, wait for the writer to finish; past the
        deadline, kill it (a transaction it had open is rolled back)."""
        self._closing = True
        with contextlib.suppress(LinkBroken, LinkTimeout):
            self.send(("deadline", deadline), lambda: time.monotonic() > deadline)
        with contextlib.suppress(OSError):
            self._stdin.close()  # the file object owns the descriptor: never os.close it
        self._replies.join(max(0.0, deadline - time.monotonic()))
        finished = not self._replies.is_alive()
        if not finished:
            self._process.kill()
            self._replies.join(1.0)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self._process.wait(1.0)
        return finished

    def _read_replies(self) -> None:
        stream = self._process.stdout
        assert stream is not None
        try:
            while (message := read_frame(stream)) is not None:
                if message[0] == "ready":
                    self._ready.set()
                    continue
                try:
                    self._on_reply(message)
                except Exception as error:  # a bug in a handler must not end the replies
                    report_once("tracelet journal", f"a writer reply failed ({error!r})")
        except Exception as error:
            report_once("tracelet journal", f"the writer's replies broke off ({error!r})")
        finally:
            self._ready.set()  # nobody waits for a writer that is gone
            stream.close()
            code = None
            with contextlib.suppress(subprocess.TimeoutExpired):
                code = self._process.wait(5.0)
            self._on_end(self._closing and code == 0)


def writer_command() -> list[str]:
    """The command that starts a writer process with this interpreter, importing this very
    ``tracelet`` whatever the child's ``sys.path`` would be."""
    root = str(Path(tracelet.__file__).resolve().parent.parent)
    code = (
        f"import sys; sys.path.insert(0, {root!r}); "
        "from tracelet.core.journal_writer import main; main()"
    )
    return [sys.executable, "-c", code]
