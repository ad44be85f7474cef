"""Control agents: stable-baselines3 SAC, TD3 and DDPG on Gymnasium's MuJoCo tasks.

An actor-critic agent amortizes max_u Q(x, u): its actor is the model, its
critic the objective. Training is SB3's; this module adds what the run needs
around it (env copies in one process or one each, deterministic evaluation
episodes in TensorBoard) and the bridge from an SB3 model to the plain
callables that ``learned_optimizers.max_q`` solves with.
"""

from __future__ import annotations

from functools import partial

import torch
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv, VecEnv, VecMonitor

from agents.common.sb3 import SB3Agent, deterministic_actions
from envs.control import make_control_env
from learned_optimizers.common.problem import ActionBox
from learned_optimizers.control.max_q import QFunction


class ControlAgent(SB3Agent):
    """SAC / TD3 / DDPG on a control env (``problem.family: max_q``)."""

    best_metric = ("eval/mean_return", "max")

    def make_env(self) -> VecEnv:
        agent = self.config.agent
        makers = [partial(make_control_env, self.config.env) for _ in range(agent.n_envs)]
        vec = SubprocVecEnv(makers) if agent.vec_env == "subproc" else DummyVecEnv(makers)
        return VecMonitor(vec)

    def make_spaces_env(self) -> VecEnv:
        """One in-process env: rebuilding a saved model needs the spaces, not agent.n_envs subprocesses."""
        return VecMonitor(DummyVecEnv([partial(make_control_env, self.config.env)]))

    def make_heldout(self) -> VecEnv:
        """Periodic evaluation runs in its own env copy, seeded from ``eval.seed``."""
        return DummyVecEnv([lambda: Monitor(make_control_env(self.config.env))])

    def heldout_metrics(self, model: BaseAlgorithm, env: VecEnv) -> dict[str, float]:
        env.seed(self.config.eval.seed)
        returns, lengths = evaluate_policy(model, env, n_eval_episodes=self.config.eval.training_episodes,
                                           deterministic=True, return_episode_rewards=True)
        r = torch.tensor(returns, dtype=torch.float64)
        return {"eval/mean_return": float(r.mean()), "eval/mean_length": float(sum(lengths) / len(lengths)),
                "eval/std_return": float(r.std()) if len(returns) > 1 else 0.0}

    def load_predictor(self):
        raise ValueError(f"{self.run.path}: a control run has no contexts to predict from; use `amortize eval` (episodes) "
                         "or `amortize gap` (the max-Q problem on visited states)")


def action_box(model: BaseAlgorithm) -> ActionBox:
    """The env's action bounds on the model's device."""
    return ActionBox.from_bounds(model.action_space.low, model.action_space.high, model.device)


def critic_q(model: BaseAlgorithm) -> QFunction:
    """Q(x, u) of an SB3 actor-critic, u in the env's units: min over the critics (SAC, TD3: two; DDPG: one).

    SB3's squashing policies store and criticize actions rescaled to [-1, 1]; the
    rescaling is done here so that callers work in the env's own action units."""
    critic = getattr(model, "critic", None)
    if critic is None:
        raise ValueError(f"{type(model).__name__} has no Q function (critic); the max-Q problem needs SAC, TD3 or DDPG")
    box = action_box(model)

    def q(states: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        return torch.cat(critic(states.float(), box.to_unit(actions)), dim=1).min(dim=1).values

    return q


def policy_actions(model: BaseAlgorithm):
    """The deterministic actor as a batched function of states (env action units)."""
    return lambda states: deterministic_actions(model, states)


def zero_actions(box: ActionBox, n: int) -> torch.Tensor:
    """The zero action (doing nothing), moved into the box where 0 lies outside it."""
    zero = torch.minimum(torch.maximum(torch.zeros_like(box.low), box.low), box.high)
    return zero.expand(n, -1).clone()
