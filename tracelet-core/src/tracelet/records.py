"""The records that travel from the training thread through the journal to every backend.

A metric point is a plain tuple ``(name, value, step, timestamp)``: it is the one record
logged millions of times, and a tuple is the cheapest thing the training thread can build.
Everything else is a small frozen attrs class. A :class:`Batch` is the unit of delivery:
the dispatcher journals one batch per transaction and hands the same batch to every sink.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import attrs

from tracelet.values import ParamValue

if TYPE_CHECKING:
    from tracelet.plugins import PendingValue

MetricPoint = tuple[str, float, int, float]
"""One metric point: ``(name, value, step, timestamp)``; timestamp in seconds since the epoch."""


@attrs.frozen
class PendingMetric:
    """A metric point whose value is still being produced (a GPU tensor copied without
    blocking): the dispatcher resolves it into a :data:`MetricPoint` before journaling."""

    name: str
    value: PendingValue
    step: int
    timestamp: float

    def point(self) -> MetricPoint:
        """The finished point; waits for the value (raises what its ``result`` raises)."""
        return (self.name, float(self.value.result()), self.step, self.timestamp)


class RunStatus(enum.StrEnum):
    """Where a run stands. Every run ends in exactly one of the final states."""

    RUNNING = "running"
    FINISHED = "finished"
    FAILED = "failed"
    KILLED = "killed"
    CRASHED = "crashed"

    @classmethod
    def parse(cls, value: str | RunStatus) -> RunStatus:
        """Return the status named by ``value``, or raise ``ValueError`` listing the choices."""
        try:
            return cls(value.lower() if isinstance(value, str) else value)
        except ValueError:
            choices = ", ".join(s.value for s in cls if s is not cls.RUNNING)
            raise ValueError(f"unknown run status {value!r}; use one of: {choices}") from None


@attrs.frozen
class Params:
    """Parameters (hyperparameters), already flattened to ``{"a/b": value}``."""

    values: Mapping[str, ParamValue]


@attrs.frozen
class Tags:
    """Run tags as key/value pairs; a bare tag (``"pytorch"``) has the value ``""``."""

    values: Mapping[str, str]


@attrs.frozen
class Text:
    """A piece of text logged under ``name`` at ``step``."""

    name: str
    text: str
    step: int
    timestamp: float


@attrs.frozen
class Histogram:
    """A distribution logged under ``name`` at ``step``: ``counts[i]`` values fell between
    ``edges[i]`` and ``edges[i + 1]`` (one more edge than counts); ``nonfinite`` NaN or
    infinite values were left out of the bins."""

    name: str
    step: int
    timestamp: float
    counts: tuple[float, ...]
    edges: tuple[float, ...]
    nonfinite: int = 0


@attrs.frozen
class Image:
    """A PNG image journaled in the local store; ``path`` is the stored file."""

    name: str
    step: int
    timestamp: float
    path: str


@attrs.frozen
class Artifact:
    """A file journaled in the local store; ``path`` is the stored copy.

    ``artifact_path`` is where backends file it (a relative path such as ``model.pth`` or
    ``checkpoints/epoch3.pt``); ``kind`` is an :class:`~tracelet.artifacts.ArtifactType` value.
    """

    name: str
    artifact_path: str
    path: str
    size_bytes: int
    sha256: str
    kind: str = "custom"
    timestamp: float = 0.0
    version: int = 1


@attrs.frozen
class Sample:
    """A user's sample record (any JSON-able object), kept with the next checkpoint."""

    data: str
    step: int
    timestamp: float


@attrs.frozen
class CheckpointRequest:
    """Asks the dispatcher to write the checkpoint of ``step`` once the batch is journaled.

    ``gradient_stats`` and ``system_metrics`` are the latest ones when it was asked for.
    """

    step: int
    timestamp: float
    gradient_stats: Mapping[str, float]
    system_metrics: Mapping[str, float]


@attrs.frozen
class RunInfo:
    """What a backend needs to know about the run it is writing to."""

    id: str
    name: str
    project: str
    created_at: float
    tags: tuple[str, ...] = ()
    store_path: str = ""
    ended_at: float | None = None
    """When the run ended; known when a finished run is delivered later (``tracelet sync``)."""


@attrs.frozen
class Batch:
    """Everything the dispatcher drained in one go, journaled as one transaction.

    ``seq`` counts the run's batches from 1 without gaps; a backend's delivery cursor is the
    ``seq`` of the last batch it accepted. Delivering the same batch twice must not duplicate
    anything in the backend (batches are replayed after a failure).
    """

    run_id: str
    seq: int
    metrics: Sequence[MetricPoint] = ()
    params: Mapping[str, ParamValue] = attrs.field(factory=dict)
    tags: Mapping[str, str] = attrs.field(factory=dict)
    texts: Sequence[Text] = ()
    images: Sequence[Image] = ()
    artifacts: Sequence[Artifact] = ()
    histograms: Sequence[Histogram] = ()

    def __len__(self) -> int:
        return (
            len(self.metrics)
            + len(self.params)
            + len(self.tags)
            + len(self.texts)
            + len(self.images)
            + len(self.artifacts)
            + len(self.histograms)
        )


class DeliveryPhase(enum.StrEnum):
    """Where a backend's delivery of a run stands."""

    STARTING = "starting"
    DELIVERING = "delivering"
    RETRYING = "retrying"
    """The backend fails; it is tried again with backoff, nothing is lost."""
    STOPPED = "stopped"
    """The run stopped (or ``tracelet sync`` timed out) with batches pending: they wait in
    the journal for ``tracelet sync``."""
    FAILED = "failed"
    """For good in this run (a permanent failure): ``tracelet sync`` tries again."""


@attrs.frozen
class DeliveryState:
    """One backend's delivery of one run: phase, progress, since when, and the latest error."""

    backend: str
    phase: DeliveryPhase
    delivered: int
    """The last batch the backend accepted."""
    journaled: int
    """The newest batch in the journal, as far as the delivery knows."""
    since: float
    """When the phase began (seconds since the epoch)."""
    error: str | None = None
    """The latest failure, while retrying, stopped or failed for good."""
    rejection: str | None = None
    """The latest batch the tool refused for good, or delivered without stored files that
    are gone (what was skipped stays in the local store, files aside)."""
    finished: bool = False
    """Whether the backend has the run's final status."""

    @property
    def pending(self) -> int:
        """Batches journaled but not yet accepted."""
        return max(0, self.journaled - self.delivered)

    def describe(self) -> str:
        """One line for people, e.g. ``retrying since 2026-11-29 12:03:04 (ConnectionError:
        ...); 12/40 batches, 28 pending``."""
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.since))
        progress = f"{self.delivered}/{self.journaled} batches, {self.pending} pending"
        why = f" ({self.error})" if self.error else ""
        if self.phase is DeliveryPhase.FAILED:
            return f"failed for good at {when}{why}; {progress}; fix it, then `tracelet sync`"
        if self.phase is DeliveryPhase.RETRYING:
            return f"retrying since {when}{why}; {progress}"
        if self.phase is DeliveryPhase.STOPPED and self.pending:
            return f"stopped at {when}{why}; {progress}; `tracelet sync` delivers them"
        if self.pending:
            return f"{self.phase.value}, {progress}"
        return f"up to date ({self.delivered}/{self.journaled} batches)"
