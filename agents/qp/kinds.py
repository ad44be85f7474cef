"""The qp domain's runs: RLQP, a learned rho for OSQP's ADMM, trained by a per-constraint TD3."""

from __future__ import annotations

from agents.common.agent import Agent
from agents.common.config import RunConfig
from agents.common.domain import DomainRuns
from agents.common.runs import RunDir
from agents.qp.rlqp_td3 import RLQPAgent
from agents.qp.settings import RLQPAgentSettings
from learned_optimizers.families import PROBLEM_FAMILIES


def make_agent(config: RunConfig, run: RunDir) -> Agent:
    return RLQPAgent(config, run)


RUNS = DomainRuns(
    name="qp",
    families={"qp": PROBLEM_FAMILIES["qp"]},
    env_ids=("amortize/QP-RLQP-v0", "amortize/QP-RLQP-Scalar-v0"),
    agent_kinds={"rlqp_td3": (RLQPAgentSettings, "RLQP: batched TD3 with a shared per-constraint actor (rho per row)")},
    make_agent=make_agent,
)
