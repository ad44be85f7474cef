"""Helpers for traces of iterative solvers: per-row first hits along a recorded trace."""

from __future__ import annotations

import torch


def first_hit(hit: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """For (B, T + 1) flags along a trace: the first index where each row holds (0 where none) and whether any does."""
    return hit.to(torch.uint8).argmax(1), hit.any(1)
