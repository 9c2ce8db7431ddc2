"""Tensors as metric values: ``log_metric("loss", loss)`` without waiting for the GPU.

A CPU tensor is read at once (no device to wait for). A tensor on a CUDA device is copied
into pinned host memory without blocking, behind a CUDA event recorded on the caller's
stream; the dispatcher thread waits for that event and reads the copy. The training thread
never synchronizes, and the copy holds neither the device tensor nor its autograd graph.

Nothing here imports torch: a run whose script never imports it pays nothing.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

from tracelet.plugins import FrameworkPlugin, PendingValue

if TYPE_CHECKING:
    import torch


class CopiedScalar:
    """A one-element CUDA tensor on its way to the host: ``result()`` waits for the copy."""

    __slots__ = ("_event", "_host")

    def __init__(self, tensor: torch.Tensor) -> None:
        cuda = sys.modules["torch"].cuda
        stream = cuda.current_stream(tensor.device)  # the tensor's device, not the current
        self._host = tensor.detach().to("cpu", non_blocking=True)  # pinned, in stream order
        self._event = cuda.Event()
        self._event.record(stream)

    def result(self) -> float:
        """The value, once the copy has landed (called on the dispatcher thread)."""
        self._event.synchronize()
        return float(self._host)


def scalar_value(value: Any) -> float | PendingValue | None:
    """A one-element, zero-dimensional tensor as a float (on the CPU) or a
    :class:`CopiedScalar` (on a CUDA device); None for anything else, which then gets
    Tracelet's own checks and error messages."""
    torch = sys.modules.get("torch")
    if torch is None or not isinstance(value, torch.Tensor) or value.dim():
        return None
    if value.is_cuda:
        return CopiedScalar(value)
    return value.item()  # on the CPU nothing waits (other devices: the copy waits here)


class TensorValues(FrameworkPlugin):
    """Lets every metric call of a run take a 0-d tensor (attached to every run)."""

    def attach(self, experiment: Any) -> None:
        """Nothing is installed: Tracelet asks :meth:`metric_value` about non-numbers."""

    def detach(self) -> None:
        """Nothing was installed."""

    metric_value = staticmethod(scalar_value)  # one call less on the training thread
