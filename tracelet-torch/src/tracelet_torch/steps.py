"""Which step a hook's records belong to.

A hook (an optimizer step) does not know the loop's step. The run's
current step is used when the loop keeps it (``tracelet.step()``, ``set_iteration``, the
Lightning and Transformers integrations); a loop that never advances it gets the hook's
own count instead, so its records still form a curve rather than piling up at step 0.
"""

from __future__ import annotations

from typing import Any


def current_step(experiment: Any, counted: int) -> int:
    """The run's current step, or ``counted`` (0-based) while the run's step is 0."""
    return experiment.iteration or counted
