"""``amortize bench ot``: Sinkhorn from zero and from learned potentials, ours and POT's, on the same held-out pairs.

Rows: POT's log-domain ``ot.sinkhorn`` looped over the pairs from zero (the peer) and warm-started from each model
(``warmstart=(f / eps, 0)``); our batched Sinkhorn on all pairs at once from zero and from each model. Columns:
median iterations and milliseconds per pair to marginal violation 1e-3 and 1e-6 (a learned start's time includes
its forward pass), how many pairs converged, the error of the transport cost at the 1e-3 stop against a float64
solve to 1e-9. A JSON, and a PNG: an example pair, its converged plan beside the plan of the predicted potential,
and the median violation against iterations.
"""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import torch

from agents.common.benchmarks import load_trained_agents, require_same_problems
from agents.common.runs import DEFAULT_ROOT, RunDir
from agents.common.seeding import generator
from agents.common.tables import format_table
from agents.ot.compare import OT_TOLERANCES, PotentialPredictor, StartRecord, ours, pot, reference_costs
from agents.ot.kinds import RUNS
from agents.ot.plots import plot_ot_bench
from envs.common.vector import resolve_device
from learned_optimizers.families import make_problem
from learned_optimizers.ot.meta_ot import MetaOT
from learned_optimizers.ot.problem import OTPotentialProblem

OT_BENCH_FAMILIES = ("digits", "gaussians")


def _load(checkpoints: list[str], family: str, device: torch.device) -> list[tuple[str, PotentialPredictor, dict]]:
    """(label, predictor, problem settings) per checkpoint: a run directory, a model file, or shipped:<name>."""
    out = []
    for spec in checkpoints:
        if spec.startswith("shipped:") or spec.endswith(".pt"):
            meta = MetaOT.shipped(spec.removeprefix("shipped:"), device) if spec.startswith("shipped:") \
                else MetaOT.load(spec, device)
            if meta.problem.family != family:
                raise ValueError(f"--checkpoint {spec}: a model of {meta.problem.family!r}, not {family!r}")
            out.append((spec, meta.potentials, _settings(meta.problem)))
            continue
        agent = load_trained_agents(RUNS, [spec], family, device)[0]
        predictor = agent.load_predictor()
        out.append((agent.run.name, predictor, _settings(agent.problem)))
    return out


def _settings(problem: OTPotentialProblem) -> dict:
    import dataclasses

    return dataclasses.asdict(problem.settings)


def bench_ot(family: str = "digits", checkpoints: list[str] | None = None, contexts: int = 256, repeats: int = 3,
             with_pot: bool = True, name: str = "bench-ot", device: str = "auto", seed: int = 1_000_003,
             root: str | Path = DEFAULT_ROOT) -> dict[str, Any]:
    if family not in OT_BENCH_FAMILIES:
        raise ValueError(f"--family={family!r}; allowed: {', '.join(OT_BENCH_FAMILIES)}")
    if contexts < 1 or repeats < 1:
        raise ValueError(f"--contexts={contexts}, --repeats={repeats}: both must be >= 1")
    full = f"ot-{family}"
    dev = resolve_device(device)
    models = _load(list(checkpoints or []), full, dev)
    require_same_problems([{"family": full, **s} for _, _, s in models], "problems (grid, epsilon, measures)")
    problem: OTPotentialProblem = make_problem(full, **(models[0][2] if models else {}))
    print(f"bench ot: {contexts} held-out {family} pairs on a {problem.settings.grid}x{problem.settings.grid} grid, "
          f"epsilon {problem.settings.epsilon:g}; POT {'looped over the pairs' if with_pot else 'skipped'}")
    x = problem.sample_heldout_contexts(contexts, generator(seed, dev), dev)
    reference = reference_costs(problem, x)
    starts: dict[str, PotentialPredictor | None] = {"zero": None, **{label: p for label, p, _ in models}}
    records: list[StartRecord] = []
    if with_pot:
        records += pot(problem, x, starts, reference)
    records += ours(problem, x, starts, reference, repeats)
    summaries = [r.summary(contexts) for r in records]
    table = _table(summaries, contexts)
    bench_dir = RunDir.create(name, root)
    plot = plot_ot_bench(bench_dir.plots / f"ot_{family}.png", problem, x, starts, f"{name}: held-out {family} pairs")
    summary = {"family": full, "pairs": contexts, "eval_seed": seed, "device": str(dev), "repeats": repeats,
               "torch_threads": torch.get_num_threads(), "problem": _settings(problem),
               "checkpoints": list(checkpoints or []), "methods": summaries, "table": table}
    json_path = bench_dir.write_json("bench.json", summary)
    summary["paths"] = {"json": str(json_path), "plots": [str(plot)]}
    return summary


def _table(rows: list[dict], pairs: int) -> str:
    zero = {r["solver"]: r for r in rows if r["label"] == "zero"}
    peer = zero.get("POT", zero.get("ours"))
    lines = []
    for r in rows:
        z = zero[r["solver"]]
        label = r["label"] if len(r["label"]) <= 28 else r["label"][:27] + "~"
        lines.append([r["solver"], label, r["median_iterations_0.001"],
                      z["median_iterations_0.001"] / max(r["median_iterations_0.001"], 1),
                      r["ms_per_pair_0.001"], peer["ms_per_pair_0.001"] / r["ms_per_pair_0.001"],
                      r["median_iterations_1e-06"], r["ms_per_pair_1e-06"],
                      peer["ms_per_pair_1e-06"] / r["ms_per_pair_1e-06"],
                      f'{r["converged_1e-06"]}/{pairs}', r["median_cost_error_0.001"]])
    peer_name = "POT from zero" if "POT" in zero else "ours from zero"
    table = format_table(["solver", "start", "its 1e-3", "zero/this", "ms 1e-3", "x peer", "its 1e-6", "ms 1e-6",
                          "x peer", "solved 1e-6", "cost err"], lines)
    legend = (f"its: median Sinkhorn iterations to marginal violation 1e-3 / 1e-6 (POT's test, checked every 10); "
              f"zero/this: the same solver's zero start over this start; ms: per pair, the model's forward pass "
              f"included (ours: the whole batch of {pairs} at once, median of repeats; POT: one pair at a time); "
              f"x peer: {peer_name}'s ms over this row's; solved: pairs below 1e-6; "
              f"cost err: median |<C,P> - <C,P*>| / <C,P*> "
              f"at the 1e-3 stop "
              f"(P*: float64 Sinkhorn to 1e-9); torch threads {torch.get_num_threads()}")
    return table + "\n" + textwrap.fill(legend, 118)
