"""Amortized models y_theta(x): plain networks a user can deploy without RL code."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from .problems import ContextualProblem, make_problem

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


class AmortizedModel(nn.Module):
    """An MLP from context to solution, followed by the problem's canonical map."""

    def __init__(self, problem: ContextualProblem, hidden_sizes: tuple[int, ...] = (128, 128), activation: str = "relu"):
        super().__init__()
        self.problem = problem
        self.hidden_sizes = tuple(hidden_sizes)
        self.activation = activation
        self.net = mlp([problem.context_dim, *self.hidden_sizes, problem.solution_dim], activation)

    def forward(self, contexts: torch.Tensor) -> torch.Tensor:
        """Raw prediction; ``problem.objective`` applies the canonical map itself."""
        return self.net(contexts)

    @torch.no_grad()
    def predict(self, contexts: torch.Tensor) -> torch.Tensor:
        """Canonical solution y_theta(x) for a batch of contexts."""
        return self.problem.canonicalize(self.net(contexts))

    def save(self, path: str | Path, problem_settings: dict[str, Any]) -> None:
        torch.save(
            {
                "family": self.problem.family,
                "problem_settings": problem_settings,
                "hidden_sizes": self.hidden_sizes,
                "activation": self.activation,
                "state_dict": self.state_dict(),
            },
            path,
        )

    @classmethod
    def load(cls, path: str | Path, device: torch.device | str = "cpu") -> "AmortizedModel":
        """Rebuild a saved model, problem included: ``AmortizedModel.load(p).predict(x)``."""
        blob = torch.load(path, map_location=device, weights_only=False)
        problem = make_problem(blob["family"], **blob["problem_settings"])
        model = cls(problem, blob["hidden_sizes"], blob["activation"]).to(device)
        model.load_state_dict(blob["state_dict"])
        return model
