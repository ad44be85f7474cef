"""Feature transforms shared by the learned optimizers' observations."""

from __future__ import annotations

import torch


def compress(v: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
    """asinh(v), computed in ``dtype`` (default: v's): history ratios of 1e6 stay O(10).

    Written as sign(v) log1p(|v| + |v| (|v| / (1 + hypot(|v|, 1)))), the textbook form that keeps relative
    accuracy for tiny |v| and cannot overflow: on a CPU torch's asinh is a scalar loop (measured 1.5 ms on
    330k float32 values against 0.5 ms for this form), and a learned fixed-point step compresses its whole
    history. Differentiable."""
    v = v.to(dtype) if dtype is not None else v
    a = v.abs()
    if torch.is_grad_enabled() and v.requires_grad:
        return torch.copysign(torch.log1p(a + a * (a / (1.0 + torch.hypot(a, a.new_ones(()))))), v)
    out = torch.hypot(a, a.new_ones(())).add_(1.0)  # the same operations in place: two arrays instead of seven
    return torch.div(a, out, out=out).mul_(a).add_(a).log1p_().copysign_(v)
