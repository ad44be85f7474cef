"""Problem families, batched solver cores, classical baselines and deployable learned models.

This package knows nothing of gymnasium or stable-baselines3: a trained model
is loaded and used with torch alone.
"""

from .classical import MultistartAdamSettings, SolveResult, multistart_adam
from .models import AmortizedModel
from .problems import ContextualProblem, make_problem

__all__ = ["AmortizedModel", "ContextualProblem", "MultistartAdamSettings", "SolveResult", "make_problem", "multistart_adam"]
