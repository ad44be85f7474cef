"""The fixed-point domain's runs: NeuralFP and HyperAnderson on any fixed-point map family (SCS's iteration included)."""

from __future__ import annotations

from agents.common.agent import Agent
from agents.common.config import OFF_POLICY_ALGORITHMS, OffPolicyAgentSettings, RunConfig
from agents.common.domain import DomainRuns
from agents.common.runs import RunDir
from agents.fixed_point.agent import FixedPointObjectiveAgent, FixedPointRegressionAgent, FixedPointSB3Agent
from agents.fixed_point.settings import FIXED_POINT_ENV, FixedPointObjectiveSettings, FixedPointRegressionSettings
from learned_optimizers.families import FIXED_POINT_FAMILIES


def make_agent(config: RunConfig, run: RunDir) -> Agent:
    if config.agent.kind == "fp_objective":
        return FixedPointObjectiveAgent(config, run)
    if config.agent.kind == "fp_regression":
        return FixedPointRegressionAgent(config, run)
    return FixedPointSB3Agent(config, run)


RUNS = DomainRuns(
    name="fixed-point",
    families=dict(FIXED_POINT_FAMILIES),
    env_ids=(FIXED_POINT_ENV,),
    agent_kinds={
        "fp_objective": (FixedPointObjectiveSettings, "NeuralFP: backpropagate residuals through the unrolled fixed-point env"),
        "fp_regression": (FixedPointRegressionSettings, "HyperAnderson: regress unrolled iterates onto converged fixed points"),
        **{k: (OffPolicyAgentSettings, f"L^RL: stable-baselines3 {k.upper()} on the fixed-point action")
           for k in OFF_POLICY_ALGORITHMS},
    },
    make_agent=make_agent,
)
