"""Anomaly detection: live, as the journal writer receives points, and offline, over a
stored run.

Both stream metric points through the same rules (:mod:`tracelet.analysis.rules`), so on
the same points they report the same anomalies. An anomaly is a plain dict with the keys
``run_id``, ``step``, ``metric``, ``kind``, ``severity``, ``value``, ``message`` and
``timestamp`` (that of the point, in seconds since the epoch).
"""

from __future__ import annotations

import logging
import math
import os
import re
from collections.abc import Callable, Collection, Iterable
from operator import itemgetter
from typing import Any

from tracelet.analysis.rules import RULES, DetectorConfig, Rule, Thresholds
from tracelet.exceptions import StoreError
from tracelet.records import MetricPoint
from tracelet.storage.store import DB_NAME, LocalStore

logger = logging.getLogger("tracelet")

Anomaly = dict[str, Any]
KINDS = ("nan_or_inf", "loss_spike", "gradient_explosion", "vanishing_gradient", "memory_pressure")
"""Every kind of anomaly, in the order of the rules."""
PARTS = ("nan_inf", "loss", "gradient", "memory")
"""The parts of :class:`DetectorConfig`, one per rule."""
KIND_PART = {
    "loss_spike": "loss",
    "gradient_explosion": "gradient",
    "vanishing_gradient": "gradient",
    "memory_pressure": "memory",
}
"""Which rule finds each kind (``nan_or_inf`` has no rule object)."""
PART_KINDS = {part: frozenset(k for k, p in KIND_PART.items() if p == part) for part in RULES}
"""The kinds each rule finds (the gradient rule: explosions and vanishing)."""
LIVE_LIMIT = 100
"""Anomalies of one kind on one metric after which live detection mutes that kind."""


