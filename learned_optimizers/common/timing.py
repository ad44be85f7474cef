"""Wall-clock timing that is honest on a GPU."""

from __future__ import annotations

import time
from typing import Any, Callable

import torch


def synchronize(device: torch.device | str) -> None:
    """Wait for the device's queued work, so a clock read afterwards measures it (no-op on the CPU)."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], Any], device: torch.device | str) -> tuple[Any, float]:
    """fn()'s result and the seconds it took, with the device synchronized before both clock reads."""
    synchronize(device)
    start = time.perf_counter()
    out = fn()
    synchronize(device)
    return out, time.perf_counter() - start
