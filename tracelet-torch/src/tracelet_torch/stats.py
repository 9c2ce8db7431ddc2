"""Per-tensor statistics computed on the tensors' device, with no host synchronization.

Norms come from PyTorch's fused multi-tensor kernels (``torch._foreach_norm``); sums and
non-finite counts are one small reduction per tensor (on the CPU, where reading the norms
waits for nothing, the counts are skipped when every norm is finite). Everything is
stacked into a single ``(tensors, STATS)`` float32 tensor, so reading it back is one copy,
made off the training thread.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

STATS = ("norm", "mean", "std", "max_abs", "nan_count", "inf_count")
"""The columns of :func:`tensor_stats`, in order."""


def tensor_stats(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    """Each tensor's L2 norm, mean, standard deviation (n - 1), largest absolute value
    and counts of NaN and infinite elements: a float32 ``(len(tensors), 6)`` tensor on
    the tensors' device (all on one device)."""
    f32 = torch.float32
    norms = torch.stack(torch._foreach_norm(tensors, 2, dtype=f32))
    max_abs = torch.stack(torch._foreach_norm(tensors, math.inf, dtype=f32))
    sums = torch.stack([t.sum(dtype=f32) for t in tensors])
    if norms.device.type == "cpu" and bool(torch.isfinite(norms).all()):
        nans = infs = torch.zeros_like(norms)  # every norm finite: nothing to count (no sync)
    else:
        nans = torch.stack([torch.isnan(t).sum() for t in tensors]).to(f32)
        infs = torch.stack([torch.isinf(t).sum() for t in tensors]).to(f32)
    sizes = torch.tensor([t.numel() for t in tensors], dtype=f32, device=norms.device)
    means = sums / sizes
    variance = (norms.square() - sums * means) / (sizes - 1).clamp(min=1)
    stds = variance.clamp(min=0).sqrt()
    return torch.stack([norms, means, stds, max_abs, nans, infs], dim=1)


def update_ratios(before: Sequence[torch.Tensor], after: Sequence[torch.Tensor]) -> torch.Tensor:
    """``|after - before| / |before|`` per tensor (L2 norms, float32), computed in place of
    ``before``, which is spent."""
    norms = torch.stack(torch._foreach_norm(before, 2, dtype=torch.float32))
    torch._foreach_sub_(before, after)
    changes = torch.stack(torch._foreach_norm(before, 2, dtype=torch.float32))
    return changes / norms.clamp(min=torch.finfo(torch.float32).tiny)


def total_norm(norms: torch.Tensor) -> torch.Tensor:
    """The L2 norm of the whole set, from the per-tensor norms (as ``clip_grad_norm_``)."""
    return norms.square().sum().sqrt()
