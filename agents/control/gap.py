"""`amortize gap` for control runs: the actor's one pass against Adam solving max_u Q(x, u) from scratch.

On the states of deterministic episodes (``gap_states`` of them), f(u; x) = min(Q1, Q2)(x, u) is
normalized per state so that the zero action scores -1 and the policy's action
0. Adam starts at the zero action (tanh-parameterized, so it stays in the
box); its normalized value is recorded against iterations and seconds. The
speedup is the time Adam needs until its mean (clamped at 0, the tutorial's
measure) reaches ``reach_level`` over the policy's batched forward time. The
unclamped values show where Adam finds actions the critic rates above the
policy's: Q's optimism, or the actor's amortization gap.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.tensorboard import SummaryWriter

from agents.common.evaluation import time_predictor
from agents.common.progress import Progress
from agents.common.sb3 import SNAPSHOTS
from agents.common.sb3_files import load_weights
from agents.control.agent import ControlAgent, action_box, critic_q, policy_actions, zero_actions
from agents.control.plots import plot_control_gap, plot_gap_across_training
from envs.control import make_control_env
from learned_optimizers.control.max_q import informative_states, maximize_q, normalized_value


@torch.no_grad()
def episode_states(env_id: str, actor, seed: int, max_states: int, device: torch.device,
                   max_episodes: int = 100) -> tuple[torch.Tensor, int]:
    """The observations (before each action) of deterministic episodes seeded seed, seed + 1, ... until
    ``max_states`` are collected: a policy that falls early still yields a sample of its state distribution,
    not one short episode. Returns the states and how many episodes they came from."""
    env = make_control_env(env_id)
    states: list[np.ndarray] = []
    episodes = 0
    try:
        while len(states) < max_states and episodes < max_episodes:
            obs, _ = env.reset(seed=seed + episodes)
            episodes += 1
            while len(states) < max_states:
                states.append(obs)
                obs, _, terminated, truncated, _ = env.step(
                    actor(torch.as_tensor(obs, device=device).unsqueeze(0))[0].cpu().numpy())
                if terminated or truncated:
                    break
    finally:
        env.close()
    return torch.as_tensor(np.stack(states), device=device), episodes


def gap_curve(q_fn, pi, states: torch.Tensor, box, settings, timing_repeats: int) -> dict[str, Any]:
    """The whole measurement on given states; separate from the run so that tests can use a synthetic Q."""
    n = states.shape[0]
    zero = zero_actions(box, n)
    with torch.no_grad():
        q_zero, q_pi = q_fn(states, zero), q_fn(states, pi(states))
    keep = informative_states(q_zero, q_pi)
    if not bool(keep.any()):
        raise ValueError("the policy's action does not beat the zero action under Q on any state: the normalization "
                         "(zero = -1, policy = 0) is undefined; train the agent longer")
    policy_seconds = time_predictor(pi, states, timing_repeats)
    maximize_q(q_fn, states, zero, box, settings.gap_learning_rate, 3)  # warm-up: first-call overheads
    u, trace = maximize_q(q_fn, states, zero, box, settings.gap_learning_rate, settings.gap_iterations,
                          record_every=settings.gap_record_every)
    curve = []
    for it, sec, q in zip(trace.iterations, trace.seconds, trace.values):
        v = normalized_value(q, q_zero, q_pi)[keep].double()
        clamped = v.clamp(max=0.0)
        curve.append({"iteration": it, "seconds": sec, "value_mean": float(clamped.mean()), "value_std": float(clamped.std()),
                      "value_mean_unclamped": float(v.mean()), "value_std_unclamped": float(v.std()),
                      "value_median_unclamped": float(v.median()),
                      "above_policy": float((v > 0).double().mean())})
    level = settings.reach_level
    hit = next((p for p in curve if p["value_mean"] >= level), None)
    hit_unclamped = next((p for p in curve if p["value_mean_unclamped"] >= level), None)
    final_q = trace.values[-1]
    return {
        "states": n,
        "informative_states": int(keep.sum()),
        "reach_level": level,
        "adam": {"learning_rate": settings.gap_learning_rate, "iterations": settings.gap_iterations,
                 "record_every": settings.gap_record_every, "start": "zero action", "parameterization": "tanh"},
        "q_mean": {"zero_action": float(q_zero[keep].mean()), "policy": float(q_pi[keep].mean()),
                   "adam_final": float(final_q[keep].mean())},
        "policy_seconds": policy_seconds,
        "adam_seconds_total": curve[-1]["seconds"],
        "adam_seconds_per_iteration": curve[-1]["seconds"] / max(settings.gap_iterations, 1),
        "iterations_to_policy": hit["iteration"] if hit else None,
        "seconds_to_policy": hit["seconds"] if hit else None,
        "speedup": hit["seconds"] / policy_seconds if hit else None,
        "iterations_to_policy_unclamped": hit_unclamped["iteration"] if hit_unclamped else None,
        "final_value_mean": curve[-1]["value_mean"],
        "final_value_mean_unclamped": curve[-1]["value_mean_unclamped"],
        # per-state ratios explode where Q(pi) barely beats Q(0): the median and the ratio of means are the robust reads
        "final_value_median_unclamped": curve[-1]["value_median_unclamped"],
        "final_value_of_means_unclamped": float((final_q[keep].mean() - q_pi[keep].mean()) / (q_pi[keep].mean() - q_zero[keep].mean())),
        "final_above_policy": curve[-1]["above_policy"],
        "curve": curve,
    }


def control_gap(agent: ControlAgent) -> dict[str, Any]:
    """`amortize gap RUN` on a control run: gap.json, plots/gap.png and TensorBoard scalars under tb/gap."""
    config, run = agent.config, agent.run
    settings = agent.problem.settings
    model = agent.load_model()
    pi = policy_actions(model)
    states, episodes = episode_states(config.env, pi, config.eval.seed, settings.gap_states, model.device)
    result = {"run": run.name, "agent": config.agent.kind, "env": config.env, "seed": config.eval.seed, "episodes": episodes,
              **gap_curve(critic_q(model), pi, states, action_box(model), settings, config.eval.timing_repeats)}
    run.write_json("gap.json", result)
    result["plot"] = str(plot_control_gap(run.plot_path("gap.png"), result,
                                          f"{run.name}: Adam solving max_u Q from the zero action vs the {config.agent.kind} actor"))
    with SummaryWriter(str(run.tensorboard / "gap")) as writer:
        for p in result["curve"]:
            writer.add_scalar("gap/adam_value_mean", p["value_mean"], p["iteration"])
            writer.add_scalar("gap/adam_value_mean_unclamped", p["value_mean_unclamped"], p["iteration"])
            writer.add_scalar("gap/adam_seconds", p["seconds"], p["iteration"])
            writer.add_scalar("gap/policy_value", 0.0, p["iteration"])
    return result


#: the per-snapshot figures of the gap across training (a subset of ``gap_curve``'s)
TRAINING_FIELDS = ("states", "informative_states", "iterations_to_policy", "seconds_to_policy", "policy_seconds",
                   "speedup", "final_value_mean_unclamped", "final_value_median_unclamped",
                   "final_value_of_means_unclamped", "final_above_policy")


def snapshot_steps(run) -> list[tuple[int, Path]]:
    """(step, model zip) of every kept snapshot (``train.keep_snapshots``), in training order."""
    found = []
    for path in (run.path / SNAPSHOTS).glob("model-*.zip"):
        try:
            found.append((int(path.stem.removeprefix("model-")), path))
        except ValueError:
            continue
    return sorted(found)


def control_gap_across_training(agent: ControlAgent) -> dict[str, Any]:
    """The gap at every kept snapshot: does the actor amortize max-Q better as training goes on?

    Each snapshot is measured as ``amortize gap`` measures the final model, on its own policy's states (the
    family's p(x)): Adam from the zero action against the actor, normalized per state (zero -1, actor 0).
    Writes gap-training.json, plots/gap-training.png and TensorBoard scalars under tb/gap_training."""
    config, run = agent.config, agent.run
    settings = agent.problem.settings
    snapshots = snapshot_steps(run)
    if not snapshots:
        raise FileNotFoundError(f"{str(run.path / SNAPSHOTS)!r} holds no model snapshots: train with "
                                "train.keep_snapshots: true to keep each checkpoint's model")
    env = agent.make_spaces_env()
    try:
        model = agent.build_model(env)
    finally:
        env.close()
    points = []
    progress = Progress(len(snapshots), desc=f"{run.name} gap across training", unit="snapshot")
    try:
        for step, path in snapshots:
            load_weights(model, path)
            pi = policy_actions(model)
            states, episodes = episode_states(config.env, pi, config.eval.seed, settings.gap_states, model.device)
            try:
                r = gap_curve(critic_q(model), pi, states, action_box(model), settings, config.eval.timing_repeats)
            except ValueError as err:  # early in training the actor may not beat the zero action anywhere
                points.append({"step": step, "episodes": episodes, "skipped": str(err)})
                progress.update(1)
                continue
            points.append({"step": step, "episodes": episodes, "q_mean": r["q_mean"],
                           **{k: r[k] for k in TRAINING_FIELDS}})
            progress.update(1, step=step, speedup=r["speedup"] or float("nan"))
    finally:
        progress.close()
    result = {"run": run.name, "agent": config.agent.kind, "env": config.env, "seed": config.eval.seed,
              "reach_level": settings.reach_level,
              "adam": {"learning_rate": settings.gap_learning_rate, "iterations": settings.gap_iterations},
              "snapshots": points}
    run.write_json("gap-training.json", result)
    result["plot"] = str(plot_gap_across_training(run.plots / "gap-training.png", result,
                                                  f"{run.name}: the {config.agent.kind} actor against Adam on max_u Q, "
                                                  "across training"))
    with SummaryWriter(str(run.tensorboard / "gap_training")) as writer:
        for p in points:
            if "skipped" in p:
                continue
            writer.add_scalar("gap_training/adam_value_mean_unclamped", p["final_value_mean_unclamped"], p["step"])
            writer.add_scalar("gap_training/adam_value_median_unclamped", p["final_value_median_unclamped"], p["step"])
            writer.add_scalar("gap_training/adam_above_policy", p["final_above_policy"], p["step"])
            writer.add_scalar("gap_training/q_policy_minus_zero", p["q_mean"]["policy"] - p["q_mean"]["zero_action"], p["step"])
            if p["speedup"] is not None:
                writer.add_scalar("gap_training/speedup", p["speedup"], p["step"])
                writer.add_scalar("gap_training/iterations_to_policy", p["iterations_to_policy"], p["step"])
    return result
