"""The ``amortize`` command line: train, eval, bench, gap, list."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from agents.common.cli_args import csv_list

CONFIG_DIR = Path("configs")
#: the project's own configs, found from any directory (a source checkout or an editable install)
SHIPPED_CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def resolve_config(spec: str) -> Path:
    """A config by path, or by the name of a shipped one: ``sphere_objective`` or ``sphere_objective.yaml``
    (./configs/ first, then the project's)."""
    path = Path(spec)
    if path.is_file():
        return path
    if path.parent == Path("."):
        name = path.name if path.suffix in (".yaml", ".yml") else f"{path.name}.yaml"
        for folder in (CONFIG_DIR, SHIPPED_CONFIGS):
            if (folder / name).is_file():
                return folder / name
    shipped = sorted(p.stem for p in SHIPPED_CONFIGS.glob("*.yaml"))
    raise FileNotFoundError(f"config {spec!r}: no such file, nor a shipped config of that name; shipped: "
                            f"{', '.join(shipped) or 'none'} (amortize list)")


def _split_config_and_overrides(items: list[str]) -> tuple[str | None, list[str]]:
    if items and "=" not in items[0]:
        return items[0], items[1:]
    return None, items


def cmd_train(args: argparse.Namespace) -> int:
    from agents import workflows
    from agents.registry import load_config

    config_path, overrides = _split_config_and_overrides(args.items)
    if args.resume:
        if config_path is not None:
            raise ValueError("give either CONFIG.yaml or --resume RUN_DIR, not both")
        if args.seed is not None:
            raise ValueError("--seed cannot change on --resume")
        if args.init_from is not None:
            raise ValueError("--init-from starts a new run; a resumed run continues its own checkpoint")
        workflows.resume(args.resume, overrides, device=args.device)
        return 0
    if config_path is None:
        raise ValueError("CONFIG.yaml is required (or --resume RUN_DIR)")
    config_path = str(resolve_config(config_path))
    if args.device is not None:
        overrides.append(f"device={args.device}")
    if args.seed is not None:
        overrides.append(f"seed={args.seed}")
    config = load_config(config_path, overrides)
    name = args.name or config.name or Path(config_path).stem
    run = workflows.train(config, name=name, root=args.root, init_from=args.init_from,
                          init_checkpoint=args.init_checkpoint)
    print(f"trained: {run.path}\n  evaluate: amortize eval {run.path}\n  watch:    tensorboard --logdir {run.path}")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from agents import workflows

    ks = csv_list(args.semi_amortized, int)
    if args.semi_amortized is not None and not ks:
        raise ValueError("--semi-amortized: expected comma-separated Adam step counts, e.g. 0,10,50")
    if args.episodes is not None and args.episodes < 1:
        raise ValueError(f"--episodes must be >= 1, got {args.episodes}")
    result = workflows.evaluate(args.run, episodes=args.episodes, device=args.device, semi_amortized=ks, video=args.video,
                                checkpoint=args.checkpoint)
    print(result["table"])
    print(f"wrote {result['json']}" + (f"; plots: {', '.join(result['plots'])}" if result["plots"] else ""))
    if result.get("video"):
        print(f"video: {result['video']}")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from agents.registry import BENCHES

    command = BENCHES[args.family]
    args.device = args.device or "auto"
    args.seed = command.default_seed if args.seed is None else args.seed
    summary = command.run(args)
    print()
    print(summary["table"])
    print(f"\nwrote {summary['paths']['json']}")
    if summary["paths"]["plots"]:
        print(f"plots: {', '.join(summary['paths']['plots'])}")
    if "tensorboard" in summary["paths"] and any(Path(summary["paths"]["tensorboard"]).rglob("events.out.tfevents.*")):
        print(f"TensorBoard: tensorboard --logdir {summary['paths']['tensorboard']}")
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    from agents import sweeps

    config, items = _split_config_and_overrides(args.items)
    if config is not None and not args.resume:
        config = str(resolve_config(config))
    if args.plan:
        print(sweeps.show_plan(config, seeds=args.seeds, items=items, name=args.name, resume=args.resume,
                               device=args.device, root=args.root))
        return 0
    result = sweeps.sweep(config, seeds=args.seeds, items=items, name=args.name, resume=args.resume, root=args.root,
                          serial=args.serial, address=args.address, cpus_per_run=args.cpus_per_run,
                          gpus_per_run=args.gpus_per_run, max_parallel=args.max_parallel, retries=args.retries,
                          metric=args.metric, device=args.device, wait_s=args.status_every)
    return sweeps.print_sweep(result)


def cmd_plot(args: argparse.Namespace) -> int:
    from agents import sweeps

    result = sweeps.plot(args.runs, metric=args.metric, name=args.name, root=args.root)
    print(f"{result['metric']} across runs (last common step):\n{result['table']}")
    print(f"\nwrote {result['json']}; plot: {result['plot']}")
    return 0


def cmd_gap(args: argparse.Namespace) -> int:
    from agents import workflows

    result = workflows.gap(args.run, device=args.device, checkpoint=args.checkpoint, across_training=args.across_training)
    print(result["report"])
    print(f"wrote {result['json']} and {result['plot']}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from agents import workflows

    record = workflows.export(args.run, args.to, checkpoint=args.checkpoint, episodes=args.episodes, device=args.device)
    e = record["evaluation"]
    print(f"exported {args.run} ({record['model']} model, step {record['steps']}) to {args.to}: "
          f"{record['bytes'] / 1e6:.1f} MB; deterministic return {e['return_mean']:.1f} +- {e['return_stderr']:.1f} "
          f"(std error, {e['episodes']} episodes)")
    return 0


#: what ``amortize list`` prints of the registries, written by ``amortize list --refresh``
CATALOG = Path(__file__).resolve().with_name("catalog.json")


def cmd_list(args: argparse.Namespace) -> int:
    import json

    if args.refresh:
        from agents import workflows

        CATALOG.write_text(json.dumps(workflows.catalog(), indent=2) + "\n")
    catalog = json.loads(CATALOG.read_text())
    for title, key, width in (("environments", "environments", 28), ("agent kinds", "agent_kinds", 24),
                              ("benchmark families", "benchmarks", 24)):
        print(f"{title}:")
        for name, text in catalog[key].items():
            print(f"  {name:{width}s} {text}")
    print("shipped runs (amortize eval/gap shipped:<name>):")
    package = CATALOG.parents[1]
    for folder in catalog["shipped_dirs"]:
        for record_file in sorted((package / folder).glob("*/shipped.json")):
            r = json.loads(record_file.read_text())
            e = r.get("evaluation", {})
            print(f"  {'shipped:' + record_file.parent.name:28s} {r.get('agent', '?')} on {r.get('env', '?')}, "
                  f"{r.get('steps', '?')} steps, return {e.get('return_mean', float('nan')):.0f} over "
                  f"{e.get('episodes', '?')} episodes")
    folder = Path(args.configs) if args.configs else (CONFIG_DIR if CONFIG_DIR.is_dir() else SHIPPED_CONFIGS)
    print(f"configs ({folder}; `amortize train NAME` takes a path or a shipped name):")
    for path in sorted(folder.glob("*.yaml")):
        first = path.read_text().splitlines()[:1]
        text = first[0].lstrip("# ").strip() if first and first[0].startswith("#") else ""
        print(f"  {str(path):40s} {text}")
    return 0


def _device(text: str) -> str:
    from agents.common.config import device_argument

    return device_argument(text)


def _format_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("--format", choices=["text", "md", "csv"], default="text",
                   help="how tables print: aligned text (default), Markdown, or CSV")


def _checkpoint_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", choices=["final", "latest", "best"], default="final",
                   help="which model: final (default; written when training ends), latest (the newest checkpoint's, "
                        "also while the run trains), best (the best periodic evaluation's); results of latest/best "
                        "go to eval-<which>.json / gap-<which>.json")


def build_parser(with_benches: bool = True) -> argparse.ArgumentParser:
    """The CLI's parser. ``with_benches=False`` leaves out the bench families, whose arguments need every
    domain imported (torch, gymnasium): ``amortize --help`` and the other verbs start at once without them."""
    parser = argparse.ArgumentParser(prog="amortize", description="Amortized optimization as environment/agent pairs.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("train", help="train an agent from a YAML config (or --resume a run)",
                       description="amortize train CONFIG.yaml [key=value ...] [--name NAME] [--resume RUN_DIR]")
    p.add_argument("items", nargs="*", metavar="CONFIG.yaml [key=value ...]",
                   help="config file, then dotted overrides such as agent.learning_rate=1e-4")
    p.add_argument("--name", help="run name (default: the config's name or file stem)")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue a run from its latest checkpoint")
    p.add_argument("--init-from", metavar="RUN_DIR", help="SB3 runs: start from this run's (or shipped:<name>'s) "
                   "networks, with fresh optimizers and replay buffer; steps and hours continue its count")
    p.add_argument("--init-checkpoint", choices=["final", "latest", "best"], default="final",
                   help="which model of --init-from (default: final)")
    p.add_argument("--device", type=_device, metavar="{auto,cpu,cuda,cuda:N}")
    p.add_argument("--seed", type=int)
    p.add_argument("--root", default="runs", help="where run directories go (default: runs)")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("eval", help="evaluate a trained run in Gymnasium and against the solver; writes eval.json")
    p.add_argument("run", metavar="RUN_DIR")
    p.add_argument("--episodes", type=int, help="Gymnasium episodes (default: the config's eval.episodes)")
    p.add_argument("--device", type=_device, metavar="{auto,cpu,cuda,cuda:N}")
    p.add_argument("--semi-amortized", metavar="K[,K...]",
                   help="control runs: also act with pi(x) + K Adam steps on Q (0 = the policy), e.g. 0,10,50")
    p.add_argument("--video", action="store_true", help="control runs: record one episode to an MP4 (headless rendering)")
    _checkpoint_argument(p)
    _format_argument(p)
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("bench", help="learned vs classical vs external solver on one problem family")
    families = p.add_subparsers(dest="family", required=True, metavar="FAMILY")

    def bench_common(fp: argparse.ArgumentParser) -> None:
        fp.add_argument("--name", help="output directory name under runs/")
        fp.add_argument("--device", type=_device, metavar="{auto,cpu,cuda,cuda:N}")
        fp.add_argument("--seed", type=int)
        fp.add_argument("--root", default="runs")
        _format_argument(fp)
        fp.set_defaults(func=cmd_bench)

    if with_benches:
        from agents.registry import BENCHES

        for command in BENCHES.values():
            fp = families.add_parser(command.name, help=command.help)
            command.add_arguments(fp)
            bench_common(fp)

    p = sub.add_parser("sweep", help="many seeds and grid values of one config as Ray tasks, one run directory each",
                       description="amortize sweep CONFIG --seeds 0,1,2,3 [key=v1,v2 ...]: the product of the seeds "
                                   "and the swept values, each an ordinary run under runs/<sweep>/; then the runs' "
                                   "metric across seeds (mean, bootstrap CI, IQM) as a table and a PNG")
    p.add_argument("items", nargs="*", metavar="CONFIG [key=v1,v2 ...]",
                   help="config (a path or a shipped name), then overrides: key=v fixes a value, key=v1,v2 sweeps it")
    p.add_argument("--seeds", default="0", help="seeds, e.g. 0,1,2,3 or 0-3 (default: 0)")
    p.add_argument("--name", help="the sweep's folder under --root (default: sweep-<config name>)")
    p.add_argument("--resume", metavar="SWEEP_DIR", help="continue a sweep: finished runs are skipped, "
                   "interrupted ones resumed from their checkpoints, the rest started")
    p.add_argument("--root", default="runs", help="where the sweep's folder goes (default: runs)")
    p.add_argument("--address", help="a running Ray cluster: auto, HOST:PORT or ray://HOST:10001 "
                   "(default: a local cluster of this machine's cores)")
    p.add_argument("--max-parallel", type=int, metavar="N", help="at most N runs at once (default: as the cluster's "
                   "CPUs allow)")
    p.add_argument("--cpus-per-run", type=float, default=1.0, help="CPUs Ray reserves for each run; its torch "
                   "threads (default 1)")
    p.add_argument("--gpus-per-run", type=float, default=0.0, help="GPUs Ray reserves for each run, e.g. 1 or 0.25 "
                   "(default 0)")
    p.add_argument("--retries", type=int, default=0, help="restarts of a run whose worker died; each resumes "
                   "from the run's checkpoint (default 0: report it and go on)")
    p.add_argument("--serial", action="store_true", help="no Ray: the runs one after another in this process")
    p.add_argument("--plan", action="store_true", help="print the runs the sweep would make (each config checked) "
                   "and stop: nothing is created or trained")
    p.add_argument("--metric", help="the TensorBoard scalar to plot across seeds (default: the one the runs keep "
                   "their best model by)")
    p.add_argument("--device", type=_device, metavar="{auto,cpu,cuda,cuda:N}")
    p.add_argument("--status-every", type=float, default=15.0, metavar="SECONDS",
                   help="a line with every running run's progress this often (default 15)")
    _format_argument(p)
    p.set_defaults(func=cmd_sweep)

    p = sub.add_parser("plot", help="a TensorBoard scalar across runs or sweeps: mean, bootstrap CI, IQM; PNG + table")
    p.add_argument("runs", nargs="+", metavar="RUN_OR_SWEEP_DIR")
    p.add_argument("--metric", help="a TensorBoard tag, e.g. eval/objective_gap (default: the runs' best-model metric)")
    p.add_argument("--name", help="output folder under --root (default: the sweep's folder for one sweep, "
                   "else runs/curves)")
    p.add_argument("--root", default="runs")
    _format_argument(p)
    p.set_defaults(func=cmd_plot)

    p = sub.add_parser("gap", help="amortization gap: the model's one pass vs solving from scratch")
    p.add_argument("run", metavar="RUN_DIR")
    p.add_argument("--device", type=_device, metavar="{auto,cpu,cuda,cuda:N}")
    _checkpoint_argument(p)
    p.add_argument("--across-training", action="store_true",
                   help="control runs: the gap at every kept snapshot (train.keep_snapshots) -> gap-training.json, "
                        "plots/gap-training.png, TensorBoard gap_training/*")
    _format_argument(p)
    p.set_defaults(func=cmd_gap)

    p = sub.add_parser("export", help="control runs: the model's weights, config and evaluation as a shipped run")
    p.add_argument("run", metavar="RUN_DIR")
    p.add_argument("--to", required=True, metavar="DIR", help="the folder to write config.yaml, model.zip, shipped.json")
    p.add_argument("--episodes", type=int, default=20, help="deterministic episodes measuring the return (default 20)")
    p.add_argument("--device", type=_device, metavar="{auto,cpu,cuda,cuda:N}")
    _checkpoint_argument(p)
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("list", help="env ids, agent kinds, benchmark families and shipped configs")
    p.add_argument("--configs", help="config folder (default: ./configs, else the project's own)")
    p.add_argument("--refresh", action="store_true",
                   help="rebuild the catalog of envs, agent kinds and benches from the registries (after adding one)")
    p.set_defaults(func=cmd_list)
    return parser


def main(argv: list[str] | None = None) -> int:
    from agents.common.tables import set_table_format
    from learned_optimizers.common.allocator import keep_freed_memory

    keep_freed_memory()  # the batched solvers' temporaries then reuse memory instead of page-faulting it in

    words = sys.argv[1:] if argv is None else argv
    parser = build_parser(with_benches="bench" in words)
    args, extra = parser.parse_known_args(argv)
    # overrides may follow options: `amortize train c.yaml --name x agent.learning_rate=1e-4`
    takes_overrides = args.command in ("train", "sweep")
    stray = [e for e in extra if e.startswith("-") or not takes_overrides]
    if stray:
        parser.error(f"unrecognized arguments: {' '.join(stray)}")
    if takes_overrides:
        args.items = [*args.items, *extra]
    set_table_format(getattr(args, "format", None) or "text")
    try:
        return _run(args)
    finally:
        set_table_format("text")


def _run(args: argparse.Namespace) -> int:
    """The command, with its named errors turned into one line and an exit code."""
    if args.command == "list" and not args.refresh:  # reads files only: no torch, no run directories
        try:
            return args.func(args)
        except (OSError, ValueError) as err:
            print(f"amortize list: error: {err}", file=sys.stderr)
            return 2
    from agents.common.config import ConfigError
    from agents.common.interrupt import TrainingInterrupted
    from agents.common.runs import RunInUseError, discard_unfinished, forget_created
    from agents.common.scaleout import JobsFailedError

    forget_created()  # on failure, only the run directories this command creates are candidates for removal
    try:
        return args.func(args)
    except (ConfigError, FileNotFoundError, ValueError, RunInUseError, FloatingPointError, JobsFailedError) as err:
        discard_unfinished()
        print(f"amortize {args.command}: error: {err}", file=sys.stderr)
        return 2
    except MemoryError as err:
        discard_unfinished()
        print(f"amortize {args.command}: error: out of memory ({str(err)[:200] or 'no detail'}); lower the sizes "
              "that allocate (batch_size, buffer_size, hidden sizes, n_envs, contexts)", file=sys.stderr)
        return 2
    except TrainingInterrupted as stop:
        print(f"amortize {args.command}: {stop}", file=sys.stderr)
        return stop.exit_code
    except KeyboardInterrupt:
        discard_unfinished()
        print(f"amortize {args.command}: interrupted; files are whole (each write renames into place), "
              "a run keeps its last complete checkpoint", file=sys.stderr)
        return 130
    except BaseException:
        discard_unfinished()  # an unexpected error still leaves no empty run directory
        raise


if __name__ == "__main__":
    sys.exit(main())
