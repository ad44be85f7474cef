"""The one adapter between our gymnasium vector envs and stable-baselines3.

Gymnasium 1.x vector envs return batched arrays (here torch tensors) and
declare an autoreset mode; SB3's ``VecEnv`` wants numpy, a list of per-env info
dicts, and same-step autoreset with the last observation of a finished episode
in ``info['terminal_observation']``. Every env of the project reaches SB3
through this class, whatever its autoreset mode.
"""

from __future__ import annotations

from typing import Any, Sequence

import gymnasium as gym
import numpy as np
from gymnasium.vector import AutoresetMode
from stable_baselines3.common.vec_env.base_vec_env import VecEnv, VecEnvIndices

from envs.common.vector import to_numpy


class SB3VecEnvAdapter(VecEnv):
    def __init__(self, env: gym.vector.VectorEnv) -> None:
        self.env = env  # before VecEnv.__init__, which reads attributes through get_attr
        super().__init__(env.num_envs, env.single_observation_space, env.single_action_space)
        self.autoreset_mode = env.metadata.get("autoreset_mode", AutoresetMode.NEXT_STEP)
        self._pending_seed: int | None = None
        self._actions: np.ndarray | None = None

    # ------------------------------------------------------------ VecEnv API
    def reset(self) -> np.ndarray:
        obs, info = self.env.reset(seed=self._pending_seed)
        self._pending_seed = None
        self.reset_infos = self._split_info(info)
        return to_numpy(obs).astype(np.float32, copy=False)

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = actions

    def step_wait(self):
        obs, rewards, terminated, truncated, info = self.env.step(self._actions)
        obs = to_numpy(obs).astype(np.float32, copy=True)
        terminated, truncated = to_numpy(terminated).astype(bool), to_numpy(truncated).astype(bool)
        dones = terminated | truncated
        infos = self._split_info(info)
        done_idx = np.flatnonzero(dones)
        if self.autoreset_mode == AutoresetMode.SAME_STEP:
            final = to_numpy(info["final_obs"])
            for i in done_idx:
                infos[i]["terminal_observation"] = final[i]
        elif done_idx.size:
            # next-step or no autoreset: keep the last obs, reset the finished envs now
            for i in done_idx:
                infos[i]["terminal_observation"] = obs[i].copy()
            reset_obs, _ = self.env.reset(options={"reset_mask": dones})
            obs[dones] = to_numpy(reset_obs)[dones]
        for i in np.flatnonzero(truncated & ~terminated):
            infos[i]["TimeLimit.truncated"] = True
        return obs, to_numpy(rewards).astype(np.float32), dones, infos

    def close(self) -> None:
        self.env.close()

    def seed(self, seed: int | None = None) -> Sequence[None | int]:
        self._pending_seed = seed
        return [seed] * self.num_envs

    def get_attr(self, attr_name: str, indices: VecEnvIndices = None) -> list[Any]:
        # every sub-env is a row of the same batched object
        return [getattr(self.env, attr_name)] * len(self._get_indices(indices))

    def set_attr(self, attr_name: str, value: Any, indices: VecEnvIndices = None) -> None:
        setattr(self.env, attr_name, value)

    def env_method(self, method_name: str, *args: Any, indices: VecEnvIndices = None, **kwargs: Any) -> list[Any]:
        result = getattr(self.env, method_name)(*args, **kwargs)
        return [result] * len(self._get_indices(indices))

    def env_is_wrapped(self, wrapper_class: type, indices: VecEnvIndices = None) -> list[bool]:
        return [False] * len(self._get_indices(indices))

    # ------------------------------------------------------------ helpers
    def _split_info(self, info: dict[str, Any]) -> list[dict[str, Any]]:
        """Gymnasium's dict of batched arrays -> SB3's list of per-env dicts."""
        infos: list[dict[str, Any]] = [{} for _ in range(self.num_envs)]
        for key, value in info.items():
            if key.startswith("_") or key in ("final_obs", "final_info"):
                continue
            arr = to_numpy(value)
            if arr.ndim >= 1 and arr.shape[0] == self.num_envs:
                for i in range(self.num_envs):
                    infos[i][key] = arr[i]
        return infos
