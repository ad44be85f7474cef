"""The learning-to-optimize domain as the CLI sees it: eval against tuned Adam and ``amortize bench l2o``."""

from __future__ import annotations

import argparse
from typing import Any

from agents.common.domain import BenchCommand, Domain
from agents.common.tables import format_table
from agents.l2o.agent import HELDOUT_SEED, evaluate_l2o
from agents.l2o.bench import bench_l2o
from agents.l2o.kinds import RUNS
from agents.l2o.speed import l2o_speed_rows
from learned_optimizers.l2o.tasks import TRAINING_TASK_FAMILIES


def eval_table(result: dict[str, Any]) -> str:
    g, h = result["gymnasium"], result["heldout"]
    rows = [[name, g["return_mean"] if name == "learned" else "-", m["median_steps_to_target"], m["reached_target"],
             m["diverged"], m["median_value_over_target_at_horizon"]] for name, m in (("learned", h["learned"]), ("adam", h["adam"]))]
    return format_table(["method", "episode return", "med steps to Adam@T", "reached", "diverged", "med f@T / Adam f@T"], rows)


def _arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--family", dest="task_family", default="logreg",
                        help=f"task family: {', '.join(TRAINING_TASK_FAMILIES)} (default logreg)")
    parser.add_argument("--checkpoint", action="append", metavar="RUN_DIR",
                        help="a trained run on amortize/LearnToOptimize-v0 (repeat for several); none: classical methods only")
    parser.add_argument("--tasks", type=int, default=256, help="held-out tasks (default 256)")


def _bench(args: argparse.Namespace) -> dict[str, Any]:
    return bench_l2o(family=args.task_family, checkpoints=args.checkpoint, tasks=args.tasks, name=args.name or "bench-l2o",
                     device=args.device, seed=args.seed, root=args.root)


DOMAIN = Domain(
    runs=RUNS,
    evaluate=evaluate_l2o,
    eval_table=eval_table,
    no_gap="`amortize gap` compares a model's one pass with solving f(y; x) from scratch; a learned optimizer is itself an "
           "iterative solver: use `amortize bench l2o --checkpoint RUN` for its comparison with Adam",
    benches=(BenchCommand("l2o", "learned optimizers against tuned GD, momentum, Adam and scipy's L-BFGS", _arguments, _bench,
                          default_seed=HELDOUT_SEED),),
    speed=l2o_speed_rows,
)
