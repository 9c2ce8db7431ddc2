"""The exceptions Tracelet raises. Every message says what went wrong and what to do next."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class TraceletException(Exception):
    """Base class of every error Tracelet raises on purpose."""


class ConfigurationError(TraceletException, ValueError):
    """Bad configuration or setup: an unknown backend, an unknown key, a value of the wrong type."""


class BackendError(TraceletException):
    """A backend could not do what was asked (connect, create a run, deliver a batch)."""


class RejectedBatchError(BackendError):
    """Raised by a backend's ``log_batch`` for a batch it will never accept (not retried).

    The batch stays in the local store, the rejection is recorded and reported, and
    delivery goes on with the next batch. Raise any other exception for a failure that a
    retry may fix.
    """


class PermanentBackendError(BackendError):
    """Raised by a backend for a failure no retry can fix: bad credentials, a deleted project.

    The backend is reported once and not tried again in this run; everything it did not
    receive stays in the local store, so ``tracelet sync`` delivers it once the cause is
    fixed. The other backends go on.
    """


class StoreError(TraceletException):
    """The local store cannot be used: unreadable, or written by a newer Tracelet."""


class Terminated(SystemExit):
    """Raised in the main thread when the process gets SIGTERM (exit status 143).

    Tracelet installs this handler only where SIGTERM still has its default action; a run
    it ends is recorded as ``killed``.
    """

    def __init__(self) -> None:
        super().__init__(143)


class NotFoundError(TraceletException, LookupError):
    """No such run, metric or store; the message lists what there is."""


class AmbiguousRunError(TraceletException, LookupError):
    """A run reference (id prefix or name) matches several runs; the message lists them."""


def did_you_mean(word: str, candidates: Iterable[str], most: int = 3) -> str:
    """``"; did you mean 'x'?"`` naming the (at ``most``) candidates closest to ``word``,
    or ``""`` when none is close."""
    close = difflib.get_close_matches(str(word), sorted(candidates), n=most, cutoff=0.6)
    return f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
