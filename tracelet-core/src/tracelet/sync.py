"""``tracelet sync``: deliver later what a backend did not get, or publish a run anywhere.

Each backend of a run has a cursor in the journal: the last batch it accepted. Syncing a
run builds each backend whose cursor is behind, reopens its run in the tool (``start_run``
with ``resumed=True``), delivers the missing batches in order through the same delivery
engine live runs use, and records the run's final status. A second sync finds nothing to
do. ``to=`` publishes a finished run into a backend it was never logged to (log locally
now, publish later): the backend gets a cursor at 0 and the whole run, exactly once.

Backend options come from the run's stored configuration (secrets were never stored),
under today's ``tracelet.yaml`` section, under ``options`` (``--option key=value``);
credentials come from the environment as they would for a new run. Retries stop at the
``deadline``: what is left stays in the journal, and the result says how much.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import attrs

from tracelet.core.delivery import Delivery, describe_error
from tracelet.core.registry import PluginRegistry, registry_for
from tracelet.exceptions import ConfigurationError, StoreError
from tracelet.plugins import BackendRegistration, RunInfo, RunStatus
from tracelet.records import DeliveryState
from tracelet.settings import TraceletSettings, stored_backend_options
from tracelet.storage import LocalStore, StoredRun
from tracelet.storage.locks import is_locked

DEFAULT_TIMEOUT = 300.0
"""Seconds ``tracelet sync`` keeps retrying a backend that does not answer."""
HANG_GRACE = 2.0
"""Seconds past the deadline a backend call may take before sync leaves it behind."""

Observer = Callable[[str, DeliveryState], object]
"""Called as ``observer(run_id, state)`` on every change of a backend's delivery."""


@attrs.frozen
class SyncResult:
    """What syncing one backend of one run did."""

    run_id: str
    backend: str
    delivered: int
    remaining: int
    error: str | None = None
    timed_out: bool = False
    """Whether the deadline ended the retries (the backend never answered in time)."""


def pending(store: LocalStore, run_ids: Iterable[str] | None = None) -> dict[str, dict[str, int]]:
    """Runs (all, or ``run_ids``) with backends behind: run id -> backend -> batches behind
    (0 for a backend that has every batch but not the final status). Runs still being
    written by a live process are left out: that process delivers them itself."""
    runs = [store.get_run(i) for i in run_ids] if run_ids is not None else store.list_runs()
    found = {}
    for run in runs:
        if run is None or _is_live(store, run):
            continue
        behind = dict.fromkeys(store.unfinished(run.id), 0) | store.undelivered(run.id)
        if behind:
            found[run.id] = behind
    return found


def _is_live(store: LocalStore, run: StoredRun) -> bool:
    return run.status is RunStatus.RUNNING and is_locked(store.path / "locks" / f"{run.id}.lock")


def sync_run(
    store: LocalStore,
    run_id: str,
    *,
    backends: Iterable[str] | None = None,
    to: str | None = None,
    options: Mapping[str, Any] | None = None,
    registry: PluginRegistry | None = None,
    observer: Observer | None = None,
    deadline: float | None = None,
) -> list[SyncResult]:
    """Deliver every batch the run's backends (or those named) have not accepted.

    ``to`` names one backend to deliver the run into, whether or not it ever had it;
    ``options`` override that backend's options (or every synced backend's). Retries end
    at ``deadline`` (``time.monotonic()``; default: :data:`DEFAULT_TIMEOUT` from now).
    """
    run = store.get_run(run_id)
    if run is None:
        raise StoreError(f"no run {run_id!r} in the store at {store.path}")
    if _is_live(store, run):
        raise StoreError(f"run {run_id} is still being written; its own process delivers it")
    registry = registry or registry_for(TraceletSettings.load())
    deadline = time.monotonic() + DEFAULT_TIMEOUT if deadline is None else deadline
    behind = pending(store, [run_id]).get(run_id, {})
    if to is not None:
        targets = [to] if to in behind or to not in store.cursors(run.id) else []
    else:
        targets = [n for n in behind if backends is None or n in set(backends)]
    sync = _BackendSync(store, run, registry, options or {}, observer, deadline)
    return [sync(name) for name in targets]


