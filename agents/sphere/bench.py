"""``amortize bench FAMILY``: learned against classical on the same problems, in one run.

Each family trains (or loads) its learned methods, solves the same held-out
problems with the classical method once, and reports every method as a ratio
to it: objective gap and speed-up. A table goes to stdout, JSON and PNGs to
``runs/<name>/``.
"""

from __future__ import annotations

import copy
import time
from pathlib import Path
from typing import Any

from agents.common.config import config_from_dict
from agents.common.evaluation import compare_with_solver, public, warm_up_solver
from agents.common.heldout import heldout_contexts, solve
from agents.common.plots import plot_gap_histogram
from agents.common.tables import format_table, share_of
from agents.common.runs import DEFAULT_ROOT, RunDir
from agents.sphere.kinds import RUNS
from agents.sphere.plots import plot_sphere_predictions
from envs.common.vector import resolve_device

#: Short budgets: the three losses on the sphere in about two minutes on 2 CPU cores.
SPHERE_BASE: dict[str, Any] = {
    "env": "amortize/Sphere-v0",
    "problem": {"family": "sphere", "n_components": 4, "gamma": 0.5, "beta": 0.2},
    "eval": {"contexts": 512},
    "solver": {"restarts": 8, "steps": 300, "learning_rate": 0.05},
}
SPHERE_METHODS: dict[str, dict[str, Any]] = {
    "objective": {
        "agent": {"kind": "objective", "hidden_sizes": [128, 128], "learning_rate": 1e-3, "batch_size": 256},
        "train": {"total_steps": 3000, "checkpoint_every": 1000, "log_every": 50, "eval_every": 500},
    },
    "regression": {
        "agent": {"kind": "regression", "hidden_sizes": [128, 128], "learning_rate": 1e-3, "batch_size": 256, "dataset_size": 8192},
        "train": {"total_steps": 3000, "checkpoint_every": 1000, "log_every": 50, "eval_every": 500},
    },
    "sac": {
        "agent": {"kind": "sac", "learning_rate": 1e-3, "batch_size": 256, "learning_starts": 1000, "n_envs": 8,
                  "net_arch": [128, 128], "gradient_steps": 1, "train_freq": 1},
        "train": {"total_steps": 40000, "checkpoint_every": 10000, "log_every": 1000, "eval_every": 5000},
    },
}


def bench_sphere(
    name: str = "bench-sphere",
    methods: list[str] | None = None,
    device: str = "auto",
    seed: int = 0,
    budget_scale: float = 1.0,
    root: str | Path = DEFAULT_ROOT,
) -> dict[str, Any]:
    methods = methods or list(SPHERE_METHODS)
    unknown = [m for m in methods if m not in SPHERE_METHODS]
    if unknown:
        raise ValueError(f"--methods: unknown {', '.join(unknown)}; allowed: {', '.join(SPHERE_METHODS)}")
    if budget_scale <= 0:
        raise ValueError(f"--budget-scale={budget_scale}: must be > 0")
    bench_dir = RunDir.create(name, root)
    configs = {}
    for m in methods:
        raw = copy.deepcopy({**SPHERE_BASE, **SPHERE_METHODS[m], "seed": seed, "device": device, "name": m})
        raw["train"]["total_steps"] = max(1, int(raw["train"]["total_steps"] * budget_scale))
        configs[m] = config_from_dict(raw, RUNS.schema())
    first = next(iter(configs.values()))
    dev = resolve_device(device)
    problem = first.make_problem()
    contexts = heldout_contexts(problem, first, dev)
    warm_up_solver(problem, contexts, first)
    solver_result = solve(problem, contexts, first)
    print(f"solver: multi-start Adam ({first.solver.restarts} starts x {first.solver.steps} steps) on "
          f"{contexts.shape[0]} held-out contexts: {solver_result.seconds:.3f}s")

    results: dict[str, dict[str, Any]] = {}
    for m, config in configs.items():
        run = RunDir.create(m, bench_dir.path)
        run.save_config(config)
        agent = RUNS.make_agent(config, run)
        t0 = time.perf_counter()
        agent.train()
        train_seconds = time.perf_counter() - t0
        comparison = compare_with_solver(problem, agent.load_predictor(), contexts, config, solver_result)
        run.write_json("eval.json", {"run": run.name, "agent": m, "vs_solver": public(comparison)})
        results[m] = {**comparison, "train_seconds": train_seconds, "train_steps": config.train.total_steps, "run": str(run.path)}

    n = int(contexts.shape[0])
    rows = [["solver", "-", "-", float(solver_result.value.mean()), 0.0, 0.0, share_of(1.0, n),
             solver_result.seconds * 1e3, 1.0]]
    for m, r in results.items():
        rows.append([m, r["train_steps"], r["train_seconds"], r["model_objective_mean"], r["gap_mean"], r["gap_median"],
                     share_of(r["within_1e-2"], n), r["model_seconds"] * 1e3, r["speedup"]])
    table = format_table(
        ["method", "train steps", "train s", "f mean", "gap mean", "gap median", "gap<=1e-2", "predict ms", "speedup"],
        rows,
    )
    summary = {
        "family": "sphere",
        "contexts": int(contexts.shape[0]),
        "solver": {"objective_mean": float(solver_result.value.mean()), "seconds": solver_result.seconds,
                   "restarts": first.solver.restarts, "steps": first.solver.steps},
        "methods": {m: public(r) for m, r in results.items()},
        "table": table,
    }
    json_path = bench_dir.write_json("bench.json", summary)
    plots = [
        plot_sphere_predictions(bench_dir.plots / "sphere.png", {m: r["_y_model"] for m, r in results.items()},
                                solver_result.solution, "held-out predictions vs solver optima"),
        plot_gap_histogram(bench_dir.plots / "objective_gap.png", {m: r["_gap"] for m, r in results.items()},
                           "f(model) - f(solver) on held-out contexts"),
    ]
    summary["paths"] = {"json": str(json_path), "plots": [str(p) for p in plots], "tensorboard": str(bench_dir.path)}
    return summary
