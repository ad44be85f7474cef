"""The shared base of every batched torch environment.

A ``TorchVectorEnv`` keeps its whole batch of problem instances in tensors on
one device and advances all of them in one ``step``. Observations, rewards and
flags come back as tensors on that device (no numpy round trip on the hot
path); RL libraries that want numpy see the env through one adapter
(``agents.common.vec_adapter``).
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space


def resolve_device(device: str | torch.device) -> torch.device:
    """'auto' means cuda when there is one, else cpu."""
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device not in ("cpu", "cuda") and not device.startswith("cuda:"):
        raise ValueError(f"device={device!r}; allowed: auto, cpu, cuda, cuda:N")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device={device!r} was asked for but torch sees no CUDA device; use cpu or auto")
    return torch.device(device)


class TorchVectorEnv(VectorEnv):
    """Batched env on a torch device; subclasses implement the dynamics."""

    metadata: dict[str, Any] = {"autoreset_mode": AutoresetMode.SAME_STEP, "render_modes": []}

    def __init__(
        self,
        num_envs: int,
        single_observation_space: spaces.Box,
        single_action_space: spaces.Box,
        device: str | torch.device = "cpu",
    ) -> None:
        if num_envs < 1:
            raise ValueError(f"num_envs={num_envs}; must be >= 1")
        self.num_envs = num_envs
        self.device = resolve_device(device)
        self.single_observation_space = single_observation_space
        self.single_action_space = single_action_space
        self.observation_space = batch_space(single_observation_space, num_envs)
        self.action_space = batch_space(single_action_space, num_envs)
        self.render_mode = None
        self.generator = torch.Generator(device=self.device)
        self.generator.manual_seed(int(np.random.SeedSequence().generate_state(1)[0]))

    def seed_generator(self, seed: int | None) -> None:
        """A seed fixes every draw the env makes from then on."""
        if seed is not None:
            self._np_random, self._np_random_seed = np.random.default_rng(seed), seed
            self.generator.manual_seed(int(seed))

    def as_tensor(self, actions: Any) -> torch.Tensor:
        """Accept numpy or torch actions of the batched action shape."""
        a = torch.as_tensor(actions, dtype=torch.float32, device=self.device)
        expected = (self.num_envs, *self.single_action_space.shape)
        if tuple(a.shape) != expected:
            raise ValueError(f"actions must have shape {expected}, got {tuple(a.shape)}")
        return a

    def bounded_actions(self, actions: Any, bound: float) -> tuple[torch.Tensor, torch.Tensor]:
        """Actions clamped to [-bound, bound] with NaN read as 0, and which rows had a non-finite entry."""
        a = self.as_tensor(actions)
        invalid = ~torch.isfinite(a).flatten(1).all(dim=1)
        return torch.nan_to_num(a, nan=0.0).clamp(-bound, bound), invalid

    @staticmethod
    def penalized_rewards(cost: torch.Tensor, diverged: torch.Tensor, penalty: float) -> torch.Tensor:
        """-cost, clipped at -penalty, and exactly -penalty where the instance diverged."""
        return torch.where(diverged, torch.full_like(cost, -penalty), -cost.clamp(max=penalty))

    @staticmethod
    def status_codes(like: torch.Tensor, running: int, *flags: tuple[torch.Tensor, int]) -> torch.Tensor:
        """Per-instance status: ``running`` unless a flag holds; a later flag wins over an earlier one."""
        status = torch.full(like.shape, int(running), dtype=torch.long, device=like.device)
        for mask, code in flags:
            status = torch.where(mask, int(code), status)
        return status

    @staticmethod
    def reset_mask(options: dict[str, Any] | None, num_envs: int, device: torch.device) -> torch.Tensor:
        """The sub-envs a reset applies to (gymnasium's ``options['reset_mask']``), all by default."""
        if options is None or options.get("reset_mask") is None:
            return torch.ones(num_envs, dtype=torch.bool, device=device)
        mask = torch.as_tensor(np.asarray(options["reset_mask"]), dtype=torch.bool, device=device)
        if mask.shape != (num_envs,):
            raise ValueError(f"options['reset_mask'] must have shape ({num_envs},), got {tuple(mask.shape)}")
        return mask


class SingleInstanceEnv(gym.Env):
    """The single-instance form of a batched env (``gymnasium.make``): numpy in, numpy out, one episode at a time.

    Subclasses name their ``vector_env_class`` (built as ``cls(1, selector, "cpu", **settings)``, the selector being
    the family or variant) and turn the batched step info into plain values; ``observation`` takes the first row of
    a batched observation (override it for dict observations).
    """

    metadata: dict[str, Any] = {"render_modes": []}
    vector_env_class: type[TorchVectorEnv]

    def __init__(self, selector: str, **settings: Any) -> None:
        self.vec = self.vector_env_class(1, selector, "cpu", **settings)
        self.observation_space = self.vec.single_observation_space
        self.action_space = self.vec.single_action_space
        self._done = True

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        if seed is None and not hasattr(self, "_seeded"):
            seed = int(self.np_random.integers(2**31))
        self._seeded = True
        obs, info = self.vec.reset(seed=seed, options=options)
        self._done = False
        return self.observation(obs), {key: float(value[0]) for key, value in info.items()}

    def step(self, action: np.ndarray):
        if self._done:
            raise RuntimeError("call reset() before step() (the episode has ended)")
        _, reward, terminated, truncated, info = self.vec.step(np.asarray(action, dtype=np.float32)[None])
        self._done = bool(terminated[0] or truncated[0])
        return self.observation(info["final_obs"]), float(reward[0]), bool(terminated[0]), bool(truncated[0]), self.step_info(info)

    def observation(self, obs: Any) -> Any:
        """The first row of a batched observation, as numpy."""
        return obs[0].numpy()

    def step_info(self, info: dict[str, Any]) -> dict[str, Any]:
        """The first row of the batched info, as plain values."""
        raise NotImplementedError


def to_numpy(x: Any) -> np.ndarray:
    """A tensor (on any device) or array-like as a numpy array."""
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def to_numpy_tree(value: Any) -> Any:
    """Every tensor inside dicts, lists and tuples as a numpy array; other values as they are."""
    if isinstance(value, torch.Tensor):
        return to_numpy(value)
    if isinstance(value, dict):
        return {k: to_numpy_tree(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(to_numpy_tree(v) for v in value)
    return value


class TorchToNumpy(gym.vector.VectorWrapper):
    """A torch vector env as Gymnasium's own vector envs look: observations, rewards, flags and infos as numpy
    arrays (actions may be numpy already), so Gymnasium's vector wrappers apply on top, e.g.
    ``RecordEpisodeStatistics(TorchToNumpy(gym.make_vec(...)))``. They do numpy arithmetic on what ``step``
    returns, and fail on the torch tensors of the env itself."""

    def reset(self, *, seed: int | list[int] | None = None, options: dict[str, Any] | None = None):
        obs, info = self.env.reset(seed=seed, options=options)
        return to_numpy_tree(obs), to_numpy_tree(info)

    def step(self, actions: Any):
        return tuple(to_numpy_tree(v) for v in self.env.step(actions))
