"""Hook specifications: the whole contract between Tracelet and its plugins.

A plugin is a module (or object) with functions marked ``@tracelet.hookimpl`` whose names
are the hooks below, registered under the entry-point group ``tracelet``::

    # pyproject.toml of your distribution
    [project.entry-points.tracelet]
    mybackend = "my_package.plugin"

The registration hooks return records (:class:`~tracelet.plugins.BackendRegistration`
and friends) describing what the plugin provides; Tracelet decides when to build and run
them. The lifecycle hooks announce runs. Metric traffic never passes through pluggy: it
goes through the orchestrator, so a hook costs nothing per logged point.

Each hook's docstring is its documentation; ``docs/plugins.md`` lists them all.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    from tracelet.core.experiment import Experiment
    from tracelet.plugins import (
        BackendRegistration,
        CollectorRegistration,
        FrameworkRegistration,
    )
    from tracelet.records import RunStatus

PROJECT_NAME = "tracelet"
"""The pluggy project name, which is also the entry-point group."""

hookspec = pluggy.HookspecMarker(PROJECT_NAME)


class HookimplMarker(pluggy.HookimplMarker):
    """Marks a function (or method) as the implementation of the Tracelet hook of the same
    name: ``@hookimpl`` above ``def tracelet_register_backends(): ...``. pluggy's options
    apply (``@hookimpl(tryfirst=True)``)."""

    __slots__ = ()


hookimpl = HookimplMarker(PROJECT_NAME)


@hookspec
def tracelet_register_backends() -> Sequence[BackendRegistration]:
    """Return the backends this plugin provides.

    Called whenever Tracelet looks its backends up (when a run starts, by ``tracelet
    sync``); return the same records each time. Each
    :class:`~tracelet.plugins.BackendRegistration` names the backend (the string users
    pass as ``backend=``), the factory that builds one
    :class:`~tracelet.plugins.BackendPlugin` per run, and its typed options
    (:class:`~tracelet.plugins.Option`), so that ``config={"tracking_uri": ...}`` and
    ``config={"mlflow_tracking_uri": ...}`` reach it, checked. Two plugins registering the
    same name is a ConfigurationError naming both.
    """


@hookspec
def tracelet_register_collectors() -> Sequence[CollectorRegistration]:
    """Return the collectors this plugin provides.

    A collector samples something outside the training loop (CPU, GPU, git state) on its
    own interval. Each :class:`~tracelet.plugins.CollectorRegistration` names it and
    gives the factory for a :class:`~tracelet.plugins.CollectorPlugin`.
    """


@hookspec
def tracelet_register_frameworks() -> Sequence[FrameworkRegistration]:
    """Return the framework integrations this plugin provides.

    An integration hooks a library's own logging (TensorBoard's ``SummaryWriter``,
    Lightning's ``self.log``) into the active experiment. Each
    :class:`~tracelet.plugins.FrameworkRegistration` gives the factory for a
    :class:`~tracelet.plugins.FrameworkPlugin`, attached at start and detached at stop.
    """


@hookspec
def tracelet_run_started(experiment: Experiment) -> None:
    """Announce that ``experiment`` has started and accepts records.

    Called on the thread that started the run, after every backend has been created. An
    exception raised here is reported once and does not stop the run.
    """


@hookspec
def tracelet_run_finished(experiment: Experiment, status: RunStatus) -> None:
    """Announce that ``experiment`` has ended with ``status``.

    Called after every record has been journaled and offered to the backends (delivery
    may still be pending for a backend that is down). An exception raised here is reported
    once and does not change the run's status.
    """
