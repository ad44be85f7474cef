"""`amortize eval` for control runs: deterministic episodes of the policy and of its semi-amortized variants.

The semi-amortized policy (IAPO-style) acts with pi(x) refined by k Adam steps
on the critic's Q. Each variant runs the same seeded episodes; next to the true
return we report the critic's mean Q at the actions taken, so one sees whether
pushing Q up at act time buys return or only exploits the critic's optimism.
Episodes run side by side in separate env copies so that the policy (and
Adam) act on a batch of states at once.
"""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any, Callable

import gymnasium as gym
import numpy as np
import torch

from agents.common.progress import Progress
from agents.control.agent import ControlAgent, action_box, critic_q, policy_actions
from envs.control import make_control_env, use_headless_rendering
from learned_optimizers.control.max_q import semi_amortized_actions

#: states (n, obs_dim) -> actions (n, act_dim) in the env's units
Actor = Callable[[torch.Tensor], torch.Tensor]
#: episodes stepped side by side, at most
PARALLEL_EPISODES = 16


def run_episodes(env_id: str, act: Actor, q_fn: Callable | None, episodes: int, seed: int, device: torch.device,
                 desc: str = "episodes") -> dict[str, Any]:
    """``episodes`` episodes seeded seed, seed + 1, ...: returns, lengths and the critic's mean Q at the actions taken."""
    slots = [make_control_env(env_id) for _ in range(min(episodes, PARALLEL_EPISODES))]
    obs: list[np.ndarray | None] = [None] * len(slots)
    episode_of: list[int] = [-1] * len(slots)
    totals = [0.0] * len(slots)
    lengths = [0] * len(slots)
    q_sums = [0.0] * len(slots)
    returns: dict[int, float] = {}
    steps: dict[int, int] = {}
    q_means: dict[int, float] = {}
    next_episode = 0
    progress = Progress(episodes, desc=desc, unit="episode")

    def start(i: int) -> None:
        nonlocal next_episode
        if next_episode >= episodes:
            obs[i] = None
            return
        episode_of[i], totals[i], lengths[i], q_sums[i] = next_episode, 0.0, 0, 0.0
        obs[i], _ = slots[i].reset(seed=seed + next_episode)
        next_episode += 1

    for i in range(len(slots)):
        start(i)
    try:
        while any(o is not None for o in obs):
            active = [i for i, o in enumerate(obs) if o is not None]
            rows = [obs[i] for i in active]
            # always a batch of PARALLEL_EPISODES rows (padded): a matmul's rows can differ in their last bits with
            # the batch size, and episodes amplify that, so seeded episode k returns the same whatever --episodes
            states = torch.as_tensor(np.stack(rows + rows[-1:] * (PARALLEL_EPISODES - len(rows))), device=device)
            actions = act(states)
            if q_fn is not None:
                with torch.no_grad():
                    q = q_fn(states, actions).cpu().numpy()
            actions = actions.detach().cpu().numpy()
            for row, i in enumerate(active):
                obs[i], reward, terminated, truncated, _ = slots[i].step(actions[row])
                totals[i] += float(reward)
                lengths[i] += 1
                q_sums[i] += float(q[row]) if q_fn is not None else 0.0
                if terminated or truncated:
                    e = episode_of[i]
                    returns[e], steps[e], q_means[e] = totals[i], lengths[i], q_sums[i] / lengths[i]
                    progress.update(1, ep_return=totals[i])
                    start(i)
    finally:
        progress.close()
        for env in slots:
            env.close()
    r = [returns[e] for e in range(episodes)]
    std = statistics.stdev(r) if episodes > 1 else 0.0
    out = {"episodes": episodes, "return_mean": statistics.fmean(r), "return_std": std,
           "return_stderr": std / episodes ** 0.5, "length_mean": statistics.fmean(steps.values()), "returns": r}
    if q_fn is not None:
        out["critic_q_mean"] = statistics.fmean(q_means.values())
    return out


def semi_amortized_actor(agent: ControlAgent, model: Any, steps: int) -> Actor:
    """pi(x), then ``steps`` Adam steps on min(Q1, Q2) at the problem's semi-amortized learning rate."""
    pi, q, box = policy_actions(model), critic_q(model), action_box(model)
    lr = agent.problem.settings.semi_amortized_learning_rate
    return lambda states: semi_amortized_actions(q, states, pi(states), box, steps, lr)


def check_rendering(env_id: str) -> None:
    """Fail before any episode runs when the env cannot render here (e.g. a classic-control env without pygame)."""
    use_headless_rendering()
    env = make_control_env(env_id, render_mode="rgb_array")
    try:
        env.reset(seed=0)
        env.render()
    except gym.error.DependencyNotInstalled as err:
        raise ValueError(f"--video: {env_id} cannot render on this machine: {err}") from None
    finally:
        env.close()


def record_video(env_id: str, act: Actor, seed: int, device: torch.device, path: Path) -> Path:
    """One deterministic episode rendered off-screen to an MP4 at the env's frame rate."""
    use_headless_rendering()
    import imageio.v2 as imageio

    env = make_control_env(env_id, render_mode="rgb_array")
    fps = int(env.metadata.get("render_fps", 30))
    path.parent.mkdir(parents=True, exist_ok=True)
    obs, _ = env.reset(seed=seed)
    done = False
    try:
        with imageio.get_writer(path, fps=fps, codec="libx264", quality=7, macro_block_size=8) as writer:
            writer.append_data(env.render())
            while not done:
                action = act(torch.as_tensor(obs, device=device).unsqueeze(0))[0].detach().cpu().numpy()
                obs, _, terminated, truncated, _ = env.step(action)
                writer.append_data(env.render())
                done = terminated or truncated
    finally:
        env.close()
    return path


def evaluate_control(agent: ControlAgent, episodes: int, semi_amortized: list[int] | None = None,
                     video: bool = False) -> dict[str, Any]:
    """Seeded deterministic episodes for the policy and each k in ``semi_amortized``; writes eval.json."""
    config, run = agent.config, agent.run
    ks = semi_amortized if semi_amortized is not None else [agent.problem.settings.semi_amortized_steps]
    if any(k < 0 for k in ks):
        raise ValueError(f"--semi-amortized: steps must be >= 0, got {ks}")
    model = agent.load_model()
    if video:
        check_rendering(config.env)
    q = critic_q(model)
    variants: dict[str, Any] = {}
    for k in dict.fromkeys(ks):
        name = "policy" if k == 0 else f"semi_amortized_k{k}"
        result = run_episodes(config.env, semi_amortized_actor(agent, model, k), q, episodes, config.eval.seed,
                              model.device, desc=f"{run.name} {name}")
        variants[name] = {"adam_steps": k, **result}
    out: dict[str, Any] = {"run": run.name, "agent": config.agent.kind, "env": config.env, "seed": config.eval.seed,
                           "semi_amortized_learning_rate": agent.problem.settings.semi_amortized_learning_rate,
                           "variants": variants}
    if video:
        first = next(iter(variants.values()))["adam_steps"]
        path = record_video(config.env, semi_amortized_actor(agent, model, first), config.eval.seed, model.device,
                            run.path / "videos" / f"eval-{next(iter(variants))}.mp4")
        out["video"] = str(path)
    run.write_json("eval.json", out)
    return out
