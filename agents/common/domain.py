"""The ``Domain`` record: everything the CLI and the registry need to know about one domain, in one place.

A domain (sphere, qp, fixed_point, l2o, control, ...) declares its problem
families, the env ids they train on, its agent kinds (with their settings
classes), how to build an agent, how ``amortize eval`` and ``amortize gap``
treat its runs, and its ``amortize bench`` subcommands. ``agents.registry``
lists the domains; nothing else dispatches on a domain's name.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

from agents.common.agent import Agent
from agents.common.config import ConfigSchema, DomainRules, RunConfig
from agents.common.runs import RunDir

#: ``amortize eval`` options that only some domains accept (the others refuse them by name)
EVAL_FLAGS = ("semi_amortized", "video")


@dataclass(frozen=True)
class BenchCommand:
    """One ``amortize bench NAME`` subcommand."""

    name: str
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    #: runs the benchmark from the parsed arguments (``name``, ``device``, ``seed``, ``root`` included) -> its summary
    #: (``table``, ``paths``)
    run: Callable[[argparse.Namespace], dict[str, Any]]
    #: the seed when --seed is not given (held-out benchmarks use the eval seed)
    default_seed: int = 0


@dataclass(frozen=True)
class DomainRuns:
    """What a domain's runs are: its problem families, the env ids they train on, its agent kinds and how an
    agent is built. A domain's own benchmarks read the runs they are given through it."""

    name: str
    #: problem family -> (problem class, settings class), from ``learned_optimizers.families``
    families: Mapping[str, tuple[type, type]]
    env_ids: tuple[str, ...]
    #: agent kind -> (settings class, one line for ``amortize list``); the first kind is the default
    agent_kinds: Mapping[str, tuple[type, str]]
    make_agent: Callable[[RunConfig, RunDir], Agent]
    #: whether agent.vec_env=subproc applies (Gymnasium envs stepped one per process)
    subprocess_envs: bool = False

    @property
    def rules(self) -> DomainRules:
        return DomainRules(self.name, tuple(self.families), self.env_ids, tuple(self.agent_kinds), self.subprocess_envs)

    def schema(self) -> ConfigSchema:
        """The configs of this domain's runs alone."""
        return ConfigSchema(dict(self.families), {k: s for k, (s, _) in self.agent_kinds.items()}, (self.rules,),
                            next(iter(self.families)))

    def open_run(self, path: str | Path, device: str | None = None) -> tuple[RunConfig, Agent]:
        """A trained run of this domain and its agent; a run of another domain is a ConfigError naming the family."""
        run = RunDir.open(path)
        config = run.load_config(self.schema())
        if device is not None:
            config.device = device
        return config, self.make_agent(config, run)


@dataclass(frozen=True)
class Domain:
    runs: DomainRuns
    #: (agent, episodes, **flags) -> result dict (also written to eval.json); flags are those in ``eval_flags``
    evaluate: Callable[..., dict[str, Any]]
    eval_table: Callable[[dict[str, Any]], str]
    eval_flags: tuple[str, ...] = ()
    #: agent -> gap result, and the text ``amortize gap`` prints of it; None where the gap does not apply
    gap: Callable[[Agent], dict[str, Any]] | None = None
    gap_report: Callable[[dict[str, Any]], str] | None = None
    #: why ``amortize gap`` does not apply (where ``gap`` is None), with what to run instead
    no_gap: str = ""
    #: ``amortize gap --across-training``: agent -> the gap at every kept snapshot, and its report; None: not offered
    gap_across_training: Callable[[Agent], dict[str, Any]] | None = None
    gap_across_training_report: Callable[[dict[str, Any]], str] | None = None
    #: ``amortize export``: (agent, folder, episodes) -> the shipped record; None: the domain's runs are not exported
    export: Callable[[Agent, Path, int], dict[str, Any]] | None = None
    #: the folder of this domain's shipped runs (``shipped:<name>``), if it ships any
    shipped_dir: Path | None = None
    benches: tuple[BenchCommand, ...] = field(default=())
    #: this domain's rows of ``amortize bench speed`` (``agents.common.speed``): settings -> rows; None: none
    speed: Callable[[Any], list[Any]] | None = None

    def __post_init__(self) -> None:
        unknown = set(self.eval_flags) - set(EVAL_FLAGS)
        if unknown:
            raise ValueError(f"domain {self.name}: unknown eval flags {sorted(unknown)}; allowed: {', '.join(EVAL_FLAGS)}")
        if (self.gap is None) != (self.gap_report is None) or (self.gap is None and not self.no_gap):
            raise ValueError(f"domain {self.name}: give gap and gap_report together, or no_gap")

    @property
    def name(self) -> str:
        return self.runs.name
