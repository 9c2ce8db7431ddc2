"""How the dispatcher reaches the run's :class:`~tracelet.core.journal_writer.JournalWriter`:
in a process of its own (:class:`ProcessLink`, the default) or in the training process
(:class:`ThreadLink`). Both take the same messages, in order, and hand the writer's replies
to the same callback.

A writer process costs the training process one encoding (:mod:`~tracelet.core.framing`)
and one pipe write per message (about 0.1 us a point, against 1 us to journal and watch a
point here), and the pipe's limited room passes back-pressure on: a writer that cannot
keep up (a full disk) fills the pipe, then the buffer, then the caller waits, exactly as
in the training process. If the process cannot be started, or dies, the run goes on with a
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
import weakref
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
    packs: bool
    """Whether chunks of points are sent :func:`~tracelet.core.points.packed` (encoded for
    the pipe), as the batch that sent them then holds them."""

    def send(self, message: tuple[Any, ...], give_up: Callable[[], bool]) -> None:
        """Send one message; raise :class:`LinkTimeout` once ``give_up()`` while waiting for
        room, :class:`LinkBroken` if the writer is gone."""

    def wait_ready(self, timeout: float) -> bool:
        """Wait (up to ``timeout`` seconds) until the writer can take messages; True if it can."""

    def close(self, deadline: float) -> bool:
        """Let the writer finish what it has (until ``deadline``, a ``time.monotonic()``
        value, then stop it); True if it finished."""

    def kill(self) -> None:
        """Stop the writer now."""


class ThreadLink:
    """The writer in the training process, called on the sender's thread."""

    pid = None
    packs = False

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

    def kill(self) -> None:
        """Nothing to stop."""


_LIVE: weakref.WeakSet[ProcessLink] = weakref.WeakSet()


def _forget_links_in_child() -> None:
    """In a forked child (a DataLoader worker): close the pipes to the parent's writers, so
    that they see their input end when the parent is done with it."""
    for link in list(_LIVE):
        link.forget()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_links_in_child)


class ProcessLink:
    """A writer process fed through a pipe; its replies are read on a daemon thread.

    ``on_end(link, expected)`` is called once the replies end: ``expected`` is False when
    the process did not end cleanly after :meth:`close` (it died, or was killed).
    """

    packs = True

    def __init__(
        self,
        store_path: str | os.PathLike[str],
        run: RunInfo,
        on_reply: Reply,
        on_end: Callable[[ProcessLink, bool], None],
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
        self._close_lock = threading.Lock()
        self._ready = threading.Event()
        self._on_reply = on_reply
        self._on_end = on_end
        self._replies = threading.Thread(
            target=self._read_replies, name="tracelet-journal-replies", daemon=True
        )
        _LIVE.add(self)
        try:
            self.send(("open", str(store_path), run, os.getpid()), lambda: False)
            self._replies.start()
        except BaseException:
            self.kill()
            raise

    def wait_ready(self, timeout: float) -> bool:
        """Wait until the writer has started (imported, opened the store); True if it has.
        Its start-up then costs the training loop nothing."""
        return self._ready.wait(timeout) and self._process.poll() is None

    def send(self, message: tuple[Any, ...], give_up: Callable[[], bool]) -> None:
        """Write ``message`` to the pipe, waiting (the GIL released) while it is full.

        A message is written whole or the link is over: a writer left with part of one
        would read the rest of the stream wrong, so it is killed (:class:`LinkBroken`),
        also when ``give_up()`` ends the wait half-way (:class:`LinkTimeout`)."""
        data = memoryview(encode(message))
        started = False
        poller = select.poll()
        try:
            poller.register(self._fd, select.POLLOUT)
            while data:
                try:
                    data = data[os.write(self._fd, data) :]
                    started = True
                except BlockingIOError:
                    if give_up():
                        raise LinkTimeout from None
                    poller.poll(50)
        except LinkTimeout:
            if started:
                self.kill()
            raise
        except Exception as error:  # a closed pipe, a dead writer, a bad descriptor
            self.kill()
            raise LinkBroken(repr(error)) from None

    def close(self, deadline: float) -> bool:
        """Send the deadline and the end, wait for the writer to finish; past the deadline,
        kill it (a transaction it had open is rolled back). Once only; True if it finished."""
        with self._close_lock:
            if self._closing:
                return not self._replies.is_alive() and self._process.returncode == 0
            self._closing = True
            with contextlib.suppress(LinkBroken, LinkTimeout):
                past = lambda: time.monotonic() > deadline  # noqa: E731
                self.send(("deadline", deadline), past)
                self.send(("end",), past)
            self._replies.join(max(0.0, deadline - time.monotonic()))
            finished = not self._replies.is_alive()
            if not finished:
                self.kill()
            return finished

    def kill(self) -> None:
        """Stop the writer now (what it was writing is rolled back) and close the pipe."""
        self._closing = True
        with contextlib.suppress(OSError):
            self._process.kill()
        self.forget()
        if self._replies.is_alive() and self._replies is not threading.current_thread():
            self._replies.join(1.0)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self._process.wait(1.0)

    def forget(self) -> None:
        """Close this side of the pipe to the writer (the file object owns the descriptor:
        it is never closed by number)."""
        _LIVE.discard(self)
        with contextlib.suppress(OSError):
            self._stdin.close()

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
            self._on_end(self, self._closing and code == 0)


def can_start_writer() -> bool:
    """Whether this interpreter can run a writer process (a real ``sys.executable``, not a
    frozen application; ``poll`` and non-blocking pipes, so not Windows)."""
    return bool(sys.executable) and not getattr(sys, "frozen", False) and hasattr(select, "poll")


def writer_command() -> list[str]:
    """The command that starts a writer process with this interpreter, importing this very
    ``tracelet`` whatever the child's ``sys.path`` would be."""
    root = str(Path(tracelet.__file__).resolve().parent.parent)
    code = (
        f"import sys; sys.path.append({root!r}); "  # last: never shadows the standard library
        "from tracelet.core.journal_writer import main; main()"
    )
    return [sys.executable, "-c", code]
