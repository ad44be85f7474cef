"""``amortize bench fixed-point``: plain iteration, Anderson and trained agents on the same held-out contexts.

Every method runs 2K steps (K = the trained horizon) on the same float64
held-out contexts; the table gives map evaluations to relative residual 1e-4
and 1e-6 (median and shifted geometric mean, shift 10, unreached counted at the
2K budget), the residual after K and after 2K steps (the generalization row),
how often a method ends worse than AA after K, how often the safeguard fired,
and wall-clock per solve. AA is the reference of every ratio.
"""

from __future__ import annotations

import dataclasses
import textwrap
from pathlib import Path
from typing import Any

import torch

from agents.common.benchmarks import load_trained_agents, problem_identity, require_same_problems
from agents.common.plots import plot_residual_curves
from agents.common.tables import format_table, share_of
from agents.common.runs import DEFAULT_ROOT, RunDir
from agents.common.speed import interleaved_medians
from agents.fixed_point.agent import TOLERANCES, LearnedAccelerator, heldout_fixed_point_contexts, trace_metrics
from agents.fixed_point.bench_scs import scs_benchmark
from agents.fixed_point.kinds import RUNS
from envs.common.vector import resolve_device
from learned_optimizers.common.fixed_point_map import FixedPointMap, FixedPointTaskSettings
from learned_optimizers.common.timing import timed
from learned_optimizers.conic.maps import SCSMap
from learned_optimizers.families import FIXED_POINT_FAMILIES, make_map
from learned_optimizers.fixed_point import core as fp

#: fields that describe the MDP, not the map: runs may differ in them and still face the same problems
_MDP_FIELDS = {f.name for f in dataclasses.fields(FixedPointTaskSettings)} - {"family_seed"}


def _map_identity(family: str, settings: Any) -> dict[str, Any]:
    return problem_identity(family, settings, _MDP_FIELDS)


def _load_runs(paths: list[str], family: str, device: torch.device) -> list[tuple[str, LearnedAccelerator, FixedPointMap]]:
    out = []
    for agent in load_trained_agents(RUNS, paths, family, device):
        fp_map = make_map(family, **agent.config.problem_kwargs())
        out.append((f"{agent.run.name} ({agent.config.agent.kind}, {fp_map.settings.mode})", agent.load_accelerator(), fp_map))
    require_same_problems([_map_identity(family, m.settings) for _, _, m in out], "maps")
    return out


#: SCS families run at least this many iterations (SCS needs hundreds on the SOCP families)
SCS_MIN_BUDGET = 200


def _reproduction_line(r: dict[str, Any]) -> str:
    return (f"reproduction (our torch SCS solver vs scs, acceleration and diagonal rescaling off): same status on "
            f"{r['same_status']}/{r['problems']}, iterations within 10% on {r['iterations_within_10pct']}/{r['problems']} "
            f"(largest difference {r['max_relative_iteration_difference']:.1%})")


def _timed(fn, device: torch.device) -> float:
    return timed(fn, device)[1]


