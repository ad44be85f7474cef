"""``amortize bench l2o``: learned optimizers against tuned GD, momentum, Adam and scipy's L-BFGS on the same tasks.

Every method starts from the same parameters on the same held-out tasks
(``--seed``, float64) and runs 2T steps (T = the trained horizon). The
reference is tuned Adam's objective after T steps: the table gives each
method's objective after T/10, T/2 and T steps, the steps it needs to reach
Adam's step-T objective (median; shifted geometric mean, shift 10, unreached
counted at 2T; fraction reached), Adam's median steps over the method's, how
often it diverges, and wall-clock per step. GD, momentum and Adam use the
learning rate their sweep chose on training tasks (recorded in the JSON);
L-BFGS is scipy's (one task at a time, float64; it may spend several objective
evaluations per iteration, also recorded).

Generalization rows for every learned run: 2x the trained steps (against
Adam's step-2T objective), a 4x larger problem of the family, and a family not
seen in training. Off the trained family the learned update runs on top of
that family's own tuned Adam rate (its actions are in units of it), the same
rate Adam gets.
"""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import torch

from agents.common.benchmarks import load_trained_agents, problem_identity, require_same_problems
from agents.common.plots import plot_quantile_curves
from agents.common.tables import format_table, share_of
from agents.common.runs import DEFAULT_ROOT, RunDir
from agents.common.speed import interleaved_medians
from agents.l2o.agent import LearnedOptimizer, heldout_tasks, optimizer_metrics
from agents.l2o.kinds import RUNS
from envs.common.vector import resolve_device
from learned_optimizers.l2o import core as l2o
from learned_optimizers.l2o.classical import FIRST_ORDER_METHODS, OptimizerTrace, first_order_trace, lbfgs_trace
from learned_optimizers.l2o.tasks import TRAINING_TASK_FAMILIES, TrainingTaskFamily, make_tasks

#: the family each trained family is tested on as "not seen in training"
UNSEEN_FAMILY = {"logreg": "robust", "robust": "logreg", "mlp": "logreg", "quadratic": "logreg"}
#: size factor of the larger-problem row
SIZE_FACTOR = 4


