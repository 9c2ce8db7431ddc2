"""Runs the enabled collectors on one background thread, each on its own interval.

Their first round (every one-shot collector, and each periodic one's first sample) is done
before :meth:`CollectorRunner.start` returns, within :data:`FIRST_ROUND_WAIT`: that work
(listing installed packages, reading git) then holds the GIL during start-up rather than
during the training loop's first steps.

A one-shot collector (``interval = None``) runs once at start, however short the run: its
values become parameters ``<name>/<key>`` (long strings become texts, a ``TextFile`` a text
artifact). A periodic collector's values become metrics ``<name>/<key>`` at the run's
current step, from start on; a run that ends before its first sample gets one at stop. A
failure is reported once (a periodic collector is tried again at its next turn); it never
reaches the training thread. A collector still busy when :meth:`CollectorRunner.stop` stops
waiting is left to finish on its own: what it logs may still reach the run while the run
settles, and its failures from then on (the run has ended) are not reported.
"""

from __future__ import annotations

import tempfile
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tracelet.plugins import CollectorPlugin, CollectorRegistration, TextFile
from tracelet.reporting import report_once
from tracelet.values import to_metric_value

if TYPE_CHECKING:
    from tracelet.core.experiment import Experiment

LONG_TEXT = 500
"""One-shot string values longer than this are logged as texts, not parameters."""
FIRST_ROUND_WAIT = 2.0
"""Seconds :meth:`CollectorRunner.start` waits for the collectors' first round; a collector
slower than that finishes it on the collector thread, the run going on meanwhile."""


class CollectorRunner:
    """Drives collectors for one experiment until :meth:`stop`."""

    def __init__(self, experiment: Experiment, collectors: Mapping[str, CollectorPlugin]) -> None:
        self.experiment = experiment
        self.collectors = dict(collectors)
        self._stop = threading.Event()
        self._abandoned = False
        self._first_round = threading.Event()
        self._thread = threading.Thread(target=self._main, name="tracelet-collectors", daemon=True)

    @classmethod
    def build(
        cls,
        experiment: Experiment,
        registrations: Mapping[str, CollectorRegistration],
        config: Mapping[str, Any],
    ) -> CollectorRunner:
        """The runner for every registration whose setting is on in ``config``."""
        collectors = {}
        for name, registration in registrations.items():
            if registration.setting is not None and not config.get(registration.setting, True):
                continue
            try:
                collector = registration.build(config)
            except Exception as error:
                report_once(f"tracelet collector {name!r}", f"could not be created ({error!r})")
                continue
            collectors[name] = collector
        return cls(experiment, collectors)

    def start(self) -> None:
        """Start the collector thread (if any collector is enabled) and wait for its first
        round (up to :data:`FIRST_ROUND_WAIT` seconds)."""
        if self.collectors:
            self._thread.start()
            self._first_round.wait(FIRST_ROUND_WAIT)

    def stop(self, timeout: float = 5.0) -> None:
        """Stop collecting and release every collector."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)
            self._abandoned = self._thread.is_alive()

    def _main(self) -> None:
        try:
            self._collect()
        finally:
            self._first_round.set()

    def _collect(self) -> None:
        started = {n: c for n, c in self.collectors.items() if self._call(n, c.start)}
        due: dict[str, float] = {}
        for name, collector in started.items():
            if collector.interval is None:
                self._sample(name, collector)
            else:
                due[name] = time.monotonic()
        unsampled = set(due)
        while due and not self._stop.is_set():
            name = min(due, key=due.__getitem__)
            if not unsampled:
                self._first_round.set()
            if self._stop.wait(max(0.0, due[name] - time.monotonic())):
                break
            self._sample(name, started[name])
            unsampled.discard(name)
            due[name] = time.monotonic() + (started[name].interval or 0.0)
        for name in unsampled:  # a run shorter than its one-shot collectors
            self._sample(name, started[name])
        for name, collector in started.items():
            self._call(name, collector.stop)

    def _sample(self, name: str, collector: CollectorPlugin) -> None:
        values: dict[str, Any] = {}
        if not self._call(name, lambda: values.update(collector.collect())):
            return
        experiment = self.experiment
        if collector.interval is not None:
            sample = {f"{name}/{k}": v for k, v in values.items()}
            if self._call(name, lambda: experiment.log_metrics(sample)):  # (all numbers, then)
                floats = {k: to_metric_value(k, v) for k, v in sample.items()}
                experiment.latest_system = {**experiment.latest_system, **floats}
            return
        files = {k: v for k, v in values.items() if isinstance(v, TextFile)}
        long = {k: v for k, v in values.items() if isinstance(v, str) and len(v) > LONG_TEXT}
        params = {f"{name}/{k}": v for k, v in values.items() if k not in long | files}
        self._call(name, lambda: experiment.log_params(params) if params else None)
        for key, text in long.items():
            self._call(name, lambda key=key, text=text: experiment.log_text(f"{name}/{key}", text))
        for file in files.values():
            self._call(name, lambda file=file: self._log_text_file(name, file))

    def _log_text_file(self, name: str, file: TextFile) -> None:
        with tempfile.TemporaryDirectory(prefix="tracelet-") as folder:
            path = Path(folder) / file.filename
            path.write_text(file.text, encoding="utf-8")
            self.experiment.log_artifact(path, f"{name}/{file.filename}")  # copied in the call

    def _call(self, name: str, action: Any) -> bool:
        try:
            action()
        except Exception as error:
            if self._abandoned:  # the run has ended without it
                return False
            report_once(f"tracelet collector {name!r}", f"failed ({error!r}); will retry")
            return False
        return True
