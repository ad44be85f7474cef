"""What every ``amortize bench`` needs: trained runs loaded through their domain, and a check that they faced the same problems."""

from __future__ import annotations

import dataclasses
from typing import Any

import torch

from agents.common.agent import Agent
from agents.common.config import ConfigError
from agents.common.domain import DomainRuns


def load_trained_agents(domain: DomainRuns, paths: list[str], family: str, device: torch.device) -> list[Agent]:
    """The agents of trained runs for a benchmark of ``domain``: each must be one of its runs, trained on ``family``."""
    agents = []
    for path in paths:
        try:
            config, agent = domain.open_run(path, str(device))
        except ConfigError as err:
            raise ValueError(f"--checkpoint {path}: not a run of the {domain.name} domain ({err})") from None
        if config.problem_family != family:
            raise ValueError(f"--checkpoint {path}: trained on family {config.problem_family!r}, not {family!r}")
        agents.append(agent)
    return agents


def problem_identity(family: str, settings: Any, mdp_fields: set[str]) -> dict[str, Any]:
    """A family's settings without those of the MDP around it: runs equal here faced the same problems."""
    return {"family": family, **{k: v for k, v in dataclasses.asdict(settings).items() if k not in mdp_fields}}


def require_same_problems(identities: list[dict[str, Any]], what: str) -> None:
    distinct = {str(i) for i in identities}
    if len(distinct) > 1:
        raise ValueError(f"--checkpoint: the runs were trained on different {what} (" + "; ".join(sorted(distinct)) + ")")
