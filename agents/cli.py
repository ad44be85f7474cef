"""The ``amortize`` command line: train, eval, bench, gap, list."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

CONFIG_DIR = Path("configs")


def _split_config_and_overrides(items: list[str]) -> tuple[str | None, list[str]]:
    if items and "=" not in items[0]:
        return items[0], items[1:]
    return None, items


def cmd_train(args: argparse.Namespace) -> int:
    from . import workflows
    from .config import load_config

    config_path, overrides = _split_config_and_overrides(args.items)
    if args.resume:
        if config_path is not None:
            raise ValueError("give either CONFIG.yaml or --resume RUN_DIR, not both")
        if args.seed is not None:
            raise ValueError("--seed cannot change on --resume")
        workflows.resume(args.resume, overrides, device=args.device)
        return 0
    if config_path is None:
        raise ValueError("CONFIG.yaml is required (or --resume RUN_DIR)")
    if args.device is not None:
        overrides.append(f"device={args.device}")
    if args.seed is not None:
        overrides.append(f"seed={args.seed}")
    config = load_config(config_path, overrides)
    name = args.name or config.name or Path(config_path).stem
    run = workflows.train(config, name=name, root=args.root)
    print(f"trained: {run.path}\n  evaluate: amortize eval {run.path}\n  watch:    tensorboard --logdir {run.path}")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from . import workflows

    ks = _csv(args.semi_amortized, int)
    if args.semi_amortized is not None and not ks:
        raise ValueError("--semi-amortized: expected comma-separated Adam step counts, e.g. 0,10,50")
    if args.episodes is not None and args.episodes < 1:
        raise ValueError(f"--episodes must be >= 1, got {args.episodes}")
    result = workflows.evaluate(args.run, episodes=args.episodes, device=args.device, semi_amortized=ks, video=args.video)
    print(workflows.eval_table(result))
    print(f"wrote {Path(args.run) / 'eval.json'}" + (f"; plots: {', '.join(result['plots'])}" if result["plots"] else ""))
    if result.get("video"):
        print(f"video: {result['video']}")
    return 0


def _csv(text: str | None, cast=str) -> list | None:
    if not text:
        return None
    try:
        return [cast(v.strip()) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ValueError(f"expected a comma-separated list, got {text!r}") from None


def cmd_bench(args: argparse.Namespace) -> int:
    from .bench import BENCHMARKS

    common = dict(name=args.name or f"bench-{args.family}", device=args.device or "auto", seed=args.seed or 0, root=args.root)
    if args.family == "sphere":
        summary = BENCHMARKS["sphere"](methods=_csv(args.methods), budget_scale=args.budget_scale, **common)
    elif args.family == "td3":
        summary = BENCHMARKS["td3"](updates=args.updates, **common)
    elif args.family == "fixed-point":
        common["seed"] = args.seed if args.seed is not None else 1_000_003
        summary = BENCHMARKS["fixed-point"](family=args.map_family, checkpoints=args.checkpoint, contexts=args.contexts,
                                           safeguard=args.safeguard, **common)
    elif args.family == "l2o":
        common["seed"] = args.seed if args.seed is not None else 1_000_003
        summary = BENCHMARKS["l2o"](family=args.task_family, checkpoints=args.checkpoint, tasks=args.tasks, **common)
    elif args.policy:
        from .bench_rlqp import bench_rlqp

        common["name"] = args.name or "bench-rlqp"
        common.pop("seed")
        summary = bench_rlqp(args.policy, per_size=args.instances if args.instances_given else 5,
                             problems_dir=args.problems, eps=args.eps, groups=_csv(args.groups), **common)
    else:
        summary = BENCHMARKS["qp"](classes=_csv(args.classes), sizes=_csv(args.sizes, int), instances=args.instances,
                                   problems_dir=args.problems, with_throughput=not args.no_throughput, **common)
    print()
    print(summary["table"])
    print(f"\nwrote {summary['paths']['json']}")
    if summary["paths"]["plots"]:
        print(f"plots: {', '.join(summary['paths']['plots'])}")
    print(f"TensorBoard: tensorboard --logdir {summary['paths']['tensorboard']}")
    return 0


def cmd_gap(args: argparse.Namespace) -> int:
    from . import workflows

    r = workflows.gap(args.run, device=args.device)
    if "q_mean" in r:  # a control run: normalized max-Q values, zero action -1, policy 0
        from .plots import format_table

        rows = [[p["iteration"], p["seconds"], p["value_mean"], p["value_std"], p["value_mean_unclamped"], p["above_policy"]]
                for p in r["curve"] if p["iteration"] in (0, 10, 25, 50, 100, 200, 300, 500) or p is r["curve"][-1]]
        print(format_table(["Adam iteration", "seconds", "value (clamped)", "std", "value (unclamped)", "frac above policy"], rows))
        print(f"policy: one forward pass on {r['states']} states in {r['policy_seconds'] * 1e3:.3f} ms "
              f"({r['informative_states']} states where pi beats the zero action under Q)")
        if r["speedup"] is None:
            print(f"Adam never reached a mean normalized value of {r['reach_level']} in {r['adam']['iterations']} iterations")
        else:
            print(f"Adam reaches {r['reach_level']} after {r['iterations_to_policy']} iterations, {r['seconds_to_policy']:.4f} s: "
                  f"speedup {r['speedup']:.0f}x")
        print(f"after {r['adam']['iterations']} iterations Adam's Q is above the policy's on {r['final_above_policy']:.0%} of states; "
              f"unclamped normalized value: mean {r['final_value_mean_unclamped']:.3g}, median {r['final_value_median_unclamped']:.3g}, "
              f"of the mean Qs {r['final_value_of_means_unclamped']:.3g}")
        print(f"wrote {Path(args.run) / 'gap.json'} and {r['plot']}")
        return 0
    print(f"model: mean objective {r['model_value_mean']:.5g} in {r['model_seconds'] * 1e3:.3f} ms for {r['contexts']} contexts")
    print(f"solver from scratch: final mean objective {r['solver_final_value_mean']:.5g}")
    if r["solver_iterations_to_match"] is None:
        print("solver never reached the model's mean objective within its budget")
    else:
        print(f"solver needs {r['solver_iterations_to_match']} iterations, {r['solver_seconds_to_match']:.4f}s, "
              f"to match the model: {r['speedup_to_match']:.1f}x the model's time")
    print(f"wrote {Path(args.run) / 'gap.json'} and {r['plot']}")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    from envs import ENV_IDS
    from envs.control import CONTROL_ENV_IDS

    from .bench import BENCHMARKS
    from .config import AGENT_KINDS

    print("environments:")
    for env_id, text in {**ENV_IDS, **CONTROL_ENV_IDS}.items():
        print(f"  {env_id:28s} {text}")
    print("agent kinds:")
    doc = {"objective": "L_obj: differentiate f", "regression": "L_reg: regress onto solver optima",
           "sac": "L^RL: stable-baselines3 SAC", "td3": "L^RL: stable-baselines3 TD3",
           "ddpg": "L^RL: stable-baselines3 DDPG", "ppo": "L^RL: stable-baselines3 PPO",
           "rlqp_td3": "RLQP: batched TD3 with a shared per-constraint actor (rho per row)",
           "fp_objective": "NeuralFP: backpropagate residuals through the unrolled fixed-point env",
           "fp_regression": "HyperAnderson: regress unrolled iterates onto converged fixed points",
           "l2o_objective": "learning to optimize: backpropagate the objective through unrolls of a coordinatewise update"}
    for kind in AGENT_KINDS:
        print(f"  {kind:24s} {doc.get(kind, '')}")
    print("benchmark families:")
    for fam in BENCHMARKS:
        print(f"  {fam}")
    print(f"configs ({args.configs}):")
    for path in sorted(Path(args.configs).glob("*.yaml")):
        first = path.read_text().splitlines()[:1]
        text = first[0].lstrip("# ").strip() if first and first[0].startswith("#") else ""
        print(f"  {str(path):40s} {text}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="amortize", description="Amortized optimization as environment/agent pairs.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("train", help="train an agent from a YAML config (or --resume a run)",
                       description="amortize train CONFIG.yaml [key=value ...] [--name NAME] [--resume RUN_DIR]")
    p.add_argument("items", nargs="*", metavar="CONFIG.yaml [key=value ...]",
                   help="config file, then dotted overrides such as agent.learning_rate=1e-4")
    p.add_argument("--name", help="run name (default: the config's name or file stem)")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue a run from its latest checkpoint")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"])
    p.add_argument("--seed", type=int)
    p.add_argument("--root", default="runs", help="where run directories go (default: runs)")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("eval", help="evaluate a trained run in Gymnasium and against the solver; writes eval.json")
    p.add_argument("run", metavar="RUN_DIR")
    p.add_argument("--episodes", type=int, help="Gymnasium episodes (default: the config's eval.episodes)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"])
    p.add_argument("--semi-amortized", metavar="K[,K...]",
                   help="control runs: also act with pi(x) + K Adam steps on Q (0 = the policy), e.g. 0,10,50")
    p.add_argument("--video", action="store_true", help="control runs: record one episode to an MP4 (headless rendering)")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("bench", help="learned vs classical vs external solver on one problem family")
    families = p.add_subparsers(dest="family", required=True, metavar="FAMILY")

    def bench_common(fp: argparse.ArgumentParser) -> None:
        fp.add_argument("--name", help="output directory name under runs/")
        fp.add_argument("--device", choices=["auto", "cpu", "cuda"])
        fp.add_argument("--seed", type=int)
        fp.add_argument("--root", default="runs")
        fp.set_defaults(func=cmd_bench)

    fp = families.add_parser("sphere", help="the three amortization losses against multi-start Adam (tutorial 4.2)")
    fp.add_argument("--methods", help="comma-separated subset of objective,regression,sac")
    fp.add_argument("--budget-scale", type=float, default=1.0, help="multiply every training budget (default 1)")
    bench_common(fp)
    fp = families.add_parser("qp", help="our batched OSQP core against the real osqp package")
    fp.add_argument("--classes", help="comma-separated subset of random,eq,portfolio,control,lasso,huber,svm (default all)")
    fp.add_argument("--sizes", help="comma-separated problem sizes n (default 10,20,50)")
    fp.add_argument("--instances", type=int, help="problems per class and size (default 10; 5 with --policy)")
    fp.add_argument("--policy", metavar="PATH", help="a trained RLQP policy file (a run's policy.pt, or 'shipped' for the one in the package): "
                    "add RLQP to the comparison")
    fp.add_argument("--eps", type=float, help="with --policy: tolerance (default: the policy's training eps)")
    fp.add_argument("--groups", help="with --policy: run only groups whose name contains one of these comma-separated parts "
                    "(e.g. held-out or random,x4 or unseen)")
    fp.add_argument("--problems", metavar="DIR", help="a folder of .mat/.npz QPs instead of generated classes")
    fp.add_argument("--no-throughput", action="store_true", help="skip the batched-vs-looped throughput line")
    bench_common(fp)

    fp = families.add_parser("td3", help="RLQP's row TD3 learner against stable-baselines3's TD3, updates per second")
    fp.add_argument("--updates", type=int, default=500, help="timed gradient updates per learner (default 500)")
    bench_common(fp)

    fp = families.add_parser("fixed-point", help="plain iteration and Anderson against trained fixed-point agents")
    fp.add_argument("--family", dest="map_family", default="deq", help="map family: deq, ista, scs-lasso, scs-huber or scs-socp (default deq)")
    fp.add_argument("--checkpoint", action="append", metavar="RUN_DIR",
                    help="a trained run on amortize/FixedPoint-v0 (repeat for several); none: classical methods only")
    fp.add_argument("--contexts", type=int, default=512, help="held-out contexts (default 512)")
    fp.add_argument("--safeguard", type=float, metavar="FACTOR",
                    help="replace a learned step by the classical one when it multiplies the residual by more than FACTOR")
    bench_common(fp)
    fp.set_defaults(seed=None)

    fp = families.add_parser("l2o", help="learned optimizers against tuned GD, momentum, Adam and scipy's L-BFGS")
    fp.add_argument("--family", dest="task_family", default="logreg", help="task family: logreg, robust, mlp or quadratic (default logreg)")
    fp.add_argument("--checkpoint", action="append", metavar="RUN_DIR",
                    help="a trained run on amortize/LearnToOptimize-v0 (repeat for several); none: classical methods only")
    fp.add_argument("--tasks", type=int, default=256, help="held-out tasks (default 256)")
    bench_common(fp)
    fp.set_defaults(seed=None)

    p = sub.add_parser("gap", help="amortization gap: the model's one pass vs solving from scratch")
    p.add_argument("run", metavar="RUN_DIR")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"])
    p.set_defaults(func=cmd_gap)

    p = sub.add_parser("list", help="env ids, agent kinds, benchmark families and shipped configs")
    p.add_argument("--configs", default=str(CONFIG_DIR), help="config folder (default: configs)")
    p.set_defaults(func=cmd_list)
    return parser


def main(argv: list[str] | None = None) -> int:
    from .config import ConfigError

    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # overrides may follow options: `amortize train c.yaml --name x agent.learning_rate=1e-4`
    stray = [e for e in extra if e.startswith("-") or args.command != "train"]
    if stray:
        parser.error(f"unrecognized arguments: {' '.join(stray)}")
    if args.command == "train":
        args.items = [*args.items, *extra]
    if args.command == "bench" and args.family == "qp":
        args.instances_given = args.instances is not None
        args.instances = args.instances if args.instances is not None else 10
    try:
        return args.func(args)
    except (ConfigError, FileNotFoundError, ValueError) as err:
        print(f"amortize {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
