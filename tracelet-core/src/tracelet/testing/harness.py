"""The harness the checks run in: real runs with a private journal, and the reads around them.

Every run uses explicit settings (collectors, automagic and anomaly detection off, a short
``flush_interval``, a journal under the harness's folder), so neither the environment nor
``TRACELET_*`` variables change what the kit checks.
"""

from __future__ import annotations

import hashlib
import struct
import time
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

import tracelet
from tracelet.core.delivery import Delivery, MemoryCursor
from tracelet.core.experiment import Experiment
from tracelet.core.registry import registry_for
from tracelet.plugins import BackendPlugin, RunInfo, RunStatus
from tracelet.settings import TraceletSettings
from tracelet.storage import LocalStore
from tracelet.testing.compare import require
from tracelet.testing.contract import BackendUnderTest

if TYPE_CHECKING:
    from tracelet.sync import SyncResult

PROJECT = "tracelet-conformance"


class Harness:
    """Runs for one check of ``backend``, journaled under ``root``."""

    def __init__(self, backend: BackendUnderTest, root: Path) -> None:
        self.backend = backend
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.settings = TraceletSettings(
            project=PROJECT,
            backend=[backend.name],
            store_path=str(self.root / "journal"),
            track_system=False,
            track_env=False,
            track_git=False,
            detect_anomalies=False,
            flush_interval=0.02,
            flush_timeout=backend.flush_timeout,
        )
        self._journal: LocalStore | None = None

    def close(self) -> None:
        """Close the journal handle."""
        if self._journal is not None:
            self._journal.close()

    @property
    def journal(self) -> LocalStore:
        """The local store every run of this harness is journaled in."""
        if self._journal is None:
            self._journal = LocalStore(self.settings.store_path, recover=False)
        return self._journal

    # -- runs ----------------------------------------------------------------------------

    def start(self, name: str, *, journal_only: bool = False) -> Experiment:
        """Start a run the way users do: ``start_logging`` with ``config={name: options}``.

        ``journal_only``: with no backend at all (the journal alone holds the run), so that
        the tool never sees it.
        """
        if journal_only:
            return tracelet.start_logging(
                f"conformance-{name}", backend=[], config={}, settings=self.settings
            )
        options = {self.backend.name: dict(self.backend.options)}
        return tracelet.start_logging(
            f"conformance-{name}",
            backend=[self.backend.name],
            config=options,
            settings=self.settings,
        )

    def resume(self, run_id: str) -> Experiment:
        """Start a second session of the run ``run_id`` (``Experiment(run_id=...)``)."""
        options = {self.backend.name: dict(self.backend.options)}
        return Experiment(settings=self.settings, backend_options=options, run_id=run_id).start()

    def flushed(self, experiment: Experiment) -> None:
        """Wait until the backend has accepted everything logged so far."""
        if not experiment.flush(self.backend.flush_timeout):
            raise AssertionError(
                f"backend {self.backend.name!r} did not accept the run's batches within "
                f"{self.backend.flush_timeout:g} s{self._errors(experiment.id)}"
            )

    def build_backend(self) -> BackendPlugin:
        """A new instance of the backend, built as runs build it (options checked)."""
        registry = registry_for(self.settings)
        if self.backend.name not in registry.backends():
            raise AssertionError(
                f"no backend named {self.backend.name!r} is registered "
                f"(registered: {sorted(registry.backends())})"
            )
        return registry.build_backend(self.backend.name, self.backend.options)

    def delivery(self, backend: BackendPlugin, run: RunInfo) -> Delivery:
        """A delivery of ``run`` into ``backend`` through Tracelet's delivery engine, with a
        cursor of its own (so the same batches can be delivered again) and retries bounded
        by the backend's ``flush_timeout``."""
        delivery = Delivery(backend, self.journal, run, cursor=MemoryCursor())
        delivery.deadline = time.monotonic() + self.backend.flush_timeout
        return delivery

    def publish(self, run_id: str) -> list[SyncResult]:
        """``tracelet sync RUN --to <backend>``: deliver a finished run into the backend."""
        from tracelet.sync import sync_run

        deadline = time.monotonic() + self.backend.flush_timeout
        return sync_run(
            self.journal,
            run_id,
            to=self.backend.name,
            options=self.backend.options,
            deadline=deadline,
        )

    def expect_done(self, delivery: Delivery, done: bool, what: str) -> None:
        """``done`` (what a delivery step returned) or an AssertionError saying why not."""
        if not done:
            raise AssertionError(
                f"backend {self.backend.name!r}: {what} did not succeed: "
                f"{delivery.state.describe()}"
            )

    # -- what the tool holds ---------------------------------------------------------------

    def read(self, kind: str, run_id: str, *, optional: bool = False) -> Any:
        """Call the adapter's reader ``kind``. When it raises ``NotImplementedError`` (the
        tool does not store that kind), skip the test, or return None if ``optional``."""
        reader = getattr(self.backend.read_back, kind, None)
        try:
            if reader is None:
                raise NotImplementedError(f"its adapter has no {kind!r} reader")
            return reader(run_id)
        except NotImplementedError as error:
            if optional:
                return None
            pytest.skip(f"backend {self.backend.name!r} does not read back {kind} ({error})")

    def expect_delivered(self, run_id: str) -> None:
        """The backend took part in the run and accepted every journaled batch, with no
        error left with its cursor; the tool holds exactly one run for it."""
        cursors = self.journal.cursors(run_id)
        last = self.journal.last_seq(run_id)
        if self.backend.name not in cursors:
            raise AssertionError(
                f"backend {self.backend.name!r} did not receive run {run_id} (it could not be "
                "created; see the 'tracelet' warnings)"
            )
        problems = []
        if cursors[self.backend.name] != last:
            problems.append(f"accepted {cursors[self.backend.name]} of {last} batch(es)")
        error = self._cursor_error(run_id)
        if error:
            problems.append(f"its latest error: {error}")
        require(problems, f"delivery of run {run_id} to backend {self.backend.name!r}")
        self.expect_one_run(run_id)

    def expect_one_run(self, run_id: str) -> None:
        """The tool holds exactly one run for ``run_id``."""
        count = self.read("run_count", run_id)
        if count != 1:
            raise AssertionError(f"the tool holds {count} run(s) for Tracelet run {run_id}, not 1")

    def expect_status(self, run_id: str, status: RunStatus) -> None:
        """The tool's status of the run is ``status``."""
        found = self.read("status", run_id)
        try:
            parsed = RunStatus.parse(found)
        except ValueError:
            parsed = found
        if parsed != status:
            raise AssertionError(
                f"the tool's status of run {run_id} is {found!r}; expected {status.value!r}"
            )

    def _cursor_error(self, run_id: str) -> str | None:
        states = {d.backend: d for d in self.journal.deliveries(run_id)}
        state = states.get(self.backend.name)
        return (state.error or state.rejection) if state else None

    def _errors(self, run_id: str) -> str:
        error = self._cursor_error(run_id)
        return f"; its latest error: {error}" if error else ""