class RuleStream:
    """Routes one run's metric points to the rules that watch their metric.

    Which rules watch a metric is decided once per new name, so points of metrics no rule
    watches cost a dict lookup and a NaN test. Not thread-safe: one thread feeds it.
    """

    def __init__(
        self,
        run_id: str,
        config: DetectorConfig,
        parts: Iterable[str] = PARTS,
        limit: int | None = None,
    ) -> None:
        self.run_id = run_id
        self.config = config
        self.limit = limit
        """Anomalies of one kind on one metric after which that check is muted (None: never)."""
        self.muted: list[tuple[str, str]] = []
        """``(metric, kind)`` pairs muted by the last :meth:`feed`."""
        self._counts: dict[tuple[str, str], int] = {}
        self.checks_muted = 0
        """Checks muted so far (each one may leave a metric no longer watched)."""
        on = {part for part in parts if getattr(config, part).enabled}
        self._nan_pattern = re.compile(config.nan_inf.pattern) if "nan_inf" in on else None
        self._patterns = [(p, re.compile(getattr(config, p).pattern)) for p in RULES if p in on]
        self._rules: dict[str, tuple[Rule, ...]] = {}
        self._nan_watched: dict[str, bool] = {}
        self._nonfinite: set[str] = set()  # metrics whose latest value was NaN or infinite
        self._silenced: dict[str, set[str]] = {}
        """The muted kinds of each metric found by a rule (``nan_or_inf``: ``_nan_watched``)."""

    def feed(self, points: Iterable[MetricPoint]) -> list[Anomaly]:
        """Take points ``(name, value, step, timestamp)`` in logged order; return anomalies.

        A batch of finite values (the usual case) goes to each rule as one run of its
        metric's values (:meth:`Rule.update_many`); otherwise point by point.
        """
        self.muted = []
        points = points if isinstance(points, list) else list(points)
        names = dict.fromkeys(map(itemgetter(0), points))  # in logged order: so is `muted`
        finite = math.isfinite(sum(map(itemgetter(1), points))) or all(
            map(math.isfinite, map(itemgetter(1), points))
        )  # (finite values whose sum overflows: tested one by one)
        if finite and self._nonfinite.isdisjoint(names):
            return self._feed_finite(points, names)
        return self._feed_each(points)

    def _feed_finite(self, points: list[MetricPoint], names: Collection[str]) -> list[Anomaly]:
        """Feed points whose values are all finite (of metrics whose last value was finite
        too), one metric at a time."""
        found: list[tuple[int, Anomaly]] = []
        for name in names:
            rules = self._rules_of(name)
            if not rules:
                continue
            if len(names) == 1:
                values, where = list(map(itemgetter(1), points)), None
            else:
                values, where = [p[1] for p in points if p[0] == name], []
            for rule in rules:
                for position, finding in rule.update_many(values):
                    if self._silenced and self._is_muted(name, finding[0]):
                        continue  # a muted kind of a rule that still reports another
                    if where is not None and not where:
                        where.extend(i for i, p in enumerate(points) if p[0] == name)
                    index = position if where is None else where[position]
                    _, value, step, timestamp = points[index]
                    found.append((index, self._anomaly(name, step, timestamp, value, *finding)))
                    if self._count(name, finding[0]):
                        break  # muted: this rule sees no more of the metric
        found.sort(key=itemgetter(0))
        return [anomaly for _, anomaly in found]

    def _feed_each(self, points: list[MetricPoint]) -> list[Anomaly]:
        """Feed points one by one (a batch holding NaN or infinite values)."""
        found: list[Anomaly] = []
        rules_of = self._rules
        nonfinite = self._nonfinite
        for name, value, step, timestamp in points:
            rules = rules_of.get(name)
            if rules is None:
                rules = rules_of[name] = self._rules_for(name)
            if value - value:  # NaN or an infinity (x - x is 0 for any finite number)
                if name not in nonfinite:  # the first of a run of non-finite values
                    nonfinite.add(name)
                    if self._watches_nan(name):
                        what = "NaN" if value != value else f"{value:+}"
                        found.append(
                            self._anomaly(
                                name,
                                step,
                                timestamp,
                                value,
                                "nan_or_inf",
                                "critical",
                                f"{name} is {what}",
                            )
                        )
                        self._count(name, "nan_or_inf")
                continue
            if nonfinite and name in nonfinite:
                nonfinite.discard(name)
            for rule in rules:
                finding = rule.update(value)
                if finding is not None and not self._is_muted(name, finding[0]):
                    found.append(self._anomaly(name, step, timestamp, value, *finding))
                    self._count(name, finding[0])
        return found

    def _count(self, metric: str, kind: str) -> bool:
        """Count an anomaly; at ``limit``, mute that kind for this metric. Return True when
        that leaves the check that found it nothing to report: it no longer watches the
        metric (the gradient rule goes on while one of its two kinds is not muted)."""
        if self.limit is None:
            return False
        key = (metric, kind)
        self._counts[key] = count = self._counts.get(key, 0) + 1
        if count != self.limit:
            return False
        self.muted.append(key)
        self.checks_muted += 1
        if kind == "nan_or_inf":
            self._nan_watched[metric] = False
            return True
        part = KIND_PART[kind]
        silenced = self._silenced.setdefault(metric, set())
        silenced.add(kind)
        if not PART_KINDS[part] <= silenced:
            return False
        rule_type = RULES[part]
        self._rules[metric] = tuple(r for r in self._rules[metric] if not isinstance(r, rule_type))
        return True

    def _is_muted(self, metric: str, kind: str) -> bool:
        """Whether ``kind`` is muted on ``metric`` while its rule still watches it."""
        return kind in self._silenced.get(metric, ())

    def watches(self, name: str) -> bool:
        """Whether a finite value of ``name`` can change what the stream finds: a rule
        watches the metric, or its last value was NaN or infinite. (A non-finite value of
        any metric can.)"""
        return bool(self._rules_of(name)) or name in self._nonfinite

    def any_nonfinite(self, names: Iterable[str]) -> bool:
        """Whether the last value of one of ``names`` was NaN or infinite."""
        return not self._nonfinite.isdisjoint(names)

    @property
    def in_nonfinite_run(self) -> bool:
        """Whether the last value of some metric was NaN or infinite."""
        return bool(self._nonfinite)

    def _rules_of(self, name: str) -> tuple[Rule, ...]:
        """The rules watching ``name``, decided at its first sight (``_feed_each`` inlines
        this in its loop over points)."""
        rules = self._rules.get(name)
        if rules is None:
            rules = self._rules[name] = self._rules_for(name)
        return rules

    def _rules_for(self, name: str) -> tuple[Rule, ...]:
        return tuple(
            RULES[part](name, getattr(self.config, part))
            for part, pattern in self._patterns
            if pattern.search(name)
        )

    def _watches_nan(self, name: str) -> bool:
        watched = self._nan_watched.get(name)
        if watched is None:
            pattern = self._nan_pattern
            watched = self._nan_watched[name] = bool(pattern and pattern.search(name))
        return watched

    def _anomaly(
        self,
        metric: str,
        step: int,
        timestamp: float,
        value: float,
        kind: str,
        severity: str,
        message: str,
    ) -> Anomaly:
        return {
            "run_id": self.run_id,
            "step": step,
            "metric": metric,
            "kind": kind,
            "severity": severity,
            "value": value,
            "message": message,
            "timestamp": timestamp,
        }


