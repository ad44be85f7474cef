"""Judging an amortized model against the per-instance solver on held-out contexts.

Two questions, asked on the same contexts:
* quality: f(y_theta(x); x) - f(y*(x); x), the amortization gap in objective;
* cost: the model's one batched forward pass against the solver's full run.
Timings warm up first, repeat, take the median, and synchronize the device
before reading a clock.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from agents.common.agent import Predictor
from agents.common.config import RunConfig
from agents.common.heldout import heldout_contexts, solve
from learned_optimizers.common.multistart import SolveResult
from learned_optimizers.common.problem import ContextualProblem
from learned_optimizers.common.timing import synchronize


def policy_episodes(config: RunConfig, policy: Any, episodes: int, final_key: str,
                    restart: Any = None) -> dict[str, Any]:
    """Gymnasium episodes of a learned iterative solver's policy (observation batch -> action batch) in the
    single-instance env, seeded from ``eval.seed``: return, the median of ``info[final_key]`` at the end,
    and the count of each final status. ``restart(env)`` may reset the env again after the seeded reset
    (e.g. with a learned start) and return the new observation."""
    env = gym.make(config.env, family=config.problem_family, **config.problem_kwargs()).unwrapped
    returns, finals, statuses = [], [], []
    for episode in range(episodes):
        obs, _ = env.reset(seed=config.eval.seed + episode)
        if restart is not None:
            obs = restart(env)
        total, done, info = 0.0, False, {}
        while not done:
            action = policy(torch.as_tensor(obs).unsqueeze(0))[0].cpu().numpy()
            obs, reward, terminated, truncated, info = env.step(action)
            total, done = total + reward, terminated or truncated
        returns.append(total)
        finals.append(info[final_key])
        statuses.append(info["status"])
    r = torch.tensor(returns)
    return {"episodes": episodes, "return_mean": float(r.mean()), "return_std": float(r.std()) if episodes > 1 else 0.0,
            f"median_final_{final_key}": float(torch.tensor(finals).median()),
            "statuses": {s: statuses.count(s) for s in sorted(set(statuses))}}


def time_predictor(predictor: Predictor, contexts: torch.Tensor, repeats: int) -> float:
    """Median seconds of one batched prediction (after two warm-up calls)."""
    for _ in range(2):
        predictor(contexts)
    times = []
    for _ in range(repeats):
        synchronize(contexts.device)
        t0 = time.perf_counter()
        predictor(contexts)
        synchronize(contexts.device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def warm_up_solver(problem: ContextualProblem, contexts: torch.Tensor, config: RunConfig) -> None:
    """One short solve so that the timed one does not pay for first-call overheads."""
    from dataclasses import replace

    short = replace(config, solver=replace(config.solver, steps=5))
    solve(problem, contexts[:8], short)


def compare_with_solver(
    problem: ContextualProblem,
    predictor: Predictor,
    contexts: torch.Tensor,
    config: RunConfig,
    solver_result: SolveResult | None = None,
) -> dict[str, Any]:
    """Objective gap and time ratio of the model against the solver on ``contexts``."""
    model_seconds = time_predictor(predictor, contexts, config.eval.timing_repeats)
    y_model = predictor(contexts)
    if solver_result is None:
        warm_up_solver(problem, contexts, config)
        solver_result = solve(problem, contexts, config)
    with torch.no_grad():
        f_model = problem.objective(y_model, contexts)
    gap = (f_model - solver_result.value).cpu().numpy()
    return {
        "contexts": int(contexts.shape[0]),
        "model_objective_mean": float(f_model.mean()),
        "solver_objective_mean": float(solver_result.value.mean()),
        "gap_mean": float(gap.mean()),
        "gap_median": float(np.median(gap)),
        "gap_p90": float(np.quantile(gap, 0.9)),
        "within_1e-2": float((gap <= 1e-2).mean()),
        "model_seconds": model_seconds,
        "solver_seconds": solver_result.seconds,
        "speedup": solver_result.seconds / max(model_seconds, 1e-12),
        "_y_model": y_model,
        "_y_solver": solver_result.solution,
        "_gap": gap,
    }


def public(result: dict[str, Any]) -> dict[str, Any]:
    """Drop the tensors kept for plotting."""
    return {k: v for k, v in result.items() if not k.startswith("_")}


def gym_episodes(config: RunConfig, predictor: Predictor, episodes: int, device: torch.device) -> dict[str, float]:
    """Run the agent in the single-instance Gymnasium env, as a user would."""
    env = gym.make(config.env, family=config.problem_family, **config.problem_kwargs())
    returns = []
    for ep in range(episodes):
        obs, _ = env.reset(seed=config.eval.seed + 7919 * (ep + 1))
        done, total = False, 0.0
        while not done:
            action = predictor(torch.as_tensor(obs, device=device).unsqueeze(0))[0].cpu().numpy()
            obs, reward, terminated, truncated, _ = env.step(action)
            total += float(reward)
            done = terminated or truncated
        returns.append(total)
    env.close()
    return {"episodes": episodes, "return_mean": float(np.mean(returns)), "return_std": float(np.std(returns))}


def amortization_gap_curve(
    problem: ContextualProblem, predictor: Predictor, config: RunConfig, device: torch.device
) -> dict[str, Any]:
    """The solver's value over its iterations and seconds against the model's one pass.

    The solver starts from uninformed random points (``solve(from_scratch=True)``):
    the model had no hint either.

    Answers: how many solver iterations (and how much time) does solving from
    scratch need before it is as good as the amortized model, and how much
    better does it get after that.
    """
    contexts = heldout_contexts(problem, config, device)
    model_seconds = time_predictor(predictor, contexts, config.eval.timing_repeats)
    with torch.no_grad():
        model_value = float(problem.objective(predictor(contexts), contexts).mean())
    warm_up_solver(problem, contexts, config)
    result = solve(problem, contexts, config, from_scratch=True)
    curve = [{"iteration": it, "seconds": s, "value_mean": float(v.mean()), "value_std": float(v.std())} for it, s, v in result.trace]
    match = next((p for p in curve if p["value_mean"] <= model_value), None)
    return {
        "contexts": int(contexts.shape[0]),
        "model_value_mean": model_value,
        "model_seconds": model_seconds,
        "solver_final_value_mean": curve[-1]["value_mean"],
        "solver_iterations_to_match": match["iteration"] if match else None,
        "solver_seconds_to_match": match["seconds"] if match else None,
        "speedup_to_match": (match["seconds"] / model_seconds) if match else None,
        "curve": curve,
    }
