"""The jobs behind the CLI verbs, callable from Python and tests; each dispatches through the run's domain."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from agents.common.best import BestModel
from agents.common.config import ConfigError, RunConfig, config_to_dict
from agents.common.domain import EVAL_FLAGS, Domain
from agents.common.interrupt import TrainingInterrupted, graceful_stop, received_signal
from agents.common.runs import DEFAULT_ROOT, RunDir
from agents.common.shipped import resolve_run
from agents.registry import DOMAINS, domain_of, load_config, load_run_config, make_agent


def start_run(config: RunConfig, name: str | None = None, root: str | Path = DEFAULT_ROOT,
              init_from: dict[str, Any] | None = None) -> RunDir:
    """A new run directory holding the resolved config, under the run's actual name (a taken name gets -2, ...)."""
    run = RunDir.create(name or config.name or "run", root)
    config.name = run.name
    run.save_config(config)
    run.record_start((init_from or {}).get("step", 0), config.train.total_steps, [], init_from=init_from)
    return run


def train(config: RunConfig, name: str | None = None, root: str | Path = DEFAULT_ROOT,
          init_from: str | Path | None = None, init_checkpoint: str = "final") -> RunDir:
    """Create a run directory and train the configured agent into it; ``init_from`` (a run or ``shipped:<name>``)
    gives the networks to start from (its ``init_checkpoint`` model), with fresh optimizers and buffer."""
    source, record = None, None
    if init_from is not None:
        source_run, source_config = _open(init_from, config.device)
        source = _agent_for(source_config, source_run, init_checkpoint)
        record = {"run": str(source_run.path), "checkpoint": init_checkpoint, "step": source.model_step() or 0}
    run = start_run(config, name, root, init_from=record)
    print(f"run directory: {run.path}  (tensorboard --logdir {run.path})")
    with run.exclusive():
        agent = make_agent(config, run)
        if source is not None:
            try:
                agent.start_from(source)
            except ValueError:
                shutil.rmtree(run.path)  # nothing was trained into it
                raise
            print(f"starting from the {init_checkpoint} model of {source.run.path} (step {record['step']}): "
                  "its networks, fresh optimizers and replay buffer")
        _train_until_stopped(agent, run, resume=False)
    return run


def _train_until_stopped(agent: Any, run: RunDir, resume: bool) -> None:
    """``agent.train``, with the first Ctrl-C or SIGTERM turned into a checkpoint, the model saved and
    ``TrainingInterrupted`` (a second signal interrupts at once)."""
    with graceful_stop():
        agent.train(resume=resume)
        signum = received_signal()
    if signum is not None:
        raise TrainingInterrupted(signum, agent.checkpoint_step(), str(run.path))
    best = BestModel.record(run)
    if best is not None:  # the headline figure next to the settings, in TensorBoard's HParams tab
        run.write_hparams(config_to_dict(agent.config), {f"hparams/best_{best['metric']}": float(best["value"])},
                          agent.config.train.total_steps)


def resume(run_path: str | Path, overrides: list[str] | None = None, device: str | None = None) -> RunDir:
    """Continue a run from its latest checkpoint; overrides may extend e.g. train.total_steps."""
    run = RunDir.open(run_path)
    old = load_run_config(run)
    config = load_run_config(run, overrides)
    if device is not None:
        config.device = device
    for key in ("seed", "env", "problem", "agent"):
        if getattr(old, key) != getattr(config, key):
            raise ConfigError(f"{key}: cannot change on --resume (was {getattr(old, key)!r}); start a new run instead")
    with run.exclusive():
        agent = make_agent(config, run)
        step = agent.checkpoint_step()
        if step is None:
            raise ValueError(f"{str(run.path)!r} has no checkpoint to resume from (its training never reached one); "
                             "start it again with `amortize train` instead")
        if step >= config.train.total_steps:
            raise ValueError(f"{str(run.path)!r} has finished: its checkpoint is at step {step} and "
                             f"train.total_steps={config.train.total_steps}; to train on, give a larger budget, e.g. "
                             f"amortize train --resume {run.path} train.total_steps={step + config.train.total_steps}")
        removed = run.remove_partial_writes()
        run.save_config(config)
        run.record_start(step, config.train.total_steps, list(overrides or []))
        print(f"resuming {run.path} from step {step}" + (f" (removed {len(removed)} partial writes)" if removed else ""))
        _train_until_stopped(agent, run, resume=True)
    return run


def check_config(config_path: str | Path, overrides: list[str]) -> RunConfig:
    """The config with ``overrides`` applied and validated (a named ConfigError before anything trains)."""
    return load_config(config_path, overrides)


def start_or_continue(config_path: str | Path, overrides: list[str], name: str, root: str | Path) -> dict[str, Any]:
    """Bring the run ``root/name`` to its budget, whatever state an earlier attempt left it in: start it where
    it does not exist (or holds no config yet), resume it from its checkpoint, start it again where it was
    killed before its first checkpoint, leave it alone where it has finished. What a sweep's job does."""
    path = Path(root) / name
    if path.is_dir() and not (path / "config.yaml").is_file():
        shutil.rmtree(path)  # claimed by a process killed before it wrote anything
    if not path.is_dir():
        run = train(load_config(config_path, overrides), name=name, root=root)
        return {"status": "trained", "run": str(run.path)}
    run = RunDir.open(path)
    config = load_run_config(run)
    with run.exclusive():
        step = make_agent(config, run).checkpoint_step()
    if step is None:
        shutil.rmtree(path)
        train(load_config(config_path, overrides), name=name, root=root)
        return {"status": "started again (killed before its first checkpoint)", "run": str(path)}
    if step >= config.train.total_steps:
        return {"status": f"finished earlier (step {step})", "run": str(path)}
    resume(path)
    return {"status": f"resumed from step {step}", "run": str(path)}


