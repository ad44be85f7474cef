"""``amortize bench td3``: our row TD3 learner against stable-baselines3's TD3, update for update.

RLQP's transitions are constraint rows: each env step yields a different
number of them (one per constraint of each unsolved problem), which SB3's
fixed-width ``VecEnv`` cannot present without re-creating sub-environments
every step. What can be compared like for like is the learner: the same
networks (actor and twin critics, 3x48 ReLU), the same batch of row
transitions, the same delayed actor update and Polyak targets. This times
gradient updates per second of each on one device, with their own replay
buffers filled by the same random transitions.
"""

from __future__ import annotations

import time
from types import SimpleNamespace
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from agents.common.tables import format_table
from agents.common.runs import DEFAULT_ROOT, RunDir
from agents.qp.rlqp_td3 import RowReplayBuffer, RowTD3
from agents.qp.settings import RLQPAgentSettings
from envs.common.vector import resolve_device
from learned_optimizers.common.timing import synchronize
from learned_optimizers.qp.rlqp import CONSTRAINT_FEATURES, LOG_RHO_MAX, LOG_RHO_MIN


class _RowSpaces(gym.Env):
    """Only the spaces of one constraint row: SB3 builds its networks from them."""

    observation_space = gym.spaces.Box(-np.inf, np.inf, (CONSTRAINT_FEATURES,), np.float32)
    action_space = gym.spaces.Box(LOG_RHO_MIN, LOG_RHO_MAX, (1,), np.float32)


def _random_rows(count: int, generator: torch.Generator) -> SimpleNamespace:
    return SimpleNamespace(
        obs=torch.randn(count, CONSTRAINT_FEATURES, generator=generator),
        next_obs=torch.randn(count, CONSTRAINT_FEATURES, generator=generator),
        action=torch.empty(count).uniform_(LOG_RHO_MIN, LOG_RHO_MAX, generator=generator),
        reward=-torch.ones(count),
        terminal=(torch.rand(count, generator=generator) < 0.05).float(),
    )


def _time_ours(agent: RLQPAgentSettings, rows: SimpleNamespace, updates: int, device: torch.device) -> float:
    buffer = RowReplayBuffer(rows.obs.shape[0], device)
    buffer.add(rows.obs.to(device), rows.action.to(device), rows.reward.to(device), rows.next_obs.to(device),
               rows.terminal.to(device))
    td3, gen = RowTD3(agent, device), torch.Generator(device).manual_seed(0)
    for _ in range(10):  # warm-up
        td3.update(buffer, gen)
    synchronize(device)
    t0 = time.perf_counter()
    for _ in range(updates):
        td3.update(buffer, gen)
    synchronize(device)
    return updates / (time.perf_counter() - t0)


def _time_sb3(agent: RLQPAgentSettings, rows: SimpleNamespace, updates: int, device: torch.device) -> float:
    from stable_baselines3 import TD3
    from stable_baselines3.common.logger import Logger

    n = rows.obs.shape[0]
    model = TD3("MlpPolicy", _RowSpaces(), learning_rate=agent.actor_learning_rate, buffer_size=n,
                batch_size=agent.batch_size, gamma=agent.gamma, tau=agent.tau, policy_delay=agent.policy_delay,
                target_policy_noise=agent.target_noise, target_noise_clip=agent.target_noise_clip,
                policy_kwargs={"net_arch": list(agent.hidden_sizes)}, device=device, seed=0)
    model.set_logger(Logger(None, []))  # silent; configure(None, ...) would leave an empty SB3-<date> folder in /tmp
    rb = model.replay_buffer
    rb.observations[:, 0] = rows.obs.numpy()
    rb.next_observations[:, 0] = rows.next_obs.numpy()
    rb.actions[:, 0, 0] = rows.action.numpy()
    rb.rewards[:, 0] = rows.reward.numpy()
    rb.dones[:, 0] = rows.terminal.numpy()
    rb.pos, rb.full = 0, True
    model.train(gradient_steps=10, batch_size=agent.batch_size)  # warm-up
    synchronize(device)
    t0 = time.perf_counter()
    model.train(gradient_steps=updates, batch_size=agent.batch_size)
    synchronize(device)
    return updates / (time.perf_counter() - t0)



def bench_td3(name: str = "bench-td3", updates: int = 500, buffer_rows: int = 200_000, device: str = "auto",
              seed: int = 0, root=DEFAULT_ROOT, repeats: int = 3) -> dict[str, Any]:
    """Gradient updates per second of both learners (best of ``repeats``), same settings as ``rlqp_td3``."""
    if updates < 1 or buffer_rows < 1 or repeats < 1:
        raise ValueError(f"updates={updates}, buffer_rows={buffer_rows}, repeats={repeats}: each must be >= 1")
    dev = resolve_device(device)
    agent = RLQPAgentSettings()
    rows = _random_rows(buffer_rows, torch.Generator().manual_seed(seed))
    ours, sb3 = 0.0, 0.0
    for _ in range(repeats):  # interleaved, so a slow spell of a shared machine hits both
        ours = max(ours, _time_ours(agent, rows, updates, dev))
        sb3 = max(sb3, _time_sb3(agent, rows, updates, dev))
    out_dir = RunDir.create(name, root)
    table = format_table(["learner", "updates/s", "row transitions/s"],
                         [["amortize RowTD3 (buffer on device)", ours, ours * agent.batch_size],
                          ["stable-baselines3 TD3", sb3, sb3 * agent.batch_size]])
    table += f"\n\nRowTD3 is {ours / sb3:.2f}x SB3's TD3 per gradient update (batch {agent.batch_size}, device {dev})"
    summary = {"family": "td3", "device": str(dev), "batch_size": agent.batch_size, "hidden_sizes": agent.hidden_sizes,
               "updates": updates, "ours_updates_per_s": ours, "sb3_updates_per_s": sb3, "ratio_ours_over_sb3": ours / sb3,
               "table": table}
    path = out_dir.write_json("bench.json", summary)
    summary["paths"] = {"json": str(path), "plots": [], "tensorboard": str(out_dir.path)}
    return summary
