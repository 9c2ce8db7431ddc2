"""Fault-injection backends: they keep what they receive in memory and can fail, hang or lag.

Mocks are for faults only; delivery itself is checked against the real local store.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import tracelet
from tracelet.core.registry import default_registry
from tracelet.plugins import BackendPlugin, BackendRegistration, Batch, Option, RunInfo, RunStatus

OPTIONS = (
    Option("fail_times", int, 0, doc="deliveries that raise before the first success"),
    Option("delay", float, 0.0, doc="seconds each delivery takes"),
    Option("hang", bool, False, doc="block every delivery until released"),
    Option("start_delay", float, 0.0, doc="seconds start_run takes"),
    Option("api_key", str, doc="a credential (never stored)", secret=True, env="RECORDING_KEY"),
)


class RecordingBackend(BackendPlugin):
    """Keeps every delivered batch; ``fail_times`` deliveries raise first, ``hang`` blocks."""

    instances: list[RecordingBackend] = []

    def __init__(self) -> None:
        super().__init__()
        self.batches: dict[int, Batch] = {}
        self.deliveries = 0
        self.run: RunInfo | None = None
        self.resumed: bool | None = None
        self.final_status: RunStatus | None = None
        self.start_span: tuple[float, float] | None = None
        """When start_run began and ended (``time.monotonic()``)."""
        self.fail_times = 0
        self.delay = 0.0
        self.hang = threading.Event()
        self.hang.set()
        self.lock = threading.Lock()
        RecordingBackend.instances.append(self)

    def initialize(self, config: Any) -> None:
        super().initialize(config)
        self.fail_times = self.config["fail_times"]
        self.delay = self.config["delay"]
        if self.config["hang"]:
            self.hang.clear()

    def start_run(self, run: RunInfo, resumed: bool) -> None:
        began = time.monotonic()
        time.sleep(self.config["start_delay"])
        self.run, self.resumed = run, resumed
        self.start_span = (began, time.monotonic())

    def log_batch(self, batch: Batch) -> None:
        self.hang.wait()
        time.sleep(self.delay)
        with self.lock:
            self.deliveries += 1
            if self.fail_times > 0:
                self.fail_times -= 1
                raise ConnectionError("injected failure")
            self.batches[batch.seq] = batch

    def finish_run(self, status: RunStatus) -> None:
        self.final_status = status

    def points(self) -> list[tuple[str, float, int, float]]:
        """Every metric point received, in batch order."""
        return [p for seq in sorted(self.batches) for p in self.batches[seq].metrics]


class _Plugin:
    """Hook implementations registering RecordingBackend under a given name."""

    def __init__(self, name: str) -> None:
        self.name = name

    @tracelet.hookimpl
    def tracelet_register_backends(self) -> list[BackendRegistration]:
        return [BackendRegistration(self.name, RecordingBackend, options=OPTIONS)]


def built(name: str, factory: type[RecordingBackend] = RecordingBackend, **options: Any) -> Any:
    """A backend of class ``factory`` built as the registry builds one, named ``name``."""
    return BackendRegistration(name, factory, options=OPTIONS).build(options)


@contextmanager
def recording_backend(*names: str) -> Iterator[list[RecordingBackend]]:
    """Register RecordingBackend under each name (default "recording") for the block;
    yield the list of instances built meanwhile, in creation order."""
    registry = default_registry()
    names = names or ("recording",)
    for name in names:
        registry.register(_Plugin(name), name=f"test-{name}")
    RecordingBackend.instances = []
    try:
        yield RecordingBackend.instances
    finally:
        for backend in RecordingBackend.instances:
            backend.hang.set()
        for name in names:
            registry.manager.unregister(name=f"test-{name}")
