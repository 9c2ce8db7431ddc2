"""Types of the compiled hot path (``_hotpath.c``): ``Experiment``'s base class."""

from collections.abc import Callable
from typing import Any

class HotPath:
    """``log_metric``'s fast path, compiled; every other call goes to
    ``_log_metric_checked``."""

    _checked_names: set[str]
    _buffer: Any
    _iteration: int
    _append_metric: Callable[[Any], None]
    _capacity: int
    def log_metric(
        self, name: str, value: Any, iteration: int | None = None, step: int | None = None
    ) -> None:
        """Log one scalar. The step is ``iteration`` (or ``step=``), else the current
        iteration."""