class LiveDetector:
    """Runs the rules on a run's points while it trains.

    Call :meth:`observe` with each journaled batch's points (and :meth:`prime` first with
    the stored points of a resumed run); or, when the rules run elsewhere (a run's journal
    writer runs them on its :class:`RuleStream`), :meth:`announce` what they found. The
    first anomaly of each
    ``(kind, metric)`` is logged as a warning on the ``tracelet`` logger; ``on_anomaly``,
    if given, is called with every anomaly (an exception it raises is logged, not raised).
    ``config`` is a :class:`DetectorConfig`, the thresholds of one rule, or None.

    After ``limit`` anomalies of one kind on one metric (a storm: the metric does not
    behave like the rule expects), that kind is muted on that metric for the rest of the
    run, with one warning (a rule's other kind is still watched); the offline
    :class:`AnomalyDetector` still finds them all.
    """

    def __init__(
        self,
        run_id: str,
        config: DetectorConfig | Thresholds | None = None,
        on_anomaly: Callable[[Anomaly], object] | None = None,
        limit: int | None = LIVE_LIMIT,
    ) -> None:
        self.run_id = run_id
        self.config = DetectorConfig.of(config)
        self.on_anomaly = on_anomaly
        self.limit = limit
        """Anomalies of one kind on one metric after which that check is muted."""
        self._stream = RuleStream(run_id, self.config, limit=limit)
        self._warned: set[tuple[str, str]] = set()
        self._announced: set[tuple[str, str, int]] = set()
        """``(kind, metric, step)`` of every anomaly announced (at most ``limit`` a check)."""
        self._muted: set[tuple[str, str]] = set()

    def observe(self, points: Iterable[MetricPoint]) -> list[Anomaly]:
        """Take points ``(name, value, step, timestamp)`` in logged order; return new anomalies.

        Anomalies come in the order they were found (the order of the points).
        """
        found = self._stream.feed(points)
        self.announce(found, self._stream.muted)
        return found

    def announce(self, found: Iterable[Anomaly], muted: Iterable[tuple[str, str]] = ()) -> None:
        """Warn about and call back with anomalies found by this detector's rules running
        elsewhere (the journal writer); ``muted`` are the ``(metric, kind)`` checks the last
        points muted. Each is announced once: a writer that replaces one that died watches
        again the points its predecessor had watched and not journaled."""
        for anomaly in found:
            key = (anomaly["kind"], anomaly["metric"], anomaly["step"])
            if key not in self._announced:
                self._announced.add(key)
                self._report(anomaly)
        for metric, kind in muted:
            if (metric, kind) in self._muted:
                continue
            self._muted.add((metric, kind))
            logger.warning(
                "tracelet: %d %s anomalies on %s in run %s; live detection of them is muted "
                "for this run (`tracelet anomalies RUN --auto` finds them all afterwards)",
                self._stream.limit,
                kind,
                metric,
                self.run_id,
            )

    def prime(self, points: Iterable[MetricPoint]) -> list[Anomaly]:
        """Feed history (a resumed run's stored points) silently: no warning, no callback.

        Afterwards the rules are where the offline detector's would be. Returns the
        anomalies the history holds.
        """
        return self._stream.feed(points)

    def _report(self, anomaly: Anomaly) -> None:
        key = (anomaly["kind"], anomaly["metric"])
        if key not in self._warned:
            self._warned.add(key)
            logger.warning(
                "tracelet: %s (%s) at step %s of run %s: %s; further %s anomalies of %s"
                " are not logged",
                anomaly["kind"],
                anomaly["severity"],
                anomaly["step"],
                self.run_id,
                anomaly["message"],
                anomaly["kind"],
                anomaly["metric"],
            )
        if self.on_anomaly is not None:
            try:
                self.on_anomaly(anomaly)
            except Exception:
                logger.exception("tracelet: the on_anomaly callback raised; anomaly %r", anomaly)


