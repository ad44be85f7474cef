"""``amortize eval`` for an RLQP run: Gymnasium episodes with the trained policy, then the policy
against the real ``osqp`` on held-out problems of the training classes."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from agents.common.plots import plot_grouped_bars
from agents.common.tables import format_table
from agents.common.runs import RunDir
from agents.qp.bench_rlqp import heldout_groups, run_group, summarize
from learned_optimizers.qp.admm import OSQPSettings
from learned_optimizers.qp.mix import QPMix
from learned_optimizers.qp.rlqp import RhoPolicy, RLQPSettings


def rlqp_episodes(policy: RhoPolicy, config, episodes: int, device: torch.device) -> dict[str, Any]:
    """``episodes`` episodes of ``amortize/QP-RLQP-v0`` with the deterministic policy (no exploration)."""
    from envs.qp import QPVectorEnv

    env = QPVectorEnv(min(episodes, config.agent.num_envs), "vector", device, **config.problem_kwargs())
    obs, _ = env.reset(seed=config.eval.seed)
    lengths: list[int] = []
    iterations: list[int] = []
    solved: list[bool] = []
    with torch.no_grad():
        while len(lengths) < episodes:
            obs, _, terminated, truncated, info = env.step(policy(obs["features"]))
            done = terminated | truncated
            lengths += info["episode_steps"][done].tolist()
            iterations += info["iterations"][done].tolist()
            solved += info["solved"][done].tolist()
    lengths, iterations, solved = lengths[:episodes], iterations[:episodes], solved[:episodes]
    return {"episodes": episodes, "return_mean": -float(np.mean([s - int(ok) for s, ok in zip(lengths, solved)])),
            "episode_length_mean": float(np.mean(lengths)), "admm_iterations_mean": float(np.mean(iterations)),
            "solved_fraction": float(np.mean(solved))}


def evaluate_rlqp(run: RunDir, config, policy_path, episodes: int, device: torch.device) -> dict[str, Any]:
    """eval.json of an RLQP run."""
    policy = RhoPolicy.load(policy_path, device)
    gym_result = rlqp_episodes(policy, config, episodes, device)
    eps = config.problem.eps
    settings = RLQPSettings(osqp=OSQPSettings(eps_abs=eps, eps_rel=eps), interval=config.problem.interval)
    records = []
    for group, qps in heldout_groups(QPMix(config.problem), config.agent.eval_problems_per_size):
        records += run_group(group, qps, policy, settings, device)
    summary = summarize(records, settings.osqp.max_iter)
    result = {"run": run.name, "agent": config.agent.kind, "policy": str(policy_path), "gymnasium": gym_result,
              "vs_osqp": summary}
    run.write_json("eval.json", result)
    plot = plot_grouped_bars(run.plot_path("rlqp_iterations.png"), list(summary),
                             {"real osqp": [s["osqp_sgm_iter"] for s in summary.values()],
                              "RLQP": [s["rlqp_sgm_iter"] for s in summary.values()]},
                             "shifted geometric mean of ADMM iterations", f"{run.name}: held-out problems (eps {eps:g})")
    result["plots"] = [str(plot)]
    return result


def rlqp_eval_table(result: dict[str, Any]) -> str:
    g = result["gymnasium"]
    lines = [f"Gymnasium: {g['episodes']} episodes, return {g['return_mean']:.3g}, {g['episode_length_mean']:.3g} rho "
             f"updates and {g['admm_iterations_mean']:.4g} ADMM iterations per episode, solved {g['solved_fraction']:.0%}", ""]
    rows = [[k, s["problems"], s["osqp_sgm_iter"], s["rlqp_sgm_iter"], s["iteration_ratio_osqp_over_rlqp"],
             s["rlqp_failed_where_osqp_solved"], s["fallbacks"]] for k, s in result["vs_osqp"].items()]
    lines.append(format_table(["held-out group", "problems", "osqp sgm iter", "rlqp sgm iter", "osqp/rlqp",
                               "rlqp fails osqp solves", "fallbacks"], rows))
    return "\n".join(lines)
