"""Tracer's name for a run: ``TrainingTracer`` is what ``tracelet.init`` returns.

For code written against Tracer's type hints
(``from tracelet.core.tracer import TrainingTracer``).
"""

from __future__ import annotations

from typing import TypeAlias

from tracelet.core.experiment import Experiment

TrainingTracer: TypeAlias = Experiment
"""The run ``tracelet.init`` returns (an :class:`~tracelet.core.experiment.Experiment`)."""

__all__ = ["TrainingTracer"]
