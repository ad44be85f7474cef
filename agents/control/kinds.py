"""The control domain's runs: SB3 actor-critic agents on MuJoCo, whose actor amortizes max_u Q(x, u)."""

from __future__ import annotations

from agents.common.agent import Agent
from agents.common.config import OFF_POLICY_ALGORITHMS, OffPolicyAgentSettings, RunConfig
from agents.common.domain import DomainRuns
from agents.common.runs import RunDir
from agents.control.agent import ControlAgent
from envs.control import CONTROL_ENV_IDS
from learned_optimizers.families import PROBLEM_FAMILIES


def make_agent(config: RunConfig, run: RunDir) -> Agent:
    return ControlAgent(config, run)


RUNS = DomainRuns(
    name="control",
    families={"max_q": PROBLEM_FAMILIES["max_q"]},
    env_ids=tuple(CONTROL_ENV_IDS),
    agent_kinds={k: (OffPolicyAgentSettings, f"L^RL: stable-baselines3 {k.upper()} (its actor amortizes max_u Q)")
                 for k in OFF_POLICY_ALGORITHMS},
    make_agent=make_agent,
    subprocess_envs=True,
)
