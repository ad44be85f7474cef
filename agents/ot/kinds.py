"""The ot domain's runs: Meta OT, a model from a pair of measures to the dual potential that starts Sinkhorn,
learned three ways on ``amortize/OT-Potential-v0``: the dual objective (Meta OT's loss), regression onto Sinkhorn's
converged potentials, and stable-baselines3 on the one-step env. (Sinkhorn's step itself is accelerated by the
fixed-point domain's agents on the ``sinkhorn-*`` map families.)"""

from __future__ import annotations

from agents.common.agent import Agent
from agents.common.amortizers import ObjectiveAmortizer, RegressionAmortizer
from agents.common.config import (
    OFF_POLICY_ALGORITHMS,
    ObjectiveAgentSettings,
    OffPolicyAgentSettings,
    RegressionAgentSettings,
    RunConfig,
)
from agents.common.domain import DomainRuns
from agents.common.runs import RunDir
from agents.common.sb3 import SB3Agent
from learned_optimizers.families import PROBLEM_FAMILIES
from learned_optimizers.ot.problem import OT_PROBLEM_FAMILIES

OT_ENV = "amortize/OT-Potential-v0"


def make_agent(config: RunConfig, run: RunDir) -> Agent:
    if config.agent.kind == "objective":
        return ObjectiveAmortizer(config, run)
    if config.agent.kind == "regression":
        return RegressionAmortizer(config, run)
    return SB3Agent(config, run)


RUNS = DomainRuns(
    name="ot",
    families={name: PROBLEM_FAMILIES[name] for name in OT_PROBLEM_FAMILIES},
    env_ids=(OT_ENV,),
    agent_kinds={
        "objective": (ObjectiveAgentSettings, "Meta OT: maximize the entropic dual at the predicted potential"),
        "regression": (RegressionAgentSettings, "regress onto Sinkhorn's converged potentials"),
        **{k: (OffPolicyAgentSettings, f"L^RL: stable-baselines3 {k.upper()} on the one-step potential env")
           for k in OFF_POLICY_ALGORITHMS},
    },
    make_agent=make_agent,
)
