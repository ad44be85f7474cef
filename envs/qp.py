"""OSQP as an MDP (RLQP): the action sets ADMM's step sizes rho, the env runs K iterations.

One episode is one QP drawn from a mix of classes and sizes. Reset runs K
iterations at OSQP's rho = 0.1 (problems already solved by then are redrawn);
each step applies the action's rho and runs K more iterations of the batched
OSQP core. Reward is -1 per step while the problem is unsolved and 0 on the
step that solves it (or proves it infeasible); an episode is truncated after
``max_steps`` steps.

* vector variant (``amortize/QP-RLQP-v0``, the paper's): one agent per
  constraint sharing a policy. Observation: per-row features (padded to the
  mix's largest m) and a mask of the rows a policy sets; action: log10 rho per row.
* scalar variant (``amortize/QP-RLQP-Scalar-v0``): observation = the global
  residual features, action = one log10 rho expanded by OSQP's rule.

The batched form keeps every live problem in one ``OSQPBatch`` on the device;
finished problems are replaced in place (same-step autoreset).
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import torch
from gymnasium import spaces

from envs.common.vector import SingleInstanceEnv, TorchVectorEnv
from learned_optimizers.qp.admm import OSQPBatch, OSQPSettings, Status
from learned_optimizers.qp.mix import QPMix, QPMixSettings
from learned_optimizers.qp.problems import QPBatch
from learned_optimizers.qp.rlqp import (
    CONSTRAINT_FEATURES,
    GLOBAL_FEATURES,
    LOG_RHO_MAX,
    LOG_RHO_MIN,
    constraint_features,
    global_features,
    policy_rows,
)

#: tries to draw a problem that survives the first K iterations before giving up
_MAX_REDRAWS = 20
_FEATURE_BOUND = 4.0  # features are logs / 8: |feature| <= 2 by construction


def _spaces(variant: str, m: int) -> tuple[spaces.Space, spaces.Box]:
    if variant == "vector":
        obs = spaces.Dict({
            "features": spaces.Box(-_FEATURE_BOUND, _FEATURE_BOUND, (m, CONSTRAINT_FEATURES), np.float32),
            "mask": spaces.MultiBinary(m),
        })
        return obs, spaces.Box(LOG_RHO_MIN, LOG_RHO_MAX, (m,), np.float32)
    if variant == "scalar":
        return (spaces.Box(-_FEATURE_BOUND, _FEATURE_BOUND, (GLOBAL_FEATURES,), np.float32),
                spaces.Box(LOG_RHO_MIN, LOG_RHO_MAX, (1,), np.float32))
    raise ValueError(f"variant={variant!r}; allowed: vector, scalar")


class QPVectorEnv(TorchVectorEnv):
    """``num_envs`` QPs advancing together; see the module docstring for the MDP."""

    def __init__(self, num_envs: int = 8, variant: Literal["vector", "scalar"] = "vector",
                 device: str | torch.device = "cpu", **mix_settings: Any) -> None:
        self.task = QPMixSettings(**mix_settings)
        self.mix = QPMix(self.task)
        self.variant = variant
        self.n_max, self.m_max = self.mix.max_dims
        obs_space, act_space = _spaces(variant, self.m_max)
        super().__init__(num_envs, obs_space, act_space, device)
        # the policy owns rho: OSQP's heuristic is off; episodes end by truncation, not max_iter
        self.osqp_settings = OSQPSettings(eps_abs=self.task.eps, eps_rel=self.task.eps, adaptive_rho=False,
                                          max_iter=10**9)
        self.rng = np.random.default_rng()
        self.batch: OSQPBatch | None = None
        self.steps = torch.zeros(num_envs, dtype=torch.long, device=self.device)

    # ------------------------------------------------------------ problems
    def _fresh(self, count: int) -> OSQPBatch:
        """``count`` new problems, each already K iterations in and still unsolved."""
        keep = []
        for _ in range(_MAX_REDRAWS):
            need = count - len(keep)
            if need == 0:
                break
            qps = self.mix.sample(self.rng, need)
            trial = self._setup(qps)
            trial.advance(self.task.interval)
            keep += [q for q, running in zip(qps, trial.running.tolist()) if running]
        else:
            raise RuntimeError(f"{_MAX_REDRAWS} draws from the mix {self.task.mix} were all solved within "
                               f"{self.task.interval} iterations: lower interval or eps")
        batch = self._setup(keep)
        batch.advance(self.task.interval)  # deterministic: the same iterates as the trial
        return batch

    def _setup(self, qps) -> OSQPBatch:
        data = QPBatch.from_qps(qps, self.device, torch.float64, n=self.n_max, m=self.m_max)
        return OSQPBatch(data, self.osqp_settings)

    def _observe(self) -> Any:
        if self.variant == "vector":
            return {"features": constraint_features(self.batch).float(), "mask": policy_rows(self.batch)}
        return global_features(self.batch).float()

    # ------------------------------------------------------------ gymnasium API
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        if seed is not None:
            self.seed_generator(seed)
            self.rng = np.random.default_rng(seed)
            self.mix.count = 0
        mask = self.reset_mask(options, self.num_envs, self.device)
        if self.batch is None or bool(mask.all()):
            self.batch = self._fresh(self.num_envs)
        elif bool(mask.any()):
            self._replace(mask)
        self.steps = torch.where(mask, torch.zeros_like(self.steps), self.steps)
        return self._observe(), {}

    def _replace(self, mask: torch.Tensor) -> None:
        slots = mask.nonzero().squeeze(1)
        fresh = self._fresh(slots.numel())
        self.batch.replace(slots, fresh)

    def step(self, actions: Any):
        if self.batch is None:
            raise RuntimeError("call reset() before step()")
        a = self.as_tensor(actions)
        invalid = ~torch.isfinite(a).reshape(self.num_envs, -1).all(dim=1)
        log_rho = torch.nan_to_num(a, nan=-1.0).clamp(LOG_RHO_MIN, LOG_RHO_MAX).double()
        b = self.batch
        if self.variant == "vector":
            b.set_rho(10.0 ** log_rho, which=~invalid)
        else:
            b.set_scalar_rho(10.0 ** log_rho[:, 0], which=~invalid)
        b.status = torch.where(invalid & b.running, torch.full_like(b.status, int(Status.NON_CONVEX)), b.status)
        b.advance(self.task.interval)
        self.steps += 1
        terminated = ~b.running
        truncated = ~terminated & (self.steps >= self.task.max_steps)
        rewards = torch.where(terminated & ~invalid, torch.zeros_like(self.steps, dtype=torch.float32),
                              torch.full_like(self.steps, -1.0, dtype=torch.float32))
        done = terminated | truncated
        info: dict[str, Any] = {
            "iterations": b.iterations.clone(),
            "status": b.status.clone(),
            "solved": b.status == int(Status.SOLVED),
            "invalid_action": invalid,
            "episode_steps": self.steps.clone(),
            "final_obs": self._observe(),
            "_final_obs": done,
        }
        if bool(done.any()):
            self._replace(done)
            self.steps = torch.where(done, torch.zeros_like(self.steps), self.steps)
        return self._observe(), rewards, terminated, truncated, info


class QPEnv(SingleInstanceEnv):
    """Single-problem form (``gymnasium.make``): numpy in, numpy out, one QP per episode."""

    vector_env_class = QPVectorEnv

    def __init__(self, variant: Literal["vector", "scalar"] = "vector", **mix_settings: Any) -> None:
        super().__init__(variant, **mix_settings)

    def observation(self, obs: Any) -> Any:
        if isinstance(obs, dict):
            return {"features": obs["features"][0].numpy(), "mask": obs["mask"][0].numpy().astype(np.int8)}
        return obs[0].numpy()

    def step_info(self, info: dict[str, Any]) -> dict[str, Any]:
        return {"iterations": int(info["iterations"][0]), "status": Status(int(info["status"][0])).label,
                "invalid_action": bool(info["invalid_action"][0])}
