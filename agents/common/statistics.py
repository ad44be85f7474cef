"""Aggregates the benchmarks report: the shifted geometric mean and reach statistics (median, SGM, fraction reached)."""

from __future__ import annotations

import numpy as np
import torch


def shifted_geometric_mean(values: list[float] | np.ndarray, shift: float = 10.0) -> float:
    """exp(mean(log(v + shift))) - shift: the aggregate used by qpbenchmark and the OSQP benchmarks."""
    v = np.asarray(values, dtype=float)
    return float(np.exp(np.mean(np.log(v + shift))) - shift) if v.size else float("nan")


def reach_statistics(counts: "np.ndarray | torch.Tensor", budget: float) -> tuple[float, float, float]:
    """Of per-problem iteration counts to reach a level (inf where never): the median, the shifted geometric
    mean with unreached counted at ``budget``, and the fraction that reached it. One rule for every benchmark."""
    c = torch.as_tensor(counts, dtype=torch.float64).cpu()
    reached = torch.isfinite(c)
    return (float(c.median()), shifted_geometric_mean(torch.where(reached, c, float(budget)).numpy()),
            float(reached.double().mean()))
