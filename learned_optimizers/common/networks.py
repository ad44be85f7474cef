"""Building blocks of deployable models: MLPs, their activations, and a weights-only reader for model files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn


def read_model_file(path: str | Path, device: torch.device | str, what: str, keys: tuple[str, ...]) -> dict[str, Any]:
    """The dict a model's ``save`` wrote, read with torch's weights-only loader (a file cannot run code).

    Errors name the file and say what is wrong: missing, unreadable, not a dict, or lacking one of ``keys``.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{str(path)!r}: no {what} file there")
    try:
        blob = torch.load(path, map_location=device, weights_only=True)
    except Exception as err:  # not a torch file, or one holding arbitrary objects
        raise ValueError(f"{str(path)!r} is not {what} file: torch cannot read it ({err.__class__.__name__})") from None
    if not isinstance(blob, dict):
        raise ValueError(f"{str(path)!r} is not {what} file: it holds a {type(blob).__name__}, not a dict")
    for key in keys:
        if key not in blob:
            raise ValueError(f"{str(path)!r} is not {what} file: it has no {key!r}")
    return blob


ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh, "elu": nn.ELU, "silu": nn.SiLU}


def mlp(sizes: list[int], activation: str = "relu") -> nn.Sequential:
    """Linear layers with ``activation`` between them (none after the last)."""
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation={activation!r}; allowed: {', '.join(ACTIVATIONS)}")
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(ACTIVATIONS[activation]())
    return nn.Sequential(*layers)
