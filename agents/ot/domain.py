"""The ot domain as the CLI sees it: ``amortize eval`` of a Meta OT run and ``amortize bench ot``."""

from __future__ import annotations

import argparse
from typing import Any

from agents.common.agent import Agent
from agents.common.contextual import evaluate as contextual_evaluate
from agents.common.domain import BenchCommand, Domain
from agents.common.heldout import heldout_contexts
from agents.common.tables import format_table
from agents.ot.bench import bench_ot, OT_BENCH_FAMILIES
from agents.ot.compare import OT_TOLERANCES, ours, reference_costs
from agents.ot.kinds import RUNS
from agents.ot.speed import ot_speed_rows

HELDOUT_SEED = 1_000_003


def evaluate_ot(agent: Agent, episodes: int) -> dict[str, Any]:
    """Gymnasium episodes and the dual gap against Sinkhorn's optimum (the contextual eval), then our Sinkhorn from
    zero and from the model's potentials on the same held-out pairs."""
    result = contextual_evaluate(agent, episodes)
    x = heldout_contexts(agent.problem, agent.config, agent.device)
    predictor = agent.load_predictor()
    records = ours(agent.problem, x, {"zero start": None, agent.config.agent.kind: predictor},
                   reference_costs(agent.problem, x), repeats=1)
    result["sinkhorn"] = {"pairs": int(x.shape[0]), "starts": [r.summary(x.shape[0]) for r in records]}
    agent.run.write_json("eval.json", result)
    return result


def eval_table(result: dict[str, Any]) -> str:
    c, g, s = result["vs_solver"], result["gymnasium"], result["sinkhorn"]
    head = format_table(["agent", "return", "dual gap mean", "gap median", "model ms", "Sinkhorn ms"],
                        [[result["agent"], g["return_mean"], c["gap_mean"], c["gap_median"], c["model_seconds"] * 1e3,
                          c["solver_seconds"] * 1e3]])
    rows = [[r["label"], *[r[f"median_iterations_{t:g}"] for t in OT_TOLERANCES],
             *[r[f"ms_per_pair_{t:g}"] for t in OT_TOLERANCES]] for r in s["starts"]]
    its = format_table(["Sinkhorn start", *[f"med its {t:g}" for t in OT_TOLERANCES],
                        *[f"ms/pair {t:g}" for t in OT_TOLERANCES]], rows)
    return (f"{head}\n\n{its}\n{s['pairs']} held-out pairs, our batched Sinkhorn; Sinkhorn ms: the float64 reference "
            "solve to the family's reference_tol")


def _arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--family", dest="ot_family", default="digits", choices=OT_BENCH_FAMILIES,
                        help="measures: digits or gaussians (default digits)")
    parser.add_argument("--checkpoint", action="append", metavar="RUN_DIR",
                        help="a trained ot run, a model file, or shipped:digits (repeat for several); none: the zero "
                             "start only")
    parser.add_argument("--contexts", type=int, default=256, help="held-out pairs, solved as one batch (default 256)")
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats of our batched solves (default 3)")
    parser.add_argument("--no-pot", action="store_true", help="skip POT (its loop takes about a minute on 256 pairs)")


def _bench(args: argparse.Namespace) -> dict[str, Any]:
    return bench_ot(family=args.ot_family, checkpoints=args.checkpoint or [], contexts=args.contexts,
                    repeats=args.repeats, with_pot=not args.no_pot, name=args.name or "bench-ot", device=args.device,
                    seed=args.seed, root=args.root)


DOMAIN = Domain(
    runs=RUNS,
    speed=ot_speed_rows,
    evaluate=evaluate_ot,
    eval_table=eval_table,
    no_gap="`amortize gap` compares a model with solving from scratch by Adam; an OT potential starts Sinkhorn, the "
           "real solver: use `amortize bench ot --checkpoint RUN` for iterations and seconds against POT",
    benches=(BenchCommand("ot", "Sinkhorn from zero and from learned potentials (Meta OT), ours and POT's, on held-out "
                          "pairs", _arguments, _bench, default_seed=HELDOUT_SEED),),
)
