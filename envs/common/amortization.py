"""One-step contextual environments for any problem family (f, p(x)).

An episode is one problem: the observation is the context x, the action is a
candidate solution y, the reward is -f(y; x), and the episode ends. Casting
amortization this way lets the same family be learned by RL (maximize reward),
by differentiating f (``AmortizationVectorEnv.objective``), or by regressing
onto solver optima, with one environment for all three.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces

from envs.common.vector import TorchVectorEnv
from learned_optimizers.common.problem import ContextualProblem
from learned_optimizers.families import make_problem

#: reward given for an action whose objective is NaN or inf: worse than any real value
INVALID_ACTION_REWARD = -100.0


def _spaces(problem: ContextualProblem) -> tuple[spaces.Box, spaces.Box]:
    cb, sb = problem.context_bounds, problem.solution_bounds
    obs = spaces.Box(cb.low.numpy().astype(np.float32), cb.high.numpy().astype(np.float32), dtype=np.float32)
    act = spaces.Box(sb.low.numpy().astype(np.float32), sb.high.numpy().astype(np.float32), dtype=np.float32)
    return obs, act


def _rewards(values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Reward -f, with non-finite objectives replaced and flagged."""
    finite = torch.isfinite(values)
    rewards = torch.where(finite, -values, torch.full_like(values, INVALID_ACTION_REWARD))
    return rewards, finite


class AmortizationEnv(gym.Env):
    """Single-instance form (``gymnasium.make``): numpy in, numpy out."""

    metadata = {"render_modes": []}

    def __init__(self, family: str = "sphere", **settings: Any) -> None:
        self.problem = make_problem(family, **settings)
        self.observation_space, self.action_space = _spaces(self.problem)
        self._generator = torch.Generator()
        self._context: torch.Tensor | None = None

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        self._generator.manual_seed(int(self.np_random.integers(2**62)))
        self._context = self.problem.sample_contexts(1, self._generator)
        return self._context[0].numpy().astype(np.float32), {}

    def step(self, action: np.ndarray):
        if self._context is None:
            raise RuntimeError("call reset() before step()")
        y = torch.as_tensor(np.asarray(action, dtype=np.float32)).reshape(1, -1)
        self.problem.check_solutions(y, 1)
        with torch.no_grad():
            value = self.problem.objective(y, self._context)
        reward, finite = _rewards(value)
        info = {
            "objective": float(value[0]),
            "solution": self.problem.canonicalize(y)[0].numpy(),
            "status": "ok" if bool(finite[0]) else "invalid_action",
        }
        obs = self._context[0].numpy().astype(np.float32)
        self._context = None
        return obs, float(reward[0]), True, False, info


class AmortizationVectorEnv(TorchVectorEnv):
    """Batched form (``gymnasium.make_vec``): ``num_envs`` contexts as one tensor.

    Same-step autoreset: the observation returned by ``step`` is already the
    next batch of contexts; the contexts that were just solved are in
    ``info['final_obs']``. ``reset(options={"contexts": x})`` poses given
    contexts instead of drawing them (evaluation on a fixed set, resuming).
    """

    def __init__(self, num_envs: int = 1, family: str = "sphere", device: str | torch.device = "cpu", **settings: Any) -> None:
        self.problem = make_problem(family, **settings)
        obs_space, act_space = _spaces(self.problem)
        super().__init__(num_envs, obs_space, act_space, device)
        self.contexts = torch.zeros(num_envs, self.problem.context_dim, device=self.device)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        self.seed_generator(seed)
        mask = self.reset_mask(options, self.num_envs, self.device)
        if options is not None and options.get("contexts") is not None:
            fresh = torch.as_tensor(options["contexts"], dtype=torch.float32, device=self.device)
            if fresh.shape != self.contexts.shape:
                raise ValueError(f"options['contexts'] must have shape {tuple(self.contexts.shape)}, got {tuple(fresh.shape)}")
            self.problem.check_contexts(fresh)
        else:
            fresh = self.problem.sample_contexts(self.num_envs, self.generator, self.device)
        self.contexts = torch.where(mask.unsqueeze(1), fresh, self.contexts)
        return self.contexts.clone(), {}

    def objective(self, actions: torch.Tensor) -> torch.Tensor:
        """f(actions; current contexts), differentiable: the handle for objective-based agents."""
        return self.problem.objective(actions, self.contexts)

    def step(self, actions: Any):
        y = self.as_tensor(actions)
        with torch.no_grad():
            values = self.problem.objective(y, self.contexts)
        rewards, finite = _rewards(values)
        final_obs = self.contexts
        self.contexts = self.problem.sample_contexts(self.num_envs, self.generator, self.device)
        terminated = torch.ones(self.num_envs, dtype=torch.bool, device=self.device)
        truncated = torch.zeros_like(terminated)
        info = {
            "objective": values,
            "valid": finite,
            "final_obs": final_obs,
            "_final_obs": terminated,
        }
        return self.contexts.clone(), rewards, terminated, truncated, info
