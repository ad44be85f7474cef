"""The sphere domain's runs: the tutorial's c-convex sphere problem, amortized three ways (L_obj, L_reg, L^RL)."""

from __future__ import annotations

from agents.common.contextual import contextual_agent_kinds, make_contextual_agent
from agents.common.domain import DomainRuns
from learned_optimizers.families import PROBLEM_FAMILIES

SPHERE_ENV = "amortize/Sphere-v0"

RUNS = DomainRuns(
    name="sphere",
    families={"sphere": PROBLEM_FAMILIES["sphere"]},
    env_ids=(SPHERE_ENV,),
    agent_kinds=contextual_agent_kinds("L_obj: differentiate f", "L_reg: regress onto solver optima"),
    make_agent=make_contextual_agent,
)
