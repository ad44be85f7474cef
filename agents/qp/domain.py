"""The qp domain as the CLI sees it: RLQP's eval, ``amortize bench qp`` (our OSQP core, RLQP, real osqp) and ``bench td3``."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from agents.common.agent import Agent
from agents.common.cli_args import csv_list
from agents.common.domain import BenchCommand, Domain
from agents.qp.bench import bench_qp
from agents.qp.bench_rlqp import bench_rlqp
from agents.qp.bench_td3 import bench_td3
from agents.qp.bench_warm_start import BENCH_SEED, bench_warm_start
from agents.qp.evaluation import evaluate_rlqp, rlqp_eval_table
from agents.qp.kinds import RUNS
from agents.qp.rlqp_td3 import RLQPTrainer
from agents.qp.speed import qp_speed_rows
from agents.qp.warm_start import WarmStartRegression
from agents.qp.warm_start_rl import WarmStartSB3
from learned_optimizers.qp.warm_start import WarmStarter


def evaluate(agent: Agent, episodes: int) -> dict[str, Any]:
    """An RLQP run is a solver, not a context -> solution model: its policy against real osqp. A warm-start run:
    the real osqp from its starts on ``episodes`` held-out contexts in sequence (the warm-start bench's rows)."""
    if isinstance(agent, (WarmStartRegression, WarmStartSB3)):
        if isinstance(agent, WarmStartSB3):
            starters = [(agent.run.name, agent.starter(agent.load_model()))]
        else:
            path = agent.model_dir / agent.model_file
            if not path.is_file():
                raise FileNotFoundError(f"{path}: no trained warm starter in this run yet")
            starters = [(str(path), WarmStarter.load(path))]
        result = bench_warm_start([], contexts=max(episodes, 2), seed=agent.config.eval.seed, into=agent.run,
                                  sequences=1, starters=starters)
        return {"warm_start": result}
    policy = agent.model_dir / RLQPTrainer.policy_file
    if not policy.is_file():
        raise FileNotFoundError(f"{policy}: no trained policy in this run yet (train or --resume it to the end first)")
    return evaluate_rlqp(agent.run, agent.config, policy, episodes, agent.device)


def _qp_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--classes", help="comma-separated subset of random,eq,portfolio,control,lasso,huber,svm (default all)")
    parser.add_argument("--sizes", help="comma-separated problem sizes n (default 10,20,50)")
    parser.add_argument("--instances", type=int, help="problems per class and size (default 10; 5 with --policy)")
    parser.add_argument("--policy", metavar="PATH", help="a trained RLQP policy file (a run's policy.pt, or 'shipped' for the one "
                        "in the package): add RLQP to the comparison")
    parser.add_argument("--eps", type=float, help="with --policy: tolerance (default: the policy's training eps)")
    parser.add_argument("--groups", help="with --policy: run only groups whose name contains one of these comma-separated parts "
                        "(e.g. held-out or random,x4 or unseen)")
    parser.add_argument("--problems", metavar="DIR", help="a folder of .mat/.npz QPs instead of generated classes")
    parser.add_argument("--no-throughput", action="store_true", help="skip the batched-vs-looped throughput line")
    parser.add_argument("--workers", type=int, metavar="N", help="deal the problems over N Ray workers (one CPU each; "
                        "needs amortize[ray]); the table is the serial one, times are each worker's")
    parser.add_argument("--threads-per-worker", type=int, default=1, metavar="T",
                        help="with --workers: CPUs and torch threads per worker (default 1). Iterations, statuses and "
                             "objectives equal a serial run's with T threads (OMP_NUM_THREADS=T) bit for bit")
    parser.add_argument("--address", help="with --workers: a running Ray cluster (auto, HOST:PORT, ray://HOST:10001); "
                        "default: a local one")


def _qp(args: argparse.Namespace) -> dict[str, Any]:
    if args.workers is None and (args.address or args.threads_per_worker != 1):
        raise ValueError("--address and --threads-per-worker go with --workers N")
    if args.threads_per_worker < 1:
        raise ValueError(f"--threads-per-worker must be >= 1, got {args.threads_per_worker}")
    if args.policy:
        return bench_rlqp(args.policy, per_size=args.instances if args.instances is not None else 5,
                          problems_dir=args.problems, eps=args.eps, groups=csv_list(args.groups),
                          name=args.name or "bench-rlqp", device=args.device, root=args.root, workers=args.workers,
                          address=args.address, threads_per_worker=args.threads_per_worker)
    return bench_qp(classes=csv_list(args.classes), sizes=csv_list(args.sizes, int),
                    instances=args.instances if args.instances is not None else 10, problems_dir=args.problems,
                    with_throughput=not args.no_throughput, name=args.name or "bench-qp", device=args.device,
                    seed=args.seed, root=args.root, workers=args.workers, address=args.address,
                    threads_per_worker=args.threads_per_worker)


def _warm_start_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", action="append", required=True, metavar="RUN",
                        help="a warm-start run directory, its warm_start.pt, or shipped:<kind> (mpc, portfolio); "
                             "repeat to compare several on one family")
    parser.add_argument("--contexts", type=int, default=100, help="held-out contexts per sequence (default 100)")
    parser.add_argument("--sequences", type=int, default=5,
                        help="independent drifting sequences, pooled (default 5: one sequence's figures depend on "
                             "where it walks)")
    parser.add_argument("--solvers", default="osqp",
                        help="comma-separated real solvers to start: osqp, scs (the QP in SCS's cone form; default osqp)")


def _warm_start(args: argparse.Namespace) -> dict[str, Any]:
    return bench_warm_start([], contexts=args.contexts, name=args.name or "bench-warm-start", seed=args.seed,
                            root=args.root, starters=[(spec, _starter(spec)) for spec in args.checkpoint],
                            sequences=args.sequences, solvers=tuple(csv_list(args.solvers) or ()))


def _starter(spec: str) -> WarmStarter:
    """The starter a run directory, a starter file or ``shipped:<kind>`` names."""
    if spec.startswith("shipped:"):
        return WarmStarter.shipped(spec.removeprefix("shipped:"))
    path = Path(spec)
    return WarmStarter.load(path / WarmStartRegression.model_file if path.is_dir() else path)


def _td3_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--updates", type=int, default=500, help="timed gradient updates per learner (default 500)")


def _td3(args: argparse.Namespace) -> dict[str, Any]:
    return bench_td3(updates=args.updates, name=args.name or "bench-td3", device=args.device, seed=args.seed, root=args.root)


DOMAIN = Domain(
    runs=RUNS,
    evaluate=evaluate,
    eval_table=lambda result: result["warm_start"]["table"] if "warm_start" in result else rlqp_eval_table(result),
    no_gap="`amortize gap` compares a model's one pass with solving f(y; x) from scratch; an RLQP policy is itself part of a "
           "solver: use `amortize bench qp --policy RUN/policy.pt` for its comparison with osqp",
    benches=(BenchCommand("qp", "our batched OSQP core against the real osqp package", _qp_arguments, _qp),
             BenchCommand("warm-start", "learned warm starts for the real osqp (and scs) on a parametric QP "
                          "family: cold, previous solution, learned (alone and corrected by its last error)",
                          _warm_start_arguments, _warm_start, default_seed=BENCH_SEED),
             BenchCommand("td3", "RLQP's row TD3 learner against stable-baselines3's TD3, updates per second",
                          _td3_arguments, _td3)),
    speed=qp_speed_rows,
)