@attrs.define
class _BackendSync:
    """Syncs one run into one backend at a time."""

    store: LocalStore
    run: StoredRun
    registry: PluginRegistry
    overrides: Mapping[str, Any]
    observer: Observer | None
    deadline: float

    def __call__(self, name: str) -> SyncResult:
        """Sync the run into backend ``name``; a backend call that hangs past the deadline
        is left behind on its own thread, so sync still ends on time."""
        outcome: list[SyncResult] = []
        deliveries: list[Delivery] = []
        worker = threading.Thread(
            target=lambda: outcome.append(self._sync(name, deliveries)),
            name=f"tracelet-sync-{name}",
            daemon=True,
        )
        worker.start()
        worker.join(max(0.0, self.deadline - time.monotonic()) + HANG_GRACE)
        if outcome:
            return outcome[0]
        for delivery in deliveries:  # once the hung call returns, it touches nothing
            delivery.abandon()
        return self._result(name, 0, "a call to the backend did not return", timed_out=True)

    def _sync(self, name: str, deliveries: list[Delivery]) -> SyncResult:
        resumed = name in self.store.cursors(self.run.id)
        try:
            registration = self.registry.select_backends([name])[0]
            options = self._options(registration)
            backend = registration.build(options)
        except Exception as error:
            return self._result(name, 0, describe_error(error))
        if not resumed:  # published here: later syncs go to the same place
            self.store.set_backend_options(self.run.id, name, registration.stored_options(options))
            self.store.ensure_cursor(self.run.id, name)
        delivery = Delivery(
            backend,
            self.store,
            self._info(),
            journaled=self.store.last_seq(self.run.id),
            on_update=self._observe,
        )
        delivery.deadline = self.deadline
        deliveries.append(delivery)
        first = self.store.get_cursor(self.run.id, name)
        try:
            done = delivery.open(resumed) and delivery.finish(self.run.status)
            if not done:
                delivery.give_up()
        finally:
            delivery.release()
        delivered = max(0, delivery.delivered - first)
        if done:
            return self._result(name, delivered, None)
        error = delivery.state.error or "gave up"
        return self._result(name, delivered, error, timed_out=not delivery.failed)

    def _observe(self, state: DeliveryState) -> None:
        if self.observer is not None:
            self.observer(self.run.id, state)

    def _info(self) -> RunInfo:
        run = self.run
        return RunInfo(
            run.id,
            run.name,
            run.project,
            run.created_at,
            store_path=str(self.store.path),
            ended_at=run.ended_at,
        )

    def _options(self, registration: BackendRegistration) -> dict[str, Any]:
        """The options the run was logged with and today's ``tracelet.yaml`` section, under
        the given overrides, checked by type. An option withheld as secret comes from the
        overrides or its environment variable; without either, ConfigurationError."""
        declared = {option.name: option for option in registration.options}
        given = {}
        for key, value in self.overrides.items():
            if key not in declared:
                registration.check_options({key: value})  # raises, naming the options
            option = declared[key]
            given[key] = option.parse(registration.name, value) if isinstance(value, str) else value
        options, withheld = stored_backend_options(self.run.config, registration.name)
        for key in sorted(withheld - set(given)):
            option = declared.get(key)
            if option is not None and option.env and os.environ.get(option.env):
                given[key] = option.parse(registration.name, os.environ[option.env])
                continue
            where = f", or set {option.env}" if option is not None and option.env else ""
            raise ConfigurationError(
                f"option {key!r} of backend {registration.name!r} was withheld from the "
                f"journal as a secret; give it with --option {key}=... or in the "
                f"{registration.name}: section of tracelet.yaml{where}"
            )
        return {**options, **given}

    def _result(self, name: str, delivered: int, error: str | None, **extra: Any) -> SyncResult:
        last = self.store.last_seq(self.run.id)
        remaining = last - self.store.get_cursor(self.run.id, name)
        return SyncResult(self.run.id, name, delivered, remaining, error, **extra)


def parse_options(pairs: Iterable[str]) -> dict[str, str]:
    """``["key=value", ...]`` as a dict; a pair without ``=`` is a ConfigurationError."""
    found = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigurationError(f"--option expects KEY=VALUE, got {pair!r}")
        found[key.strip()] = value
    return found
