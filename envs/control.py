"""Gymnasium's MuJoCo control tasks, as the control agents see them.

The env is Gymnasium's own; the one change is float32 observations. SB3's
replay buffer stores observations in the observation space's dtype, and
MuJoCo's float64 doubles it: 1M Humanoid transitions take 5.6 GB in float64,
2.8 GB in float32, with no loss that matters to a float32 network.
"""

from __future__ import annotations

import os
from typing import Any

import gymnasium as gym
import numpy as np

#: the MuJoCo ids described by hand; every other Gymnasium MuJoCo v5 id is accepted too (``CONTROL_ENV_IDS``)
DESCRIBED: dict[str, str] = {
    "Humanoid-v5": "MuJoCo Humanoid (348-D observation, 17 torques in [-0.4, 0.4]): max_u Q(x, u) amortized by an actor",
    "HalfCheetah-v5": "MuJoCo HalfCheetah (17-D observation, 6 torques in [-1, 1])",
    "Hopper-v5": "MuJoCo Hopper (11-D observation, 3 torques in [-1, 1])",
    "Walker2d-v5": "MuJoCo Walker2d (17-D observation, 6 torques in [-1, 1])",
    "Ant-v5": "MuJoCo Ant (105-D observation, 8 torques in [-1, 1])",
    "Pendulum-v1": "classic-control Pendulum (3-D observation, 1 torque in [-2, 2]): seconds to train, for tests",
}


def _mujoco_ids() -> dict[str, str]:
    """Every MuJoCo task Gymnasium registers at its current version (v5; v4 is deprecated, with known bugs)."""
    found = {}
    for env_id, spec in sorted(gym.registry.items()):
        entry = spec.entry_point if isinstance(spec.entry_point, str) else ""
        if entry.startswith("gymnasium.envs.mujoco") and env_id.endswith("-v5"):
            found[env_id] = f"MuJoCo {env_id.removesuffix('-v5')} (Gymnasium)"
    return found


#: env id -> one-line description (shown by ``amortize list``); Gymnasium's ids, used as they are
CONTROL_ENV_IDS: dict[str, str] = {**_mujoco_ids(), **DESCRIBED}

#: rendering backends MuJoCo can use without a display, in the order tried
HEADLESS_GL = ("egl", "osmesa")


class Float32Observation(gym.ObservationWrapper):
    """Observations cast to float32, with the space's bounds cast the same way."""

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        space = env.observation_space
        if not isinstance(space, gym.spaces.Box):
            raise TypeError(f"{env.spec.id if env.spec else env}: expected a Box observation space, got {space}")
        self.observation_space = gym.spaces.Box(space.low.astype(np.float32), space.high.astype(np.float32),
                                                space.shape, np.float32)

    def observation(self, observation: Any) -> np.ndarray:
        return np.asarray(observation, dtype=np.float32)


def make_control_env(env_id: str, render_mode: str | None = None, **kwargs: Any) -> gym.Env:
    """``gymnasium.make(env_id)`` with float32 observations; ``env_id`` must be one of ``CONTROL_ENV_IDS``."""
    if env_id not in CONTROL_ENV_IDS:
        raise ValueError(f"env {env_id!r} is not a control env; allowed: {', '.join(CONTROL_ENV_IDS)}")
    return Float32Observation(gym.make(env_id, render_mode=render_mode, **kwargs))


def use_headless_rendering() -> str:
    """Pick MuJoCo's off-screen OpenGL backend before MuJoCo is first imported; returns the one chosen.

    A user's MUJOCO_GL wins. Otherwise EGL (GPU machines and most Linux
    desktops), falling back to OSMesa (software) when EGL's library is absent."""
    if "MUJOCO_GL" in os.environ:
        return os.environ["MUJOCO_GL"]
    import ctypes.util

    choice = "egl" if ctypes.util.find_library("EGL") else "osmesa"
    os.environ["MUJOCO_GL"] = choice
    os.environ.setdefault("PYOPENGL_PLATFORM", choice)
    return choice
