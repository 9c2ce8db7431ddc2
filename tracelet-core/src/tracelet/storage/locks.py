"""Run locks: how a store tells a live run from one whose process died.

The process writing a run holds an exclusive advisory lock on ``locks/<run id>.lock``.
The operating system drops the lock when the process ends, however it ends (SIGKILL
included), so a run marked "running" whose lock can be taken has crashed. Unlike a pid
check, this cannot be fooled by pid reuse.
"""

from __future__ import annotations

import os
from pathlib import Path

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]
    import msvcrt


class RunLock:
    """An exclusive, non-blocking lock on one file, held until :meth:`release`."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._fd: int | None = None

    def acquire(self) -> bool:
        """Take the lock; return False (holding nothing) if another holder has it."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            _lock(fd)
        except OSError:
            os.close(fd)
            return False
        self._fd = fd
        return True

    def release(self, remove: bool = False) -> None:
        """Drop the lock (and delete the lock file when ``remove``)."""
        if self._fd is None:
            return
        if remove:
            self.path.unlink(missing_ok=True)
        os.close(self._fd)
        self._fd = None

    @property
    def held(self) -> bool:
        """Whether this object holds the lock."""
        return self._fd is not None


def is_locked(path: str | os.PathLike[str]) -> bool:
    """Whether some live process holds the lock at ``path``."""
    probe = RunLock(path)
    if probe.acquire():
        probe.release(remove=True)
        return False
    return True


def _lock(fd: int) -> None:
    if fcntl is not None:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    else:  # pragma: no cover - Windows
        msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
