"""Warm starts learned the third way: stable-baselines3 (SAC, TD3, DDPG) on the one-step env
``amortize/QP-WarmStart-v0`` (``agent.kind: sac``), whose reward is minus our core's ADMM iterations from the
predicted start, in hundreds. No label and no gradient through the solver: only the reward.

The policy is judged as the other two ways are: every ``train.eval_every`` steps the real osqp solves held-out
contexts (``eval.seed``) from its deterministic action (``eval/osqp_iterations_cold_over_learned``, which keeps
the best model). At the end its actor is written as a ``WarmStarter`` (``warm_start.pt``: the actor's layers,
tanh, then the action box), so ``amortize bench warm-start --checkpoint RUN`` and deployment need no SB3.
"""

from __future__ import annotations

import dataclasses
import statistics
from typing import Any

import numpy as np
import torch
from stable_baselines3.common.base_class import BaseAlgorithm
from torch import nn

from agents.common.sb3 import SB3Agent
from agents.qp.warm_start import HELDOUT_CONTEXTS, WarmStartRegression, _osqp_iterations
from learned_optimizers.qp.warm_start import WarmStarter, WarmStartNet


def starter_from_sb3(model: BaseAlgorithm, family, family_settings: dict[str, Any], eps: float) -> WarmStarter:
    """The deterministic actor of an SB3 SAC/TD3/DDPG model as a ``WarmStarter``: its Linear layers with ReLU
    between them, tanh, and the action box's centre and half-widths as the output's mean and spread."""
    actor = model.policy.actor
    modules = [*actor.latent_pi, actor.mu] if hasattr(actor, "latent_pi") else list(actor.mu)
    if any(not isinstance(m, (nn.Linear, nn.ReLU, nn.Tanh, nn.Identity)) for m in modules):
        raise ValueError(f"the actor has layers a WarmStarter cannot hold: {[type(m).__name__ for m in modules]}")
    linears = [m for m in modules if isinstance(m, nn.Linear)]
    net = WarmStartNet(family.context_dim, family.n + family.m, tuple(m.out_features for m in linears[:-1]))
    with torch.no_grad():
        for target, source in zip([m for m in net.net if isinstance(m, nn.Linear)], linears):
            target.weight.copy_(source.weight)
            target.bias.copy_(source.bias)
    low, high = (np.asarray(v, dtype=np.float64) for v in (model.action_space.low, model.action_space.high))
    d = family.context_dim
    stats = {"context_mean": np.zeros(d), "context_std": np.ones(d), "out_mean": 0.5 * (high + low),
             "out_std": 0.5 * (high - low)}
    return WarmStarter(family, family_settings, net, stats, eps, squash=True)


class WarmStartSB3(SB3Agent):
    """An SB3 off-policy agent on the warm-start env, evaluated by the real osqp and exported as a WarmStarter."""

    best_metric = ("eval/osqp_iterations_cold_over_learned", "max")
    starter_file = WarmStartRegression.model_file

    def starter(self, model: BaseAlgorithm) -> WarmStarter:
        return starter_from_sb3(model, self.problem.qp_family, dataclasses.asdict(self.config.problem),
                                self.config.problem.eps)

    def make_heldout(self) -> tuple[np.ndarray, list[int]]:
        family = self.problem.qp_family
        contexts = family.sample_contexts(HELDOUT_CONTEXTS, np.random.default_rng(self.config.eval.seed))
        return contexts, _osqp_iterations(family, contexts, None, self.config.problem.eps)

    def heldout_metrics(self, model: BaseAlgorithm, heldout: tuple[np.ndarray, list[int]]) -> dict[str, float]:
        contexts, cold = heldout
        learned = _osqp_iterations(self.problem.qp_family, contexts, self.starter(model), self.config.problem.eps)
        return {"eval/osqp_iterations_cold_over_learned": statistics.median(cold) / statistics.median(learned),
                "eval/osqp_iterations_learned": float(statistics.median(learned))}

    def train(self, resume: bool = False) -> None:
        super().train(resume)
        self.export_starter()

    def export_starter(self) -> WarmStarter:
        """``warm_start.pt`` in the run (from the model ``model_choice`` picks), what the bench and users load."""
        starter = self.starter(self.load_model())
        starter.save(self.run.path / self.starter_file, step=self.model_step() or 0, seed=self.config.seed,
                     agent=self.config.agent.kind)
        return starter
