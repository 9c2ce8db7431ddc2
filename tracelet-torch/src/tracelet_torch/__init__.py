"""Tracelet's PyTorch integration: TensorBoard capture, ``watch``, tensors as metric values,
optimizer automagic, and the Lightning and Transformers callbacks
(``from tracelet.integrations import ...``)."""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"


def watch(experiment: Any, model: Any, **options: Any) -> Any:
    """Watch ``model`` in ``experiment`` (see :func:`tracelet_torch.watching.watch`)."""
    from tracelet_torch import watching

    return watching.watch(experiment, model, **options)


def unwatch(experiment: Any, model: Any = None) -> None:
    """Stop watching ``model`` (default: every model) in ``experiment``."""
    from tracelet_torch import watching

    watching.unwatch(experiment, model)
