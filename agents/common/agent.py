"""What every agent offers the CLI: train (or resume) into a run dir, and predict.

A run keeps up to three deployable models, and ``amortize eval/gap --checkpoint`` picks one:
``final`` (the run's directory, written when training ends), ``latest`` (the newest checkpoint's,
usable while the run trains or after a kill) and ``best`` (the best periodic evaluation's, under
``best/``). Every loader reads from ``model_dir``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import Callable

import gymnasium as gym
import torch

from agents.common.best import BestModel
from agents.common.config import RunConfig
from agents.common.runs import RunDir
from envs.common.vector import resolve_device
from learned_optimizers.common.problem import ContextualProblem

#: the models of a run that ``amortize eval/gap --checkpoint`` can read
MODEL_CHOICES = ("final", "latest", "best")
#: contexts (n, context_dim) on the agent's device -> canonical solutions (n, solution_dim)
Predictor = Callable[[torch.Tensor], torch.Tensor]


class Agent(ABC):
    """An amortization loss L bound to one run directory."""

    def __init__(self, config: RunConfig, run: RunDir) -> None:
        self.config = config
        self.run = run
        self.device = resolve_device(config.device)
        self.problem: ContextualProblem = config.make_problem()
        self.model_choice = "final"

    def use_model(self, which: str) -> None:
        """Load the ``final``, ``latest`` or ``best`` model from now on."""
        if which not in MODEL_CHOICES:
            raise ValueError(f"--checkpoint {which!r}: allowed: {', '.join(MODEL_CHOICES)}")
        self.model_choice = which

    @property
    def model_dir(self) -> Path:
        """The folder the chosen model's files are read from."""
        if self.model_choice == "best":
            return BestModel.directory(self.run)
        if self.model_choice == "latest":
            return self.latest_model_dir()
        return self.run.path

    def latest_model_dir(self) -> Path:
        """Where the newest checkpoint keeps its deployable model (agents write it there at each checkpoint)."""
        return self.run.checkpoints

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

    def checkpoint_step(self) -> int | None:
        """The step of the checkpoint ``train(resume=True)`` would continue from; None where there is none.
        Reads (and so checks) it: a corrupt checkpoint is a ValueError naming the file before training starts."""
        state = self.run.load_checkpoint(device="cpu")
        return None if state is None else int(state["step"])

    def start_from(self, source: "Agent") -> None:
        """Begin training from ``source``'s chosen model instead of fresh weights (``amortize train --init-from``)."""
        raise ValueError(f"--init-from applies to stable-baselines3 runs (agent.kind sac, td3, ddpg, ppo) only, "
                         f"not to agent.kind={self.config.agent.kind!r}")

    @abstractmethod
    def train(self, resume: bool = False) -> None:
        """Train to ``config.train.total_steps``, continuing from the checkpoint if ``resume``."""

    @abstractmethod
    def load_predictor(self) -> Predictor:
        """The trained model from the run dir, as a batched function of contexts."""
