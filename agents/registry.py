"""The domains of the agents layer: the one place that knows every domain.

The CLI and ``agents.workflows`` dispatch through it: a run's problem family
names its domain, and the domain builds its agent, evaluates it, measures its
gap and offers its benchmarks. Adding a domain is one line in ``DOMAINS``.
"""

from __future__ import annotations

from pathlib import Path

from agents.common.agent import Agent
from agents.common.config import ConfigSchema, RunConfig
from agents.common.config import config_from_dict as _config_from_dict
from agents.common.config import load_config as _load_config
from agents.common.domain import BenchCommand, Domain
from agents.common.speed import add_speed_arguments
from agents.common.runs import RunDir
from agents.control.domain import DOMAIN as CONTROL
from agents.fixed_point.domain import DOMAIN as FIXED_POINT
from agents.l2o.domain import DOMAIN as L2O
from agents.ot.domain import DOMAIN as OT
from agents.qp.domain import DOMAIN as QP
from agents.sphere.domain import DOMAIN as SPHERE
from envs import ENV_IDS

DOMAINS: tuple[Domain, ...] = (SPHERE, QP, FIXED_POINT, L2O, OT, CONTROL)

#: every config the project can run: the union of the domains' schemas (sphere first: the default family)
SCHEMA = ConfigSchema.merge([d.runs.schema() for d in DOMAINS], default_family="sphere")

_unlisted = [e for e in SCHEMA.env_ids if e not in ENV_IDS]
if _unlisted:
    raise RuntimeError(f"env ids {_unlisted} are trained on by a domain but not listed in envs.ENV_IDS")

#: agent kind -> one line for ``amortize list`` (the first domain's wording for a kind several domains share)
AGENT_KINDS: dict[str, str] = {}
for _domain in DOMAINS:
    for _kind, (_, _doc) in _domain.runs.agent_kinds.items():
        AGENT_KINDS.setdefault(_kind, _doc)



def _speed(args) -> dict:
    from agents.common.cli_args import csv_list
    from agents.common.speed import bench_speed, speed_settings
    from envs.common.vector import resolve_device

    settings = speed_settings(args, str(resolve_device(args.device)))
    providers = {d.name: d.speed for d in DOMAINS if d.speed is not None}
    return bench_speed(providers, settings, args.name or "bench-speed", args.root, only=csv_list(args.domains))


#: ``amortize bench NAME`` -> its command
BENCHES: dict[str, BenchCommand] = {b.name: b for d in DOMAINS for b in d.benches}
BENCHES["speed"] = BenchCommand("speed", "problems per second by batch size, every solver against its compiled peer "
                                "(osqp, scs, torch.optim) in one run", add_speed_arguments, _speed)


def domain_of(config: RunConfig) -> Domain:
    return next(d for d in DOMAINS if config.problem_family in d.runs.families)


def config_from_dict(raw: object) -> RunConfig:
    return _config_from_dict(raw, SCHEMA)


def load_config(path: str | Path, overrides: list[str] | None = None) -> RunConfig:
    return _load_config(path, SCHEMA, overrides)


def load_run_config(run: RunDir, overrides: list[str] | None = None) -> RunConfig:
    return run.load_config(SCHEMA, overrides)


def make_agent(config: RunConfig, run: RunDir) -> Agent:
    return domain_of(config).runs.make_agent(config, run)
