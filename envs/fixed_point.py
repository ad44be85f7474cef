"""Fixed-point acceleration as an MDP (``amortize/FixedPoint-v0``).

Reset draws contexts x and evaluates the map at the initial iterate (the
family's default start, or ``options["initial_iterates"]`` from a learned
initializer). Each step applies the action as a correction of a classical
step (see ``learned_optimizers.fixed_point``: zero action = plain iteration in
``neural_fp`` mode, = Anderson acceleration in ``hyper_aa`` mode) and
evaluates the map once. Reward: -||R(y)|| / ||R(y_default)|| (NeuralFP's
objective). An episode terminates when that ratio reaches ``tol`` or the
iterate diverges (NaN/inf, status ``diverged``, reward -``DIVERGED_PENALTY``),
and is truncated after ``max_steps`` steps. The ratio and status are in ``info``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from gymnasium import spaces

from envs.common.iteration import IterationVectorEnv
from envs.common.vector import SingleInstanceEnv
from learned_optimizers.common.iteration import Policy
from learned_optimizers.families import make_map
from learned_optimizers.fixed_point import core as fp
from learned_optimizers.fixed_point.core import FixedPointStatus

#: reward of a step whose iterate diverged; a residual ratio above it is clipped to it
DIVERGED_PENALTY = 10.0


class FixedPointVectorEnv(IterationVectorEnv):
    """``num_envs`` fixed-point solves advancing together (same-step autoreset)."""

    def __init__(self, num_envs: int = 8, family: str = "deq", device: str | torch.device = "cpu", **settings: Any) -> None:
        self.map = make_map(family, **settings)
        self.task = self.map.settings
        bound = self.task.max_correction
        obs = spaces.Box(-np.inf, np.inf, (fp.observation_dim(self.map, self.task),), np.float32)
        act = spaces.Box(-bound, bound, (fp.action_dim(self.map, self.task),), np.float32)
        super().__init__(num_envs, fp.FixedPointIteration(self.map, self.task), obs, act, device)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        self.seed_generator(seed)
        options = options or {}
        mask = self.reset_mask(options, self.num_envs, self.device)
        if options.get("contexts") is not None:
            fresh = torch.as_tensor(options["contexts"], dtype=torch.float32, device=self.device)
            if fresh.shape != (self.num_envs, self.map.context_dim):
                raise ValueError(f"options['contexts'] must have shape ({self.num_envs}, {self.map.context_dim}), "
                                 f"got {tuple(fresh.shape)}")
            self.map.check_contexts(fresh)
        else:
            fresh = self.map.sample_contexts(self.num_envs, self.generator, self.device)
        initial = options.get("initial_iterates")
        if initial is not None:
            initial = torch.as_tensor(initial, dtype=torch.float32, device=self.device)
            if initial.shape != (self.num_envs, self.map.dim):
                raise ValueError(f"options['initial_iterates'] must have shape ({self.num_envs}, {self.map.dim}), "
                                 f"got {tuple(initial.shape)}")
            if not torch.isfinite(initial).all():
                raise ValueError("options['initial_iterates'] contain NaN or inf")
        self.begin(mask, fresh, initial)
        return self.observe(), {"residual_ratio": self.state.ratio.float()}

    def rollout(self, policy: Policy | None, initial_iterates: torch.Tensor | None = None,
                steps: int | None = None) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Differentiable rollout from the current contexts (``max_steps`` by default), outside
        the episode bookkeeping: the handle for agents that backpropagate through the iterations."""
        return fp.rollout(self.map, self.contexts, self.task, steps or self.task.max_steps, policy, initial_iterates)

    def step(self, actions: Any):
        invalid = self.advance(actions, self.task.max_correction)
        ratio = self.state.ratio.float()
        diverged = invalid | ~torch.isfinite(ratio) | ~torch.isfinite(self.state.y).all(dim=1)
        converged = ~diverged & (ratio <= self.task.tol)
        terminated = converged | diverged
        truncated = ~terminated & (self.state.evaluations >= self.task.max_steps)
        rewards = self.penalized_rewards(ratio, diverged, DIVERGED_PENALTY)
        status = self.status_codes(ratio, FixedPointStatus.RUNNING, (truncated, FixedPointStatus.MAX_STEPS),
                                   (converged, FixedPointStatus.CONVERGED), (diverged, FixedPointStatus.DIVERGED))
        done = terminated | truncated
        info: dict[str, Any] = {
            "residual_ratio": ratio,
            "status": status,
            "evaluations": self.state.evaluations.clone(),
            "invalid_action": invalid,
            "final_obs": self.observe(),
            "_final_obs": done,
        }
        if bool(done.any()):
            self.restart(done, self.map.sample_contexts(self.num_envs, self.generator, self.device), None)
        return self.observe(), rewards, terminated, truncated, info


class FixedPointEnv(SingleInstanceEnv):
    """Single-instance form (``gymnasium.make``): numpy in, numpy out."""

    vector_env_class = FixedPointVectorEnv

    def __init__(self, family: str = "deq", **settings: Any) -> None:
        super().__init__(family, **settings)

    def step_info(self, info: dict[str, Any]) -> dict[str, Any]:
        return {"residual_ratio": float(info["residual_ratio"][0]), "evaluations": int(info["evaluations"][0]),
                "status": FixedPointStatus(int(info["status"][0])).label}
