"""The sphere domain as the CLI sees it: the contextual eval and gap, its map of predictions, ``amortize bench sphere``."""

from __future__ import annotations

import argparse
from typing import Any

from agents.common.cli_args import csv_list
from agents.common.contextual import contextual_domain
from agents.common.domain import BenchCommand
from agents.sphere.bench import SPHERE_METHODS, bench_sphere
from agents.sphere.kinds import RUNS
from agents.sphere.plots import plot_sphere_predictions


def _bench_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--methods", help=f"comma-separated subset of {','.join(SPHERE_METHODS)}")
    parser.add_argument("--budget-scale", type=float, default=1.0, help="multiply every training budget (default 1)")


def _bench(args: argparse.Namespace) -> dict[str, Any]:
    return bench_sphere(name=args.name or "bench-sphere", methods=csv_list(args.methods), device=args.device,
                        seed=args.seed, budget_scale=args.budget_scale, root=args.root)


DOMAIN = contextual_domain(
    RUNS,
    plot_predictions=plot_sphere_predictions,
    benches=(BenchCommand("sphere", "the three amortization losses against multi-start Adam (tutorial 4.2)",
                          _bench_arguments, _bench),),
)
