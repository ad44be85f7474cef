"""Solving a long batch a chunk at a time: what the QP and SCS cores do on a CPU, where one chunk's data stays in
the cache and a whole batch of thousands does not."""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, TypeVar

import torch

Result = TypeVar("Result")


def chunk_size(chunk: int | None, total: int, device: torch.device, cpu_chunk: int) -> int:
    """``chunk`` as given (at least 1, or a named error), else ``cpu_chunk`` on a CPU and everything at once on a GPU."""
    if chunk is None:
        return cpu_chunk if device.type == "cpu" else max(total, 1)
    if chunk < 1:
        raise ValueError(f"chunk={chunk}: at least 1")
    return chunk


def solve_in_chunks(total: int, chunk: int, solve: Callable[[int, int], Result], summed: tuple[str, ...]) -> Result:
    """``solve(start, stop)`` on consecutive ranges of at most ``chunk`` of ``total`` items, the results (a dataclass of
    per-item tensors) concatenated in order; the fields in ``summed`` (seconds) are added up instead."""
    if total <= chunk:
        return solve(0, total)
    parts = [solve(i, min(i + chunk, total)) for i in range(0, total, chunk)]
    values: dict[str, Any] = {}
    for field in dataclasses.fields(parts[0]):
        pieces = [getattr(p, field.name) for p in parts]
        values[field.name] = sum(pieces) if field.name in summed else torch.cat(pieces)
    return type(parts[0])(**values)
