"""``AmortizedModel``: an MLP from context to solution for any problem family, deployable without RL code.

It sits at the layer's top level, next to ``families.py``, because loading a
saved model rebuilds its problem family by name through that registry.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from learned_optimizers.common.files import read_model_file, rebuild_model, save_model_file
from learned_optimizers.common.networks import mlp
from learned_optimizers.common.problem import ContextualProblem
from learned_optimizers.families import make_problem


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
        return self.net(self.problem.model_features(contexts))

    @torch.no_grad()
    def predict(self, contexts: torch.Tensor) -> torch.Tensor:
        """Canonical solution y_theta(x) for a batch of contexts."""
        return self.problem.canonicalize(self(contexts))

    def save(self, path: str | Path, problem_settings: dict[str, Any]) -> None:
        save_model_file(
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
        blob = read_model_file(path, device, "an amortized model",
                               ("family", "problem_settings", "hidden_sizes", "activation", "state_dict"))

        def build() -> AmortizedModel:
            problem = make_problem(blob["family"], **blob["problem_settings"])
            return cls(problem, tuple(blob["hidden_sizes"]), blob["activation"])

        return rebuild_model(path, "an amortized model", build, blob["state_dict"]).to(device)
