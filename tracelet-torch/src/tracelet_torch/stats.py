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
    ``(len(tensors), 6)`` tensor on the tensors' device (all on one device)."""
    f32 = torch.float32
    norms = torch.stack(torch._foreach_norm(tensors, 2, dtype=f32))
    max_abs = torch.stack(torch._foreach_norm(tensors, math.inf, dtype=f32))
    spreads = [
        torch.std_mean(t if t.dtype in _PRECISE else t.float(), correction=int(t.numel() > 1))
        for t in tensors
    ]
    stds = torch.stack([std.to(f32) for std, _ in spreads])
    means = torch.stack([mean.to(f32) for _, mean in spreads])
    if norms.device.type == "cpu" and bool(torch.isfinite(norms).all()):
        nans = infs = torch.zeros_like(norms)  # every norm finite: nothing to count
    else:
        nans = torch.stack([torch.isnan(t).sum() for t in tensors]).to(f32)
        infs = torch.stack([torch.isinf(t).sum() for t in tensors]).to(f32)
    return torch.stack([norms, means, stds, max_abs, nans, infs], dim=1)


def update_ratios(before: Sequence[torch.Tensor], after: Sequence[torch.Tensor]) -> torch.Tensor:
    """``|after - before| / |before|`` per tensor (L2 norms, float32), computed in place of
    ``before``, which is spent."""
    before = list(before)
    norms = torch.stack(torch._foreach_norm(before, 2, dtype=torch.float32))
    torch._foreach_sub_(before, list(after))
    changes = torch.stack(torch._foreach_norm(before, 2, dtype=torch.float32))
    return changes / norms.clamp(min=torch.finfo(torch.float32).tiny)