def reported_steps(horizon: int) -> tuple[int, int, int]:
    """The steps whose objective the table shows: 10, 50 and 100 for the default horizon of 100."""
    return max(1, horizon // 10), max(1, horizon // 2), horizon
#: settings of the MDP around the tasks: runs may differ in them and still face the same tasks
_MDP_FIELDS = {"history", "learning_rate", "action", "max_correction", "blowup"}


def _task_identity(tasks: TrainingTaskFamily) -> dict[str, Any]:
    return problem_identity(tasks.family, tasks.settings, _MDP_FIELDS)


def _load_runs(paths: list[str], family: str, device: torch.device) -> list[tuple[str, LearnedOptimizer, TrainingTaskFamily]]:
    agents = load_trained_agents(RUNS, paths, family, device)
    out = [(f"{a.run.name} ({a.config.agent.kind})", a.load_optimizer(), a.problem) for a in agents]
    require_same_problems([_task_identity(t) for _, _, t in out], "task distributions")
    return out


def _record(trace: OptimizerTrace, target: torch.Tensor, horizon: int, adam_median: float | None) -> dict[str, Any]:
    record: dict[str, Any] = optimizer_metrics(trace, target, horizon)
    for k in reported_steps(horizon):
        record[f"median_objective_at_{k}"] = float(trace.values[:, k].median())
    if adam_median is not None:
        record["adam_over_method_median_steps"] = adam_median / record["median_steps_to_target"]
    return record


def _generalization(label: str, optimizer: LearnedOptimizer, scenario: str, tasks: TrainingTaskFamily, seed: int, n: int,
                    device: torch.device, steps: int, target_step: int) -> dict[str, Any]:
    """Tuned Adam and the learned update (on that family's tuned Adam rate) on fresh tasks of ``tasks``."""
    x, phi0 = heldout_tasks(tasks, seed, n, device)
    rate = l2o.base_learning_rate(tasks)
    adam = l2o.solve(tasks, x, phi0, steps, lr=rate)
    learned = optimizer.solve(tasks, x, phi0, steps, learning_rate=rate)
    target = adam.values[:, target_step]
    adam_record = _record(adam, target, target_step, None)
    record = _record(learned, target, target_step, adam_record["median_steps_to_target"])
    return {"scenario": scenario, "method": label, "family": tasks.family, "size": tasks.solution_dim,
            "adam_learning_rate": rate, "target_step": target_step, "learned": record, "adam": adam_record}


def bench_l2o(
    family: str = "logreg",
    checkpoints: list[str] | None = None,
    name: str = "bench-l2o",
    device: str = "auto",
    seed: int = 1_000_003,
    tasks: int = 256,
    root: str | Path = DEFAULT_ROOT,
) -> dict[str, Any]:
    if family not in TRAINING_TASK_FAMILIES:
        raise ValueError(f"--family={family!r}; allowed: {', '.join(TRAINING_TASK_FAMILIES)}")
    if tasks < 1:
        raise ValueError(f"--tasks={tasks}: must be >= 1")
    dev = resolve_device(device)
    runs = _load_runs(checkpoints or [], family, dev)
    family_tasks = runs[0][2] if runs else make_tasks(family)
    T = family_tasks.settings.horizon
    steps = 2 * T
    x, phi0 = heldout_tasks(family_tasks, seed, tasks, dev)

    sweeps = {m: l2o.tuned_learning_rate(family_tasks, m) for m in FIRST_ORDER_METHODS}
    solvers: dict[str, Any] = {}
    for method, sweep in sweeps.items():
        solvers[f"{method} (lr {sweep.best:.3g})"] = \
            lambda method=method, rate=sweep.best: first_order_trace(family_tasks.objective, x, phi0, method, rate, steps)
    solvers["L-BFGS (scipy)"] = lambda: lbfgs_trace(family_tasks.objective, x, phi0, steps)
    for label, optimizer, run_tasks in runs:
        solvers[label] = lambda optimizer=optimizer, run_tasks=run_tasks: optimizer.solve(run_tasks, x, phi0, steps)
    # the torch methods warmed up, then the median of 3 repeats that interleave them (load on a shared machine
    # then falls on all alike); scipy's L-BFGS has nothing to warm and takes seconds, so it runs once
    lbfgs = "L-BFGS (scipy)"
    measured = interleaved_medians({k: f for k, f in solvers.items() if k != lbfgs}, str(dev), repeats=3)
    measured.update(interleaved_medians({lbfgs: solvers[lbfgs]}, str(dev), repeats=1, cold=(lbfgs,)))
    timed_runs = {label: measured[label] for label in solvers}  # the table's order
    traces: dict[str, OptimizerTrace] = {label: result for label, (_, result) in timed_runs.items()}
    seconds = {label: secs for label, (secs, _) in timed_runs.items()}

    adam_label = next(k for k in traces if k.startswith("adam"))
    target = traces[adam_label].values[:, T]
    adam_median = optimizer_metrics(traces[adam_label], target, T)["median_steps_to_target"]
    methods, rows, clock_rows = {}, [], []
    for label, trace in traces.items():
        record = _record(trace, target, T, adam_median)
        record["ms_per_step_batch"] = seconds[label] / steps * 1e3
        if trace.evaluations is not None:
            record["median_objective_evaluations"] = float(trace.evaluations.median())
        methods[label] = record
        # the clock to Adam's value: one step's measured seconds per task (a model's forward pass included)
        # times the median steps the method needs
        record["median_ms_per_task_to_target"] = record["ms_per_step_batch"] / tasks * record["median_steps_to_target"]
        rows.append([label, *(record[f"median_objective_at_{k}"] for k in reported_steps(T))])
        clock_rows.append([label, record["median_steps_to_target"], record["adam_over_method_median_steps"],
                           record["sgm_steps_to_target"], share_of(record["reached_target"], tasks),
                           share_of(record["diverged"], tasks),
                           record["ms_per_step_batch"], record["median_ms_per_task_to_target"]])
    # two tables of at most ~110 columns: the objective along the way; then steps and milliseconds to Adam's value
    table = format_table(["method", *(f"med f@{k}" for k in reported_steps(T))], rows) + "\n\n" + format_table(
        ["method", f"med steps to f@{T}", "Adam/method", "sgm steps", "reached", "diverged", "ms/step",
         "ms/task to f"], clock_rows)
    table += "\n" + textwrap.fill(f"f@{T}: tuned Adam's value at step {T}. ms/step: {tasks} tasks at once. ms/task to f: "
                                  "ms/step / tasks x the median steps to it (a model's forward pass included)", 110)

    general, grows = [], []
    unseen = UNSEEN_FAMILY[family]
    target_2T = traces[adam_label].values[:, steps]
    adam_2T = _record(traces[adam_label], target_2T, steps, None)
    for label, optimizer, run_tasks in runs:
        general.append({"scenario": f"{steps} steps (2x trained)", "method": label, "family": family, "size": run_tasks.solution_dim,
                        "target_step": steps, "learned": _record(traces[label], target_2T, steps, adam_2T["median_steps_to_target"]),
                        "adam": adam_2T})
        general.append(_generalization(label, optimizer, f"{SIZE_FACTOR}x size", run_tasks.scaled(SIZE_FACTOR), seed, tasks, dev, steps, T))
        mdp = {k: getattr(run_tasks.settings, k) for k in _MDP_FIELDS | {"horizon"} if k != "learning_rate"}  # the run's own MDP
        general.append(_generalization(label, optimizer, f"unseen family {unseen}", make_tasks(unseen, **mdp), seed, tasks, dev, steps, T))
    for g in general:
        r, a = g["learned"], g["adam"]
        grows.append([g["method"], g["scenario"], g["size"], a["median_steps_to_target"], r["median_steps_to_target"],
                      r["adam_over_method_median_steps"],
                      share_of(r["reached_target"], tasks), share_of(r["diverged"], tasks),
                      r["median_value_over_target_at_horizon"]])
    if grows:
        table += "\n\nGeneralization (learned vs tuned Adam on the same tasks; target: Adam's objective at the target step):\n"
        table += format_table(["method", "scenario", "size", "Adam", "learned", "Adam/learned",
                               "reached", "diverged", "f / Adam f"], grows)
        table += "\n" + textwrap.fill("Adam, learned: median steps to the target; reached, diverged: the learned "
                                      "update's tasks; f / Adam f: median ratio at the target step", 110)

    bench_dir = RunDir.create(name, root)
    # suboptimality against the lowest value any method reached on the task, so the tails stay visible
    best = torch.stack([t.values.nan_to_num(nan=float("inf")).min(1).values for t in traces.values()]).min(0).values.unsqueeze(1)
    curves = {label: ((t.values - best) / (t.values[:, :1] - best)).clamp(min=1e-12) for label, t in traces.items()}
    adam_level = float(((target.unsqueeze(1) - best) / (traces[adam_label].values[:, :1] - best)).median())
    plot = plot_quantile_curves(bench_dir.plots / f"objective_{family}.png", curves, T, f"T = {T} (trained horizon)",
                                f"{family}: held-out tasks (median, quartiles); dashed: Adam's median at step {T}", "step",
                                "(f_k - f_best) / (f_0 - f_best)", (adam_level,))
    summary = {"family": family, "tasks": tasks, "horizon": T, "eval_seed": seed, "device": str(dev),
               "task_distribution": _task_identity(family_tasks),
               "tuned_learning_rates": {m: {"best": s.best, "steps": s.steps, "scores": {f"{k:g}": v for k, v in s.scores.items()}}
                                        for m, s in sweeps.items()},
               "checkpoints": list(checkpoints or []), "methods": methods, "generalization": general, "table": table}
    json_path = bench_dir.write_json("bench.json", summary)
    summary["paths"] = {"json": str(json_path), "plots": [str(plot)], "tensorboard": str(bench_dir.path)}
    return summary
