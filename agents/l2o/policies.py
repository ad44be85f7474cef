"""Structured policies for stable-baselines3: one network shared by every element of a set-valued action.

An env whose observation is a (elements, features) matrix and whose action has
one entry per element (one step per parameter coordinate in learning to
optimize) wants the same small network applied to each row, so that a policy
trained on one size runs on any size and permuting the elements permutes the
action. ``CoordinatewiseTD3Policy`` gives SB3's TD3 (and DDPG, which uses the
same policy class) such an actor and a permutation-invariant critic
(Deep Sets: Q = rho(mean_i phi([features_i, action_i]))). SB3's algorithm,
replay buffer and updates are used unchanged; the env reaches it through the
project's one VecEnv adapter.
"""

from __future__ import annotations

from typing import Any

import torch
from gymnasium import spaces
from stable_baselines3.common.policies import ContinuousCritic
from stable_baselines3.common.torch_layers import create_mlp
from stable_baselines3.td3.policies import Actor, TD3Policy
from torch import nn


def _element_features(observation_space: spaces.Space) -> int:
    if not isinstance(observation_space, spaces.Box) or len(observation_space.shape) != 2:
        raise ValueError(f"a coordinatewise policy needs a (elements, features) Box observation, got {observation_space}")
    return int(observation_space.shape[1])


class CoordinatewiseActor(Actor):
    """TD3's deterministic actor, applied row by row; the last layer starts at zero (the env's neutral action)."""

    def __init__(self, observation_space: spaces.Space, action_space: spaces.Box, net_arch: list[int],
                 features_extractor: nn.Module, features_dim: int, activation_fn: type[nn.Module] = nn.ReLU,
                 normalize_images: bool = True) -> None:
        super().__init__(observation_space, action_space, net_arch, features_extractor, features_dim, activation_fn, normalize_images)
        self.element_features = _element_features(observation_space)
        self.mu = nn.Sequential(*create_mlp(self.element_features, 1, net_arch, activation_fn, squash_output=True))
        last = [m for m in self.mu if isinstance(m, nn.Linear)][-1]
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        """(B, elements * F) or (B, elements, F) -> (B, elements) in [-1, 1]; any number of elements."""
        rows = obs.float().reshape(obs.shape[0], -1, self.element_features)
        return self.mu(rows).squeeze(-1)


class ElementSetQ(nn.Module):
    """Q of a set of (features, action) rows: rho(mean over rows of phi(row))."""

    def __init__(self, row_dim: int, net_arch: list[int], activation_fn: type[nn.Module]) -> None:
        super().__init__()
        width = net_arch[-1] if net_arch else 64
        self.phi = nn.Sequential(*create_mlp(row_dim, width, net_arch[:-1], activation_fn), activation_fn())
        self.rho = nn.Sequential(nn.Linear(width, width), activation_fn(), nn.Linear(width, 1))

    def forward(self, rows: torch.Tensor) -> torch.Tensor:
        return self.rho(self.phi(rows).mean(1))


class CoordinatewiseCritic(ContinuousCritic):
    """Twin permutation-invariant critics over the rows of (features, action)."""

    def __init__(self, observation_space: spaces.Space, action_space: spaces.Box, net_arch: list[int],
                 features_extractor: nn.Module, features_dim: int, activation_fn: type[nn.Module] = nn.ReLU,
                 normalize_images: bool = True, n_critics: int = 2, share_features_extractor: bool = True) -> None:
        super().__init__(observation_space, action_space, net_arch, features_extractor, features_dim, activation_fn,
                         normalize_images, n_critics, share_features_extractor)
        self.element_features = _element_features(observation_space)
        self.q_networks = []
        for idx in range(n_critics):
            q_net = ElementSetQ(self.element_features + 1, net_arch, activation_fn)
            self.add_module(f"qf{idx}", q_net)  # replaces SB3's flat MLP of the same name
            self.q_networks.append(q_net)

    def _rows(self, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        with torch.set_grad_enabled(not self.share_features_extractor):
            features = self.extract_features(obs, self.features_extractor)
        rows = features.reshape(features.shape[0], -1, self.element_features)
        return torch.cat([rows, actions.unsqueeze(-1)], -1)

    def forward(self, obs: torch.Tensor, actions: torch.Tensor) -> tuple[torch.Tensor, ...]:
        rows = self._rows(obs, actions)
        return tuple(q(rows) for q in self.q_networks)

    def q1_forward(self, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            features = self.extract_features(obs, self.features_extractor)
        rows = torch.cat([features.reshape(features.shape[0], -1, self.element_features), actions.unsqueeze(-1)], -1)
        return self.q_networks[0](rows)


class CoordinatewiseTD3Policy(TD3Policy):
    """SB3's TD3 policy with the coordinatewise actor and the set critic."""

    def make_actor(self, features_extractor: Any = None) -> CoordinatewiseActor:
        kwargs = self._update_features_extractor(self.actor_kwargs, features_extractor)
        return CoordinatewiseActor(**kwargs).to(self.device)

    def make_critic(self, features_extractor: Any = None) -> CoordinatewiseCritic:
        kwargs = self._update_features_extractor(self.critic_kwargs, features_extractor)
        return CoordinatewiseCritic(**kwargs).to(self.device)
