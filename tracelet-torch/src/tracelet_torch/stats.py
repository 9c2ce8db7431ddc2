"""Per-tensor statistics computed on the tensors' device, with no host synchronization.

Norms come from PyTorch's fused multi-tensor kernels (``torch._foreach_norm``); the mean
and standard deviation are one single-pass reduction per tensor (``torch.std_mean``, exact
even when the mean dwarfs the spread), the non-finite counts two more (on the CPU, where
reading the norms waits for nothing, they are skipped when every norm is finite).
Everything is stacked into one ``(tensors, STATS)`` float32 tensor, so reading it back is
one copy, made off the training thread.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

STATS = ("norm", "mean", "std", "max_abs", "nan_count", "inf_count")
"""The columns of :func:`tensor_stats`, in order."""

_PRECISE = (torch.float32, torch.float64)


def tensor_stats(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    """Each tensor's L2 norm, mean, standard deviation (n - 1; 0 for one element),
    largest absolute value and counts of NaN and infinite elements: a float32
    ``(len(tensors), 6)`` tensor on the tensors' device (all on one device). Half- and
    bfloat16-precision tensors are measured in float32."""
    tensors = [_precise(t) for t in tensors]
    norms = _stacked(torch._foreach_norm(tensors, 2))
    max_abs = _stacked(torch._foreach_norm(tensors, math.inf))
    spreads = [torch.std_mean(t, correction=int(t.numel() > 1)) for t in tensors]
    stds = _stacked([std for std, _ in spreads])
    means = _stacked([mean for _, mean in spreads])
    if norms.device.type == "cpu" and bool(torch.isfinite(norms).all()):
        nans = infs = torch.zeros_like(norms)  # every norm finite: nothing to count
    else:
        nans = _stacked([torch.isnan(t).sum() for t in tensors])
        infs = _stacked([torch.isinf(t).sum() for t in tensors])
    return torch.stack([norms, means, stds, max_abs, nans, infs], dim=1)


def _precise(tensor: torch.Tensor) -> torch.Tensor:
    return tensor if tensor.dtype in _PRECISE else tensor.float()


def _stacked(values: Sequence[torch.Tensor]) -> torch.Tensor:
    return torch.stack([value.to(torch.float32) for value in values])


def update_ratios(before: Sequence[torch.Tensor], after: Sequence[torch.Tensor]) -> torch.Tensor:
    """``|after - before| / |before|`` per tensor (L2 norms, float32), computed in place of
    ``before`` (copies of the weights, spent here)."""
    before = [_precise(t) for t in before]
    norms = _stacked(torch._foreach_norm(before, 2))
    torch._foreach_sub_(before, [_precise(t) for t in after])
    changes = _stacked(torch._foreach_norm(before, 2))
    return changes / norms.clamp(min=torch.finfo(torch.float32).tiny)
