"""Learned fixed-point accelerators (NeuralFP, HyperAnderson) as plain torch modules.

A ``FixedPointAccelerator`` has an initializer x -> y_0 and an update network
observation -> action, in one of the two action modes of
``learned_optimizers.fixed_point``. Both output layers start at zero, so an
untrained accelerator *is* the classical method (y_0 = default start, zero
action) and training can only move away from it where that pays. Deploy with
``FixedPointAccelerator.load(path).solve(x, steps)``: no RL code involved.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from torch import nn

from learned_optimizers.common.files import read_model_file, rebuild_model, save_model_file, shipped_model_path
from learned_optimizers.common.fixed_point_map import FixedPointMap
from learned_optimizers.common.networks import mlp
from learned_optimizers.families import make_map
from learned_optimizers.fixed_point import core as fp


#: accelerators shipped with the package, ``neural_fp_<family>.pt``
SHIPPED = Path(__file__).parent / "models"


def _zero_last(net: nn.Sequential) -> nn.Sequential:
    last = net[-1]
    nn.init.zeros_(last.weight)
    nn.init.zeros_(last.bias)
    return net


class FixedPointAccelerator(nn.Module):
    def __init__(self, family: str, map_settings: dict[str, Any], hidden_sizes: tuple[int, ...] = (256, 256),
                 activation: str = "relu", learn_init: bool = True) -> None:
        super().__init__()
        self.family, self.map_settings = family, dict(map_settings)
        self.hidden_sizes, self.activation, self.learn_init = tuple(hidden_sizes), activation, learn_init
        self.map: FixedPointMap = make_map(family, **map_settings)
        self.task = self.map.settings
        obs_dim, act_dim = fp.observation_dim(self.map, self.task), fp.action_dim(self.map, self.task)
        self.update_net = _zero_last(mlp([obs_dim, *self.hidden_sizes, act_dim], activation))
        self.init_net = _zero_last(mlp([self.map.context_dim, *self.hidden_sizes, self.map.dim], activation)) if learn_init else None

    # ------------------------------------------------------------ the two learned parts
    def initial_iterate(self, x: torch.Tensor) -> torch.Tensor | None:
        """y_0(x), or ``None`` for the classical start."""
        if self.init_net is None:
            return None
        return self.map.initial_iterate(x) + self.init_net(x.float()).to(x.dtype)

    def act(self, observation: torch.Tensor) -> torch.Tensor:
        """The action, bounded like the env's action space."""
        return self.task.max_correction * torch.tanh(self.update_net(observation.float()))

    # ------------------------------------------------------------ solving
    def unroll(self, x: torch.Tensor, steps: int) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Differentiable: residual ratios (B, steps + 1) and the iterates y_0..y_steps."""
        return fp.rollout(self.map, x, self.task, steps, self.act, self.initial_iterate(x))

    @torch.no_grad()
    def solve(self, x: torch.Tensor, steps: int, safeguard: float | None = None,
              stop_at: float | None = None) -> fp.FixedPointTrace:
        """At most ``steps`` steps from the learned start (``fp.solve`` says what ``safeguard`` and ``stop_at`` do)."""
        return fp.solve(self.map, x, self.task, steps, policy=self.act, y0=self.initial_iterate(x), safeguard=safeguard,
                        stop_at=stop_at)

    # ------------------------------------------------------------ files
    def save(self, path: str | Path) -> None:
        save_model_file({"family": self.family, "map_settings": self.map_settings, "hidden_sizes": self.hidden_sizes,
                         "activation": self.activation, "learn_init": self.learn_init, "state_dict": self.state_dict()},
                        path)

    @classmethod
    def load(cls, path: str | Path, device: torch.device | str = "cpu") -> "FixedPointAccelerator":
        blob = read_model_file(path, device, "a fixed-point accelerator",
                               ("family", "map_settings", "hidden_sizes", "activation", "learn_init", "state_dict"))
        model = rebuild_model(path, "a fixed-point accelerator", lambda: cls(
            blob["family"], blob["map_settings"], tuple(blob["hidden_sizes"]), blob["activation"], blob["learn_init"]),
            blob["state_dict"])
        return model.to(device)

    @classmethod
    def shipped(cls, family: str = "deq", device: torch.device | str = "cpu") -> "FixedPointAccelerator":
        """The accelerator shipped for ``family`` (``deq``: NeuralFP trained by ``configs/fp_deq_neuralfp.yaml``)."""
        return cls.load(shipped_model_path(SHIPPED, "neural_fp_", family, "fixed-point accelerator"), device)

    @classmethod
    def for_settings(cls, fp_map: FixedPointMap, **kwargs: Any) -> "FixedPointAccelerator":
        return cls(fp_map.family, asdict(fp_map.settings), **kwargs)