def catalog() -> dict[str, Any]:
    """What ``amortize list`` shows of the registries (env ids, agent kinds, benches, shipped-run folders), as
    plain data: kept in ``agents/catalog.json`` so that listing imports neither torch nor gymnasium."""
    from agents.registry import AGENT_KINDS, BENCHES
    from envs import ENV_IDS

    package = Path(__file__).resolve().parents[1]
    return {"environments": dict(ENV_IDS), "agent_kinds": dict(AGENT_KINDS),
            "benchmarks": {name: command.help for name, command in BENCHES.items()},
            "shipped_dirs": [_relative(d.shipped_dir.resolve(), package) for d in DOMAINS if d.shipped_dir is not None]}


def _relative(path: Path, root: Path) -> str:
    """``path`` relative to ``root`` where it lies inside (the catalog travels with the package), else as is."""
    return str(path.relative_to(root)) if path.is_relative_to(root) else str(path)


def _open(run_path: str | Path, device: str | None) -> tuple[RunDir, RunConfig]:
    """A run by path, or a shipped one by ``shipped:<name>`` (copied into runs/ first)."""
    run = RunDir.open(resolve_run(run_path, [d.shipped_dir for d in DOMAINS if d.shipped_dir is not None]))
    config = load_run_config(run)
    if device is not None:
        config.device = device
    return run, config


def _refuse(run: RunDir, config: RunConfig, domain: Domain, what: str, offers) -> None:
    """``what`` is offered by the domains where ``offers(domain)`` holds: name them, and this run's family."""
    homes = [d.name for d in DOMAINS if offers(d)]
    verb = "apply" if what.count("--") > 1 else "applies"
    raise ValueError(f"{run.path}: {what} {verb} to {' and '.join(homes) or 'no'} runs only, "
                     f"not to problem.family={config.problem_family!r} ({domain.name})")


def _agent_for(config: RunConfig, run: RunDir, checkpoint: str) -> Any:
    """The run's agent reading the ``final``, ``latest`` or ``best`` model; results of a model other than the
    final one are written as eval-<checkpoint>.json, gap-<checkpoint>.json."""
    agent = make_agent(config, run.tagged(None if checkpoint == "final" else checkpoint))
    agent.use_model(checkpoint)  # an unknown choice is a named error
    agent.model_dir  # a missing checkpoint or best model is a named error before any work
    return agent


def evaluate(run_path: str | Path, episodes: int | None = None, device: str | None = None,
             semi_amortized: list[int] | None = None, video: bool = False, checkpoint: str = "final") -> dict[str, Any]:
    """``amortize eval``: the run's domain evaluates its agent (Gymnasium episodes, then its own comparison) and
    writes eval.json. ``semi_amortized`` and ``video`` are flags only some domains (control) accept."""
    run, config = _open(run_path, device)
    domain = domain_of(config)
    given = {"semi_amortized": semi_amortized, "video": video}
    refused = [f for f in EVAL_FLAGS if given[f] and f not in domain.eval_flags]
    if refused:
        _refuse(run, config, domain, " and ".join(f"--{f.replace('_', '-')}" for f in refused),
                lambda d: set(refused) <= set(d.eval_flags))
    flags = {f: given[f] for f in domain.eval_flags}
    agent = _agent_for(config, run, checkpoint)
    result = domain.evaluate(agent, episodes or config.eval.episodes, **flags)
    result["json"] = str(agent.run.result_path("eval.json"))
    result.setdefault("plots", [])
    result["table"] = domain.eval_table(result)
    return result


def gap(run_path: str | Path, device: str | None = None, checkpoint: str = "final",
        across_training: bool = False) -> dict[str, Any]:
    """``amortize gap``: the model's one pass against solving from scratch; writes gap.json, a PNG and TensorBoard
    scalars. Domains whose models are themselves solvers refuse with what to run instead."""
    run, config = _open(run_path, device)
    domain = domain_of(config)
    if domain.gap is None:
        raise ValueError(f"{run.path}: {domain.no_gap}")
    if across_training:
        if domain.gap_across_training is None:
            _refuse(run, config, domain, "--across-training", lambda d: d.gap_across_training is not None)
        if checkpoint != "final":
            raise ValueError("--across-training measures every kept snapshot; it takes no --checkpoint")
        result = domain.gap_across_training(make_agent(config, run))
        result["json"] = str(run.result_path("gap-training.json"))
        result["report"] = domain.gap_across_training_report(result)
        return result
    agent = _agent_for(config, run, checkpoint)
    result = domain.gap(agent)
    result["json"] = str(agent.run.result_path("gap.json"))
    result["report"] = domain.gap_report(result)
    return result


def export(run_path: str | Path, to: str | Path, checkpoint: str = "final", episodes: int = 20,
           device: str | None = None) -> dict[str, Any]:
    """``amortize export``: the run's chosen model as a shipped run in ``to`` (config, weights, its evaluation)."""
    run, config = _open(run_path, device)
    domain = domain_of(config)
    if domain.export is None:
        _refuse(run, config, domain, "export", lambda d: d.export is not None)
    return domain.export(_agent_for(config, run, checkpoint), Path(to), episodes)


def eval_table(result: dict[str, Any]) -> str:
    """The table of an ``evaluate`` result (its domain wrote it there)."""
    return result["table"]
