"""Writing a batch to the journal so that nothing is lost and nothing blocks for good.

Three kinds of failure, three answers:

- a transient store error (disk full, database locked: ``sqlite3.OperationalError``,
  ``OSError``) is retried with backoff; the caller waits once the buffer is full;
- a record the store can never hold (a name that is not valid UTF-8, an out-of-range
  number that slipped past the checks) poisons its batch: the batch is written again
  without the bad records, which are reported by name;
- a batch number already taken (another writer of the same run) is renumbered.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from typing import Any

import attrs

from tracelet.core.retry import RetryPolicy
from tracelet.records import Batch, MetricPoint
from tracelet.reporting import logger, report_once
from tracelet.storage import LocalStore
from tracelet.values import MAX_STEP, check_text

TRANSIENT = (sqlite3.OperationalError, OSError)


def write_batch(store: LocalStore, batch: Batch, give_up: Callable[[], bool]) -> Batch | None:
    """Journal ``batch``; return it as written (maybe renumbered or cleaned), or None if
    ``give_up()`` said to stop retrying (the records are then reported as lost)."""
    delays = RetryPolicy(initial=0.05, maximum=2.0).delays()
    salvaged = False
    while True:
        try:
            if store.write_batch(batch):
                return batch
            renumbered = attrs.evolve(batch, seq=store.last_seq(batch.run_id) + 1)
            report_once(
                "tracelet journal",
                f"batch {batch.seq} of run {batch.run_id} was "
                f"already written by another writer; journaled as {renumbered.seq}",
            )
            batch = renumbered
        except TRANSIENT as error:
            report_once(
                "tracelet journal",
                f"cannot write to {store.db_path} ({error!r}); retrying, records are held in "
                "memory and the caller waits when the buffer is full (at once with "
                "async_writes off)",
            )
            if give_up():
                logger.error(
                    "tracelet: %d records could not be journaled before the stop timeout",
                    len(batch),
                )
                return None
            time.sleep(next(delays))
        except Exception as error:
            if salvaged:
                logger.error(
                    "tracelet: a batch of %d records cannot be journaled (%r); it is lost",
                    len(batch),
                    error,
                )
                return None
            batch, salvaged = without_unstorable(batch, error), True


def without_unstorable(batch: Batch, error: Exception) -> Batch:
    """``batch`` without the records the store cannot hold; report what was left out."""
    metrics = [p for p in batch.metrics if storable_point(p)]
    params = {k: v for k, v in batch.params.items() if encodable(k) and encodable(v)}
    tags = {k: v for k, v in batch.tags.items() if encodable(k) and encodable(v)}
    texts = [t for t in batch.texts if encodable(t.name) and encodable(t.text)]
    images = [i for i in batch.images if encodable(i.name) and encodable(i.path)]
    artifacts = [a for a in batch.artifacts if encodable(a.name) and encodable(a.artifact_path)]
    histograms = [h for h in batch.histograms if encodable(h.name)]
    clean = attrs.evolve(
        batch,
        metrics=metrics,
        params=params,
        tags=tags,
        texts=texts,
        images=images,
        artifacts=artifacts,
        histograms=histograms,
    )
    bad_names = sorted({repr(p[0]) for p in batch.metrics if not storable_point(p)})[:5]
    report_once(
        "tracelet journal",
        f"{len(batch) - len(clean)} record(s) could not be stored ({error!r}) and were "
        f"left out{': metrics ' + ', '.join(bad_names) if bad_names else ''}",
    )
    return clean


def storable_point(point: MetricPoint) -> bool:
    """Whether SQLite can hold this metric point."""
    name, value, step, timestamp = point
    return (
        isinstance(name, str)
        and bool(name)
        and encodable(name)
        and isinstance(value, float)
        and isinstance(timestamp, float)
        and isinstance(step, int)
        and 0 <= step <= MAX_STEP
    )


def encodable(value: Any) -> bool:
    """True unless ``value`` is a string :func:`~tracelet.values.check_text` refuses."""
    if not isinstance(value, str):
        return True
    try:
        check_text(value)
    except ValueError:
        return False
    return True
