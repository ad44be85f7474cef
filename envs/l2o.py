"""Learning to optimize as an MDP (``amortize/LearnToOptimize-v0``; Li & Malik 2017).

Reset draws a batch of training tasks (datasets) and initial parameters phi_0.
The observation is one row of scale-free features per parameter coordinate
(``learned_optimizers.l2o.observe``: Adam's direction, the last H gradients and
moves of the coordinate, the last H objective changes, progress); the action
is one number per coordinate, the correction of Adam's step in units of the
learning rate, so the zero action is tuned Adam and one shared per-coordinate
policy fits every coordinate. Each step applies the update and evaluates the
objective once.

Reward: -f(phi_t) / f(phi_0). Li & Malik's cost is the objective summed over
the trajectory; dividing by the task's starting value makes tasks of different
scales count alike, and the sum over an episode rewards reaching a low value
early (the area under the objective curve), which is what "steps to reach a
target" measures. A log-improvement reward log(f_{t-1} / f_t) telescopes to
log(f_0 / f_T) and would ignore how early the progress came.

An episode is truncated after ``horizon`` steps. A NaN/inf objective or
iterate, an invalid action, or an objective above ``blowup`` times the start
ends it (terminated, status ``diverged``, reward -``DIVERGED_PENALTY``); the
rest of the batch runs on. Autoreset is same-step.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from gymnasium import spaces

from envs.common.iteration import IterationVectorEnv
from envs.common.vector import SingleInstanceEnv
from learned_optimizers.l2o import core as l2o
from learned_optimizers.l2o.core import L2OStatus
from learned_optimizers.l2o.tasks import make_tasks

#: reward of a step whose iterate diverged; a worse objective ratio is clipped to it
DIVERGED_PENALTY = 10.0


class LearnToOptimizeVectorEnv(IterationVectorEnv):
    """``num_envs`` training runs (one task each) advancing together."""

    def __init__(self, num_envs: int = 8, family: str = "logreg", device: str | torch.device = "cpu", **settings: Any) -> None:
        self.tasks = make_tasks(family, **settings)
        self.task = self.tasks.settings
        p, f = self.tasks.solution_dim, l2o.features_per_coordinate(self.task)
        bound = self.task.max_correction
        obs = spaces.Box(-l2o.FEATURE_BOUND, l2o.FEATURE_BOUND, (p, f), np.float32)
        act = spaces.Box(-bound, bound, (p,), np.float32)
        self.learning_rate = l2o.base_learning_rate(self.tasks)
        super().__init__(num_envs, l2o.L2OIteration(self.tasks, self.learning_rate), obs, act, device)

    def _draw(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.tasks.sample_contexts(n, self.generator, self.device)
        return x, self.tasks.initial_iterate(x, self.generator)

    def _info(self) -> dict[str, Any]:
        return {"objective": self.state.value.float(), "objective_ratio": (self.state.value / self.state.initial_value).float()}

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        """``options``: ``reset_mask``, or ``contexts`` (datasets, (num_envs, context_dim)) and ``initial_parameters``."""
        self.seed_generator(seed)
        options = options or {}
        mask = self.reset_mask(options, self.num_envs, self.device)
        x, phi0 = self._draw(self.num_envs)
        if options.get("contexts") is not None:
            x = torch.as_tensor(options["contexts"], dtype=torch.float32, device=self.device)
            self.tasks.check_contexts(x)
            if x.shape[0] != self.num_envs:
                raise ValueError(f"options['contexts'] must have {self.num_envs} rows, got {x.shape[0]}")
        if options.get("initial_parameters") is not None:
            phi0 = torch.as_tensor(options["initial_parameters"], dtype=torch.float32, device=self.device)
            if phi0.shape != (self.num_envs, self.tasks.solution_dim):
                raise ValueError(f"options['initial_parameters'] must have shape ({self.num_envs}, {self.tasks.solution_dim}), "
                                 f"got {tuple(phi0.shape)}")
            if not torch.isfinite(phi0).all():
                raise ValueError("options['initial_parameters'] contain NaN or inf")
        self.begin(mask, x, phi0)
        return self.observe(), self._info()

    def step(self, actions: Any):
        invalid = self.advance(actions, self.task.max_correction)
        ratio = (self.state.value / self.state.initial_value).float()
        diverged = invalid | self.state.diverged(self.task)
        truncated = ~diverged & (self.state.steps >= self.task.horizon)
        rewards = self.penalized_rewards(ratio, diverged, DIVERGED_PENALTY)
        status = self.status_codes(ratio, L2OStatus.RUNNING, (truncated, L2OStatus.MAX_STEPS), (diverged, L2OStatus.DIVERGED))
        done = diverged | truncated
        info: dict[str, Any] = {
            **self._info(),
            "status": status,
            "steps": self.state.steps.clone(),
            "invalid_action": invalid,
            "final_obs": self.observe(),
            "_final_obs": done,
        }
        if bool(done.any()):
            self.restart(done, *self._draw(self.num_envs))
        return self.observe(), rewards, diverged, truncated, info


class LearnToOptimizeEnv(SingleInstanceEnv):
    """Single-instance form (``gymnasium.make``): numpy in, numpy out."""

    vector_env_class = LearnToOptimizeVectorEnv

    def __init__(self, family: str = "logreg", **settings: Any) -> None:
        super().__init__(family, **settings)

    def step_info(self, info: dict[str, Any]) -> dict[str, Any]:
        return {"objective": float(info["objective"][0]), "objective_ratio": float(info["objective_ratio"][0]),
                "steps": int(info["steps"][0]), "status": L2OStatus(int(info["status"][0])).label}
