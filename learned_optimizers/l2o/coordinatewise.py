"""A learned optimizer as a plain torch module: one small network applied to every coordinate.

``CoordinatewiseUpdate`` maps each coordinate's features (``l2o.observe``) to
that coordinate's correction of Adam's step. The same weights serve every
coordinate, so one trained update runs on parameter vectors of any size, and
permuting the coordinates permutes the update. The output layer starts at
zero: an untrained update *is* tuned Adam. Deploy without any RL code::

    opt = CoordinatewiseUpdate.load("runs/l2o-logreg/optimizer.pt")   # or CoordinatewiseUpdate.shipped("logreg")
    trace = opt.solve(x, phi0, steps=100)
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from torch import nn

from learned_optimizers.common.files import read_model_file, rebuild_model, save_model_file, shipped_model_path
from learned_optimizers.common.networks import mlp
from learned_optimizers.l2o import core as l2o
from learned_optimizers.l2o.classical import OptimizerTrace
from learned_optimizers.l2o.tasks import TrainingTaskFamily, make_tasks

#: the updates trained with configs/l2o_<family>_objective.yaml, shipped inside the package
SHIPPED = Path(__file__).parent / "models"


class CoordinatewiseUpdate(nn.Module):
    def __init__(self, family: str, task_settings: dict[str, Any], hidden_sizes: tuple[int, ...] = (32, 32),
                 activation: str = "relu") -> None:
        super().__init__()
        self.family, self.task_settings = family, dict(task_settings)
        self.hidden_sizes, self.activation = tuple(hidden_sizes), activation
        self.tasks: TrainingTaskFamily = make_tasks(family, **task_settings)
        self.net = mlp([l2o.features_per_coordinate(self.tasks.settings), *self.hidden_sizes, 1], activation)
        nn.init.zeros_(self.net[-1].weight)
        nn.init.zeros_(self.net[-1].bias)
        self.learning_rate = l2o.base_learning_rate(self.tasks)

    def act(self, observation: torch.Tensor) -> torch.Tensor:
        """(B, p, F) features -> (B, p) corrections, bounded like the env's action space."""
        out = self.net(observation.to(self.net[0].weight.dtype)).squeeze(-1)
        return self.tasks.settings.max_correction * torch.tanh(out)

    def unroll(self, x: torch.Tensor, phi0: torch.Tensor, steps: int, tasks: TrainingTaskFamily | None = None) -> torch.Tensor:
        """Differentiable f(phi_k) / f(phi_0), (B, steps + 1), on the model's family or another one."""
        return l2o.rollout(tasks or self.tasks, x, phi0, steps, self.act, self.learning_rate)

    @torch.no_grad()
    def solve(self, x: torch.Tensor, phi0: torch.Tensor, steps: int, tasks: TrainingTaskFamily | None = None) -> OptimizerTrace:
        """Optimize every task of ``x`` from ``phi0``; ``tasks`` (default: the trained family) may be larger or another family."""
        return l2o.solve(tasks or self.tasks, x, phi0, steps, self.act, self.learning_rate,
                         feature_dtype=self.net[0].weight.dtype)

    def save(self, path: str | Path) -> None:
        save_model_file({"family": self.family, "task_settings": self.task_settings, "hidden_sizes": self.hidden_sizes,
                         "activation": self.activation, "learning_rate": self.learning_rate,
                         "state_dict": self.state_dict()}, path)

    @classmethod
    def load(cls, path: str | Path, device: torch.device | str = "cpu") -> "CoordinatewiseUpdate":
        blob = read_model_file(path, device, "a learned optimizer",
                               ("family", "task_settings", "hidden_sizes", "activation", "learning_rate", "state_dict"))
        model = rebuild_model(path, "a learned optimizer", lambda: cls(
            blob["family"], blob["task_settings"], tuple(blob["hidden_sizes"]), blob["activation"]), blob["state_dict"])
        model.learning_rate = blob["learning_rate"]
        return model.to(device)

    @classmethod
    def shipped(cls, family: str = "logreg", device: torch.device | str = "cpu") -> "CoordinatewiseUpdate":
        """The update shipped for ``family`` (``logreg``: ``configs/l2o_logreg_objective.yaml``, 800 unrolls)."""
        return cls.load(shipped_model_path(SHIPPED, "l2o_", family, "learned optimizer"), device)

    @classmethod
    def for_tasks(cls, tasks: TrainingTaskFamily, **kwargs: Any) -> "CoordinatewiseUpdate":
        return cls(tasks.family, asdict(tasks.settings), **kwargs)