class AnomalyDetector:
    """Finds anomalies in stored runs by streaming their history through the live rules.

    ``storage`` is a :class:`~tracelet.storage.LocalStore`, an object whose ``store``
    attribute is one (such as a ``StorageBackend``), or the path of a store folder.
    ``config`` is a :class:`DetectorConfig`, the thresholds of one rule, or None (defaults).
    Every ``detect_*`` method returns anomaly dicts sorted by step, then metric, and raises
    :class:`~tracelet.exceptions.StoreError` for a run the store does not have.
    """

    def __init__(self, storage: Any, config: DetectorConfig | Thresholds | None = None) -> None:
        self.store, self._owned = _open_store(storage)
        self.config = DetectorConfig.of(config)

    def detect_all_anomalies(self, run_id: str) -> list[Anomaly]:
        """Every rule's anomalies."""
        return self._detect(run_id, PARTS)

    def detect_gradient_anomalies(self, run_id: str) -> list[Anomaly]:
        """Gradient-norm explosions and vanishing gradients."""
        return self._detect(run_id, ("gradient",))

    def detect_loss_anomalies(self, run_id: str) -> list[Anomaly]:
        """Loss spikes."""
        return self._detect(run_id, ("loss",))

    def detect_nan_inf(self, run_id: str) -> list[Anomaly]:
        """NaN and infinite values of any metric."""
        return self._detect(run_id, ("nan_inf",))

    def detect_memory_spikes(self, run_id: str) -> list[Anomaly]:
        """Memory climbing toward the device's limit."""
        return self._detect(run_id, ("memory",))

    def store_anomalies(self, anomalies: Iterable[Anomaly]) -> int:
        """Store anomalies in the local store; return how many were new (not stored before)."""
        return self.store.add_anomalies(anomalies)

    def close(self) -> None:
        """Close the store if this detector opened it from a path."""
        if self._owned:
            self.store.close()

    def __enter__(self) -> AnomalyDetector:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _detect(self, run_id: str, parts: Iterable[str]) -> list[Anomaly]:
        if self.store.get_run(run_id) is None:
            raise StoreError(f"no run {run_id!r} in the store at {self.store.path}")
        stream = RuleStream(run_id, self.config, parts)
        found: list[Anomaly] = []
        last = self.store.last_seq(run_id)
        seq = 0
        while seq < last:
            batches = self.store.read_batches(run_id, seq, last, limit=256)
            for batch in batches:
                found.extend(stream.feed(batch.metrics))
            seq = batches[-1].seq
        found.sort(key=lambda a: (a["step"], a["metric"], a["kind"]))  # the store's order
        return found


def _open_store(storage: Any) -> tuple[LocalStore, bool]:
    """The LocalStore behind ``storage``, and whether it was opened here."""
    if isinstance(storage, LocalStore):
        return storage, False
    inner = getattr(storage, "store", None)
    if isinstance(inner, LocalStore):
        return inner, False
    if isinstance(storage, str | os.PathLike):
        path = os.fspath(storage)
        if not os.path.isfile(os.path.join(path, DB_NAME)):
            raise StoreError(f"no Tracelet store at {path} (no {DB_NAME} there)")
        return LocalStore(path, recover=False), True
    raise TypeError(
        "storage must be a LocalStore, an object with a .store LocalStore (StorageBackend)"
        f" or the path of a store folder, not {type(storage).__name__}"
    )
