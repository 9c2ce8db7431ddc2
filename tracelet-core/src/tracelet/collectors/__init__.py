"""Built-in collectors: system usage, the environment, and git state.

Each registers through :func:`tracelet.hookspecs.tracelet_register_collectors`, like a
third-party collector would, and is switched on by its setting (``track_system``,
``track_env``, ``track_git``).
"""

from __future__ import annotations

from tracelet import __version__
from tracelet.hookspecs import hookimpl
from tracelet.plugins import CollectorRegistration


@hookimpl
def tracelet_register_collectors() -> list[CollectorRegistration]:
    """Register the system, environment and git collectors."""
    from tracelet.collectors.environment import EnvironmentCollector
    from tracelet.collectors.git import GitCollector
    from tracelet.collectors.system import SystemCollector

    return [
        CollectorRegistration(
            "system", SystemCollector, "track_system", "CPU, memory, GPUs", __version__
        ),
        CollectorRegistration(
            "env", EnvironmentCollector, "track_env", "Python and platform", __version__
        ),
        CollectorRegistration(
            "git", GitCollector, "track_git", "commit, branch, changes", __version__
        ),
    ]
