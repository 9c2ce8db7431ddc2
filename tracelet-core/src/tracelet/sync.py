"""``tracelet sync``: deliver later what a backend did not get while the run was going.

Each backend of a run has a cursor in the journal: the last batch it accepted. Syncing a
run builds each backend whose cursor is behind, reopens its run in the tool (``start_run``
with ``resumed=True``), delivers the missing batches in order, moving the cursor after
each one, and records the run's final status. A second sync finds nothing to do.

Backend options come from the run's stored configuration (secrets were never stored),
overlaid with today's ``tracelet.yaml`` sections; credentials come from the environment
as they would for a new run.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import attrs

from tracelet.core.registry import PluginRegistry, default_registry
from tracelet.core.retry import RetryPolicy
from tracelet.exceptions import RejectedBatchError, StoreError
from tracelet.records import RunInfo, RunStatus
from tracelet.redaction import REDACTED, redact_uri
from tracelet.settings import read_config_file
from tracelet.storage import LocalStore, StoredRun
from tracelet.storage.locks import is_locked

Progress = Callable[[str, int, int], None]
"""Called as ``progress(backend, batches delivered so far, batches to deliver)``."""


@attrs.frozen
class SyncResult:
    """What syncing one backend of one run did."""

    run_id: str
    backend: str
    delivered: int
    remaining: int
    error: str | None = None


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
    registry: PluginRegistry | None = None,
    progress: Progress | None = None,
    attempts: int = 3,
) -> list[SyncResult]:
    """Deliver every batch the run's backends (or those named) have not accepted."""
    run = store.get_run(run_id)
    if run is None:
        raise StoreError(f"no run {run_id!r} in the store at {store.path}")
    if _is_live(store, run):
        raise StoreError(f"run {run_id} is still being written; its own process delivers it")
    registry = registry or default_registry()
    wanted = set(backends) if backends is not None else None
    results = []
    for name, behind in pending(store, [run_id]).get(run_id, {}).items():
        if wanted is None or name in wanted:
            results.append(_sync_backend(store, run, name, behind, registry, progress, attempts))
    return results


def _sync_backend(
    store: LocalStore,
    run: StoredRun,
    name: str,
    behind: int,
    registry: PluginRegistry,
    progress: Progress | None,
    attempts: int,
) -> SyncResult:
    delivered = 0
    try:
        plugin = registry.select_backends([name])[0].factory()
        plugin.initialize(_options(run, name))
        _retry(plugin.start, attempts)
        info = RunInfo(
            run.id,
            run.name,
            run.project,
            run.created_at,
            store_path=str(store.path),
            ended_at=run.ended_at,
        )
        _retry(lambda: plugin.start_run(info, True), attempts)
        try:
            cursor, last = store.get_cursor(run.id, name), store.last_seq(run.id)
            while cursor < last:
                for batch in store.read_batches(run.id, cursor, last, limit=16):
                    rejection = None
                    try:
                        _retry(lambda batch=batch: plugin.log_batch(batch), attempts)
                    except RejectedBatchError as error:
                        rejection = redact_uri(f"batch {batch.seq} rejected: {error}")
                    cursor = batch.seq
                    store.set_cursor(run.id, name, cursor, error=rejection)
                    delivered += 1
                    if progress is not None:
                        progress(name, delivered, behind)
            if run.status is not RunStatus.RUNNING:
                _retry(lambda: plugin.finish_run(run.status), attempts)
                store.mark_finished(run.id, name)
        finally:
            plugin.stop()
    except Exception as error:
        message = redact_uri(f"{type(error).__name__}: {error}")
        return SyncResult(run.id, name, delivered, behind - delivered, message)
    return SyncResult(run.id, name, delivered, behind - delivered)


def _options(run: StoredRun, name: str) -> dict[str, Any]:
    """The backend's stored options, without anything redacted, under today's
    ``tracelet.yaml`` section (which wins: it may hold a corrected address)."""
    stored = _without_redacted(run.config.get("backends", {}).get(name, {}))
    section = read_config_file().sections.get(name, {})
    return {**stored, **section} if isinstance(section, Mapping) else stored


def _without_redacted(values: Mapping[str, Any]) -> dict[str, Any]:
    """``values`` without entries whose value had a secret masked (``***`` anywhere in it)."""
    kept: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, Mapping):
            kept[key] = _without_redacted(value)
        elif REDACTED not in repr(value):
            kept[key] = value
    return kept


def _retry(action: Callable[[], object], attempts: int) -> None:
    """Run ``action``, retrying failures (not rejections) with backoff."""
    delays = RetryPolicy(initial=0.5, jitter=0.0).delays()
    for attempt in range(attempts):
        try:
            action()
            return
        except RejectedBatchError:
            raise
        except Exception:
            if attempt == attempts - 1:
                raise
            time.sleep(next(delays))
