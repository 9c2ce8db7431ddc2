"""Run locks: how a store tells a live run from one whose process died.

The process writing a run holds an exclusive advisory lock on ``locks/<run id>.lock``.
The operating system drops the lock when the process ends, however it ends (SIGKILL
included), so a run marked "running" whose lock can be taken has crashed. Unlike a pid
check, this cannot be fooled by pid reuse.

Any process opening the store probes the locks of running runs (:func:`is_locked`). A probe
holds a shared lock for an instant, so probes never mistake one another for a holder, and a
process taking a lock waits out a probe (:data:`ACQUIRE_WAIT`) rather than fail.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]
    import msvcrt

ACQUIRE_WAIT = 0.5
"""Seconds :meth:`RunLock.acquire` keeps trying while the lock is held (a probe holds it
only for an instant; a live writer keeps it)."""


class RunLock:
    """An exclusive, non-blocking lock on one file, held until :meth:`release`.

    Only the process that took the lock releases it (a forked child inherits the file
    descriptor but not the ownership), and a lock taken on a file that another process
    unlinked meanwhile is dropped and taken again on the new file.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._fd: int | None = None
        self._owner: int | None = None

    def acquire(self, wait: float = ACQUIRE_WAIT) -> bool:
        """Take the lock; return False (holding nothing) if another holder keeps it for
        ``wait`` seconds."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + wait
        while (fd := _take(self.path)) is None:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.005)
        self._fd, self._owner = fd, os.getpid()
        return True

    def release(self, remove: bool = False) -> None:
        """Drop the lock (and delete the lock file when ``remove``), in the owning process."""
        if self._fd is None:
            return
        if self._owner == os.getpid():
            if remove:
                self.path.unlink(missing_ok=True)
            os.close(self._fd)
        self._fd = None

    def abandon(self) -> None:
        """Forget the lock without touching it (in a forked child: the parent keeps it)."""
        if self._fd is not None and self._owner != os.getpid():
            os.close(self._fd)  # the parent's descriptor keeps the lock
        self._fd = None

    @property
    def held(self) -> bool:
        """Whether this process holds the lock."""
        return self._fd is not None and self._owner == os.getpid()


def is_locked(path: str | os.PathLike[str]) -> bool:
    """Whether some live process holds the lock at ``path`` (a missing file is not locked).

    The probe only reads the file, so it also works on a read-only disk.
    """
    try:
        fd = os.open(path, os.O_RDONLY if fcntl is not None else os.O_RDWR)
    except FileNotFoundError:
        return False
    try:
        _lock(fd, shared=True)
    except OSError:
        return True
    finally:
        os.close(fd)  # closing also drops the probe's own lock
    return False


def _take(path: Path) -> int | None:
    """A descriptor of ``path`` holding its exclusive lock; None if another holds it."""
    for _ in range(5):
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            _lock(fd)
        except OSError:
            os.close(fd)
            return None
        if _same_file(fd, path):
            return fd
        os.close(fd)  # the file was unlinked between open and lock: try the new one
    return None


def _same_file(fd: int, path: Path) -> bool:
    try:
        return os.fstat(fd).st_ino == os.stat(path).st_ino
    except FileNotFoundError:
        return False


def _lock(fd: int, shared: bool = False) -> None:
    if fcntl is not None:
        fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
    else:  # pragma: no cover - Windows (no shared locks: a probe takes the lock itself)
        msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
