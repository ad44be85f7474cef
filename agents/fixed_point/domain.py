"""The fixed-point domain as the CLI sees it: eval against Anderson and ``amortize bench fixed-point``."""

from __future__ import annotations

import argparse
from typing import Any

from agents.common.domain import BenchCommand, Domain
from agents.common.tables import format_table
from agents.fixed_point.agent import HELDOUT_SEED, evaluate_fixed_point
from agents.fixed_point.bench import bench_fixed_point
from agents.fixed_point.kinds import RUNS
from agents.fixed_point.speed import fixed_point_speed_rows
from learned_optimizers.families import FIXED_POINT_FAMILIES


def eval_table(result: dict[str, Any]) -> str:
    g, h = result["gymnasium"], result["heldout"]
    rows = [[name, g["return_mean"] if name == "learned" else "-", m["median_evaluations_to_0.0001"],
             m["median_evaluations_to_1e-06"], m["median_ratio_at_K"]] for name, m in (("learned", h["learned"]), ("anderson", h["anderson"]))]
    return format_table(["method", "episode return", "med evals 1e-4", "med evals 1e-6", "med ratio @K"], rows)


def _arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--family", dest="map_family", default="deq",
                        help=f"map family: {', '.join(FIXED_POINT_FAMILIES)} (default deq)")
    parser.add_argument("--checkpoint", action="append", metavar="RUN_DIR",
                        help="a trained run on amortize/FixedPoint-v0 (repeat for several); none: classical methods only")
    parser.add_argument("--contexts", type=int, default=512, help="held-out contexts (default 512)")
    parser.add_argument("--safeguard", type=float, metavar="FACTOR",
                        help="replace a learned step by the classical one when it multiplies the residual by more than FACTOR")


def _bench(args: argparse.Namespace) -> dict[str, Any]:
    return bench_fixed_point(family=args.map_family, checkpoints=args.checkpoint, contexts=args.contexts,
                             safeguard=args.safeguard, name=args.name or "bench-fixed-point", device=args.device,
                             seed=args.seed, root=args.root)


DOMAIN = Domain(
    runs=RUNS,
    evaluate=evaluate_fixed_point,
    eval_table=eval_table,
    no_gap="`amortize gap` compares a model's one pass with solving f(y; x) from scratch; a fixed-point accelerator is "
           "itself a solver: use `amortize bench fixed-point --checkpoint RUN` for its comparison with AA",
    speed=fixed_point_speed_rows,
    benches=(BenchCommand("fixed-point", "plain iteration and Anderson against trained fixed-point agents", _arguments, _bench,
                          default_seed=HELDOUT_SEED),),
)