def bench_fixed_point(
    family: str = "deq",
    checkpoints: list[str] | None = None,
    name: str = "bench-fixed-point",
    device: str = "auto",
    seed: int = 1_000_003,
    contexts: int = 512,
    safeguard: float | None = None,
    root: str | Path = DEFAULT_ROOT,
) -> dict[str, Any]:
    if family not in FIXED_POINT_FAMILIES:
        raise ValueError(f"--family={family!r}; allowed: {', '.join(FIXED_POINT_FAMILIES)}")
    if contexts < 1:
        raise ValueError(f"--contexts={contexts}: must be >= 1")
    if safeguard is not None and safeguard <= 0:
        raise ValueError(f"--safeguard={safeguard}: must be > 0 (1 rejects any step that raises the residual)")
    dev = resolve_device(device)
    runs = _load_runs(checkpoints or [], family, dev)
    base_map = runs[0][2] if runs else make_map(family)
    K = max([m.settings.max_steps for _, _, m in runs] or [base_map.settings.max_steps])
    steps = 2 * K
    if isinstance(base_map, SCSMap):
        steps = max(steps, SCS_MIN_BUDGET)
    x = heldout_fixed_point_contexts(base_map, seed, contexts, dev)
    plain, aa = (dataclasses.replace(base_map.settings, mode=mode) for mode in ("neural_fp", "hyper_aa"))

    aa_label = f"anderson (M={aa.memory})"
    solvers = {"plain iteration": lambda: fp.solve(base_map, x, plain, K), aa_label: lambda: fp.solve(base_map, x, aa, K)}
    for label, acc, fp_map in runs:
        solvers[label] = lambda acc=acc, fp_map=fp_map: acc.solve(fp_map, x, K, safeguard=safeguard)
    # warmed up, then the median of 3 interleaved repeats (a first call pays one-off costs)
    seconds = {label: secs for label, (secs, _) in interleaved_medians(solvers, str(dev), repeats=3).items()}
    # the 2K-step curves (the generalization columns) are run once more, untimed
    full = {"plain iteration": fp.solve(base_map, x, plain, steps), aa_label: fp.solve(base_map, x, aa, steps)}
    for label, acc, fp_map in runs:
        full[label] = acc.solve(fp_map, x, steps, safeguard=safeguard)

    aa_at_K = full[aa_label].ratios[:, K]
    aa_metrics = trace_metrics(full[aa_label], K)
    rows, clock_rows, methods = [], [], {}
    for label, trace in full.items():
        record: dict[str, Any] = trace_metrics(trace, K)
        for tol in TOLERANCES:
            key = f"median_evaluations_to_{tol:g}"
            record[f"aa_over_method_median_{tol:g}"] = aa_metrics[key] / record[key]
        at_K, at_2K = trace.ratios[:, K], trace.ratios[:, steps]
        record["median_ratio_at_2K"] = float(at_2K.median())
        record["worse_than_aa_at_K"] = float((~(at_K <= aa_at_K)).double().mean())
        record["diverged_at_2K"] = float((~torch.isfinite(at_2K)).double().mean())
        record["safeguard_fired"] = float((trace.safeguard_steps > 0).double().mean())
        record["ms_per_solve_K_steps"] = seconds[label] / contexts * 1e3
        record["ms_per_batch_K_steps"] = seconds[label] * 1e3
        for tol in TOLERANCES:  # the clock to tolerance: the measured cost of one step (forward pass included)
            # times the median map evaluations the method needs (inf where the median never got there)
            record[f"median_ms_per_problem_to_{tol:g}"] = seconds[label] / K / contexts * 1e3 \
                * record[f"median_evaluations_to_{tol:g}"]
        methods[label] = record
        rows.append([label, record["median_evaluations_to_0.0001"], record["aa_over_method_median_0.0001"],
                     record["sgm_evaluations_to_0.0001"], share_of(record["reached_0.0001"], contexts),
                     record["median_evaluations_to_1e-06"], share_of(record["reached_1e-06"], contexts)])
        clock_rows.append([label, record["median_ratio_at_K"], share_of(record["worse_than_aa_at_K"], contexts),
                           record["median_ratio_at_2K"], share_of(record["safeguard_fired"], contexts),
                           record["ms_per_batch_K_steps"],
                           record["median_ms_per_problem_to_0.0001"]])
    # two tables of at most ~110 columns: evaluations to tolerance; then residuals at K and 2K, and the clock
    table = format_table(["method", "med 1e-4", "AA/method", "sgm 1e-4", "reached 1e-4", "med 1e-6", "reached 1e-6"],
                         rows)
    table += "\n\n" + format_table(["method", "med ratio @K", "worse @K", "med ratio @2K", "safeguard", "ms/batch",
                                     "ms to 1e-4"], clock_rows)
    table += "\n" + textwrap.fill(f"med, sgm: map evaluations to the residual ratio; reached: problems within the tolerance by step {steps}; worse @K: problems whose residual ratio at K = {K} is above Anderson's; safeguard: problems where it fired. "
                                  f"ms/batch: {contexts} contexts, K steps. ms to 1e-4, per problem: one step's measured "
                                  "seconds (a model's forward pass included) times the median evaluations to 1e-4", 110)
    scs_part = None
    if isinstance(base_map, SCSMap):
        scs_part = scs_benchmark(family, base_map, x, runs, steps, lambda fn: _timed(fn, dev))
        table = table + "\n\nSCS's own stopping test (eps_abs = eps_rel), checked every iteration; real scs is the peer:\n" \
            + scs_part["table"] + "\n" + textwrap.fill(_reproduction_line(scs_part["reproduction"]), 110)
    bench_dir = RunDir.create(name, root)
    plot = plot_residual_curves(bench_dir.plots / f"residual_{family}.png", {k: t.ratios for k, t in full.items()}, K,
                                f"{family}: held-out contexts (median, quartiles)")
    summary = {"family": family, "contexts": contexts, "K": K, "eval_seed": seed, "safeguard": safeguard,
               "device": str(dev), "map": _map_identity(family, base_map.settings),
               "checkpoints": list(checkpoints or []), "methods": methods, "table": table}
    if scs_part is not None:
        summary["scs"] = {"methods": scs_part["methods"], "reproduction": scs_part["reproduction"], "budget": steps}
    json_path = bench_dir.write_json("bench.json", summary)
    summary["paths"] = {"json": str(json_path), "plots": [str(plot)], "tensorboard": str(bench_dir.path)}
    return summary
