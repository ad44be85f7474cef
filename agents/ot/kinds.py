"""The ot domain's runs: Meta OT, a model from a pair of measures to the dual potential that starts Sinkhorn,
learned three ways on ``amortize/OT-Potential-v0``: the dual objective (Meta OT's loss), regression onto Sinkhorn's
converged potentials, and stable-baselines3 on the one-step env. (Sinkhorn's step itself is accelerated by the
fixed-point domain's agents on the ``sinkhorn-*`` map families.)"""

from __future__ import annotations

from agents.common.contextual import contextual_agent_kinds, make_contextual_agent
from agents.common.domain import DomainRuns
from learned_optimizers.families import PROBLEM_FAMILIES
from learned_optimizers.ot.problem import OT_PROBLEM_FAMILIES

OT_ENV = "amortize/OT-Potential-v0"

RUNS = DomainRuns(
    name="ot",
    families={name: PROBLEM_FAMILIES[name] for name in OT_PROBLEM_FAMILIES},
    env_ids=(OT_ENV,),
    agent_kinds=contextual_agent_kinds("Meta OT: maximize the entropic dual at the predicted potential",
                                       "regress onto Sinkhorn's converged potentials", " on the one-step potential env"),
    make_agent=make_contextual_agent,
)