@contextmanager
def open_kit(backend: object, tmp_path: Path) -> Iterator[Harness]:
    """The harness of one test, under ``tmp_path``; ``backend`` is what the suite's
    ``backend_under_test`` fixture returned."""
    if not isinstance(backend, BackendUnderTest):
        raise TypeError(
            "the backend_under_test fixture must return a tracelet.testing.BackendUnderTest, "
            f"not {type(backend).__name__}"
        )
    kit = Harness(backend, tmp_path / "tracelet-conformance")
    try:
        yield kit
    finally:
        tracelet.stop_logging()  # a run a failed check left active
        kit.close()


def png(width: int, height: int, seed: int) -> bytes:
    """A small RGB PNG whose pixels depend on ``seed``."""
    rows = b"".join(
        b"\x00"
        + bytes(
            (x * 31 + y * 17 + seed * 53 + c * 89) % 256 for x in range(width) for c in range(3)
        )
        for y in range(height)
    )
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunks = [(b"IHDR", header), (b"IDAT", zlib.compress(rows)), (b"IEND", b"")]
    return b"\x89PNG\r\n\x1a\n" + b"".join(
        struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        for kind, data in chunks
    )


def digest(data: bytes) -> str:
    """A short, readable identity of some bytes: length and SHA-256 prefix."""
    return f"<{len(data)} bytes, sha256 {hashlib.sha256(data).hexdigest()[:12]}>"
