"""The episode bookkeeping shared by the optimizer-as-MDP environments.

An ``IterationVectorEnv`` runs one ``BatchedIteration`` (a fixed-point
iteration, an optimizer on training tasks) for a batch of contexts: reset
starts some or all of them, a step advances every run under the agent's
actions, and finished runs restart on fresh contexts in the same step. The
domains keep only what is theirs: the spaces, the contexts they draw and what
counts as converged, diverged or out of steps.
"""

from __future__ import annotations

from typing import Any

import torch
from gymnasium import spaces

from envs.common.vector import TorchVectorEnv
from learned_optimizers.common.iteration import BatchedIteration


class IterationVectorEnv(TorchVectorEnv):
    """``num_envs`` runs of ``method`` advancing together (same-step autoreset)."""

    def __init__(self, num_envs: int, method: BatchedIteration, single_observation_space: spaces.Box,
                 single_action_space: spaces.Box, device: str | torch.device = "cpu") -> None:
        super().__init__(num_envs, single_observation_space, single_action_space, device)
        self.method = method
        self.contexts: torch.Tensor | None = None
        self.state: Any = None

    @torch.no_grad()
    def observe(self) -> torch.Tensor:
        """The policy's features of every run, float32 on the env's device."""
        return self.method.observe(self.state).float()

    @torch.no_grad()
    def begin(self, mask: torch.Tensor, contexts: torch.Tensor, initial: torch.Tensor | None) -> None:
        """Start the runs under ``mask`` on ``contexts`` (rows for every run; the others are kept)."""
        started = self.method.start(contexts, initial)
        if self.state is None or bool(mask.all()):
            self.contexts, self.state = contexts, started
        else:
            self.contexts = torch.where(mask.unsqueeze(1), contexts, self.contexts)
            self.state = self.state.where(mask, started)

    @torch.no_grad()
    def advance(self, actions: Any, bound: float) -> torch.Tensor:
        """One step of every run under ``actions`` clipped to ``bound``; True where an action was NaN or inf."""
        if self.state is None:
            raise RuntimeError("call reset() before step()")
        a, invalid = self.bounded_actions(actions, bound)
        self.state = self.method.advance(self.contexts, self.state, a)
        return invalid

    @torch.no_grad()
    def restart(self, done: torch.Tensor, contexts: torch.Tensor, initial: torch.Tensor | None) -> None:
        """Restart the finished runs on their rows of ``contexts`` (the autoreset of a step)."""
        if bool(done.any()):
            self.contexts = torch.where(done.unsqueeze(1), contexts, self.contexts)
            self.state = self.state.where(done, self.method.start(self.contexts, initial))
