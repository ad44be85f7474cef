"""What every agent offers the CLI: train (or resume) into a run dir, and predict."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Callable

import gymnasium as gym
import torch

from envs import resolve_device
from learned_optimizers.problems import ContextualProblem, make_problem

from .config import RunConfig
from .runs import RunDir

#: contexts (n, context_dim) on the agent's device -> canonical solutions (n, solution_dim)
Predictor = Callable[[torch.Tensor], torch.Tensor]


class Agent(ABC):
    """An amortization loss L bound to one run directory."""

    def __init__(self, config: RunConfig, run: RunDir) -> None:
        self.config = config
        self.run = run
        self.device = resolve_device(config.device)
        self.problem: ContextualProblem = make_problem(config.problem_family, **config.problem_kwargs())

    def make_vector_env(self, num_envs: int) -> gym.vector.VectorEnv:
        """The batched torch form of the configured env."""
        return gym.make_vec(
            self.config.env,
            num_envs=num_envs,
            vectorization_mode="vector_entry_point",
            device=self.device,
            family=self.config.problem_family,
            **self.config.problem_kwargs(),
        )

    @abstractmethod
    def train(self, resume: bool = False) -> None:
        """Train to ``config.train.total_steps``, continuing from the checkpoint if ``resume``."""

    @abstractmethod
    def load_predictor(self) -> Predictor:
        """The trained model from the run dir, as a batched function of contexts."""


def make_agent(config: RunConfig, run: RunDir) -> Agent:
    from .amortizers import ObjectiveAmortizer, RegressionAmortizer
    from .config import CONTROL_FAMILY, FIXED_POINT_ENV, L2O_ENV
    from .control import ControlAgent
    from .fixed_point import FixedPointObjectiveAgent, FixedPointRegressionAgent, FixedPointSB3Agent
    from .l2o import L2OObjectiveAgent, L2OSB3Agent
    from .rlqp_td3 import RLQPAgent
    from .sb3 import SB3Agent

    kinds: dict[str, type[Agent]] = {
        "objective": ObjectiveAmortizer,
        "regression": RegressionAmortizer,
        "sac": SB3Agent,
        "td3": SB3Agent,
        "ddpg": SB3Agent,
        "ppo": SB3Agent,
        "rlqp_td3": RLQPAgent,
        "fp_objective": FixedPointObjectiveAgent,
        "fp_regression": FixedPointRegressionAgent,
        "l2o_objective": L2OObjectiveAgent,
    }
    if config.problem_family == CONTROL_FAMILY:
        return ControlAgent(config, run)
    if config.env == FIXED_POINT_ENV and config.agent.kind in ("sac", "td3", "ddpg"):
        return FixedPointSB3Agent(config, run)
    if config.env == L2O_ENV and config.agent.kind in ("td3", "ddpg"):
        return L2OSB3Agent(config, run)
    return kinds[config.agent.kind](config, run)
