"""The sphere domain's runs: the tutorial's c-convex sphere problem, amortized three ways (L_obj, L_reg, L^RL)."""

from __future__ import annotations

from agents.common.agent import Agent
from agents.common.amortizers import ObjectiveAmortizer, RegressionAmortizer
from agents.common.config import (
    OFF_POLICY_ALGORITHMS,
    ObjectiveAgentSettings,
    OffPolicyAgentSettings,
    PPOAgentSettings,
    RegressionAgentSettings,
    RunConfig,
)
from agents.common.domain import DomainRuns
from agents.common.runs import RunDir
from agents.common.sb3 import SB3Agent
from learned_optimizers.families import PROBLEM_FAMILIES

SPHERE_ENV = "amortize/Sphere-v0"


def make_agent(config: RunConfig, run: RunDir) -> Agent:
    if config.agent.kind == "objective":
        return ObjectiveAmortizer(config, run)
    if config.agent.kind == "regression":
        return RegressionAmortizer(config, run)
    return SB3Agent(config, run)


RUNS = DomainRuns(
    name="sphere",
    families={"sphere": PROBLEM_FAMILIES["sphere"]},
    env_ids=(SPHERE_ENV,),
    agent_kinds={
        "objective": (ObjectiveAgentSettings, "L_obj: differentiate f"),
        "regression": (RegressionAgentSettings, "L_reg: regress onto solver optima"),
        **{k: (OffPolicyAgentSettings, f"L^RL: stable-baselines3 {k.upper()}") for k in OFF_POLICY_ALGORITHMS},
        "ppo": (PPOAgentSettings, "L^RL: stable-baselines3 PPO"),
    },
    make_agent=make_agent,
)
