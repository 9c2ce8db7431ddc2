"""Callbacks and loggers for training frameworks, as Tracer's ``tracer.integrations``::

    from tracelet.integrations import LightningCallback, TraceletLogger, TransformersCallback

They live in the ``tracelet-torch`` distribution and are imported on first use, so
``import tracelet`` never imports torch, Lightning or Transformers.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "LightningCallback": ("tracelet_torch.lightning", "lightning"),
    "TraceletLogger": ("tracelet_torch.lightning", "lightning"),
    "TransformersCallback": ("tracelet_torch.huggingface", "transformers"),
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'tracelet.integrations' has no attribute {name!r}")
    module, framework = _EXPORTS[name]
    try:
        importlib.import_module("tracelet_torch")
    except ImportError:
        from tracelet.core.registry import how_to_install

        raise ImportError(
            f"tracelet.integrations.{name} is part of the torch integration; install "
            f"tracelet-torch {how_to_install('tracelet-torch')}"
        ) from None
    try:
        value = getattr(importlib.import_module(module), name)
    except ImportError as error:
        raise ImportError(
            f"tracelet.integrations.{name} needs {framework}, which could not be imported "
            f"({error}): pip install {framework}"
        ) from None
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__


if TYPE_CHECKING:
    from tracelet_torch.huggingface import TransformersCallback
    from tracelet_torch.lightning import LightningCallback, TraceletLogger
