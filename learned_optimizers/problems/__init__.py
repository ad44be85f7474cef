"""Problem families: the (f, Y, X, p(x)) part of each amortized method."""

from __future__ import annotations

from typing import Any

from .base import Box, ContextualProblem
from .fixed_point import FIXED_POINT_FAMILIES
from .max_q import MaxQProblem, MaxQSettings
from .qp_mix import QPMix, QPMixSettings
from .sphere import SphereProblem, SphereSettings
from .training_tasks import TRAINING_TASK_FAMILIES

#: family name -> (problem class, its settings dataclass); "qp" is a distribution of QPs for RLQP,
#: "deq", "ista" and "scs-*" are fixed-point map families and "logreg", "robust", "mlp", "quadratic" are
#: training objectives for learning to optimize (each with the settings of the MDP around it); "max_q" is
#: control: max_u Q(x, u) with the agent's learned critic on a MuJoCo env
PROBLEM_FAMILIES: dict[str, tuple[type, type]] = {
    "sphere": (SphereProblem, SphereSettings),
    "qp": (QPMix, QPMixSettings),
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


__all__ = ["Box", "ContextualProblem", "MaxQProblem", "MaxQSettings", "PROBLEM_FAMILIES", "QPMix", "QPMixSettings", "SphereProblem", "SphereSettings", "make_problem"]
