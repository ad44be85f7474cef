"""Every problem family of the project, by name: the (f, Y, X, p(x)) part of each amortized method.

The one place in this layer that knows every domain. A family name selects a
problem class and its settings dataclass; configs name families, and each
domain's agents and envs build their problems through ``make_problem``.
"""

from __future__ import annotations

from typing import Any

from learned_optimizers.common.fixed_point_map import FixedPointMap, FixedPointTaskSettings
from learned_optimizers.conic.maps import SCS_MAP_FAMILIES
from learned_optimizers.control.problem import MaxQProblem, MaxQSettings
from learned_optimizers.fixed_point.maps import FIXED_POINT_MAPS
from learned_optimizers.l2o.tasks import TRAINING_TASK_FAMILIES
from learned_optimizers.ot.problem import OT_PROBLEM_FAMILIES, SINKHORN_MAP_FAMILIES
from learned_optimizers.qp.mix import QPMix, QPMixSettings
from learned_optimizers.qp.parametric import ParametricQPSettings, QPWarmStartProblem
from learned_optimizers.sphere.problem import SphereProblem, SphereSettings

#: fixed-point map families: the fixed-point domain's own maps, SCS's iteration as a map (conic) and Sinkhorn's (ot)
FIXED_POINT_FAMILIES: dict[str, tuple[type[FixedPointMap], type[FixedPointTaskSettings]]] = {
    **FIXED_POINT_MAPS,
    **SCS_MAP_FAMILIES,
    **SINKHORN_MAP_FAMILIES,
}

#: family name -> (problem class, its settings dataclass); "qp" is a distribution of QPs for RLQP,
#: "deq", "ista" and "scs-*" are fixed-point map families and "logreg", "robust", "mlp", "quadratic" are
#: training objectives for learning to optimize (each with the settings of the MDP around it); "max_q" is
#: control: max_u Q(x, u) with the agent's learned critic on a MuJoCo env; "qp_warm_start" is a parametric QP
#: family whose context gives a start (x, y) for OSQP; "ot-*" are pairs of measures whose optimal dual potential
#: a model predicts (Meta OT)
PROBLEM_FAMILIES: dict[str, tuple[type, type]] = {
    "sphere": (SphereProblem, SphereSettings),
    "qp": (QPMix, QPMixSettings),
    "qp_warm_start": (QPWarmStartProblem, ParametricQPSettings),
    **OT_PROBLEM_FAMILIES,
    **FIXED_POINT_FAMILIES,
    **TRAINING_TASK_FAMILIES,
    "max_q": (MaxQProblem, MaxQSettings),
}


def make_problem(family: str, **settings: Any) -> Any:
    """Build a problem family by name, e.g. ``make_problem("sphere", gamma=0.1)``."""
    if family not in PROBLEM_FAMILIES:
        raise ValueError(f"unknown problem family {family!r}; allowed: {', '.join(sorted(PROBLEM_FAMILIES))}")
    cls, settings_cls = PROBLEM_FAMILIES[family]
    return cls(settings_cls(**settings))


def make_map(family: str, **settings: Any) -> FixedPointMap:
    """A fixed-point map family by name, e.g. ``make_map("deq", spectral_norm=0.9)``."""
    if family not in FIXED_POINT_FAMILIES:
        raise ValueError(f"family={family!r}; allowed: {', '.join(FIXED_POINT_FAMILIES)}")
    map_cls, settings_cls = FIXED_POINT_FAMILIES[family]
    return map_cls(settings_cls(**settings))
