"""The learning-to-optimize domain's runs: a coordinatewise update learned through unrolls or by SB3."""

from __future__ import annotations

from agents.common.agent import Agent
from agents.common.config import OffPolicyAgentSettings, RunConfig
from agents.common.domain import DomainRuns
from agents.common.runs import RunDir
from agents.l2o.agent import L2OObjectiveAgent, L2OSB3Agent
from agents.l2o.settings import L2O_ENV, L2OObjectiveSettings
from learned_optimizers.l2o.tasks import TRAINING_TASK_FAMILIES


def make_agent(config: RunConfig, run: RunDir) -> Agent:
    if config.agent.kind == "l2o_objective":
        return L2OObjectiveAgent(config, run)
    return L2OSB3Agent(config, run)


RUNS = DomainRuns(
    name="learning-to-optimize",
    families=dict(TRAINING_TASK_FAMILIES),
    env_ids=(L2O_ENV,),
    agent_kinds={
        "l2o_objective": (L2OObjectiveSettings, "learning to optimize: backpropagate the objective through unrolls "
                                                "of a coordinatewise update"),
        **{k: (OffPolicyAgentSettings, f"L^RL: stable-baselines3 {k.upper()} with a coordinatewise policy")
           for k in ("td3", "ddpg")},
    },
    make_agent=make_agent,
)
