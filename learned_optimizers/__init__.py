"""Problem families, batched solver cores, classical baselines and deployable learned models.

This package knows nothing of gymnasium or stable-baselines3: a trained model
is loaded and used with torch alone.
"""

from .admm import OSQPBatch, OSQPSettings, QPSolution, Status, solve_qps
from .classical import MultistartAdamSettings, SolveResult, multistart_adam
from .models import AmortizedModel
from .problems import ContextualProblem, make_problem
from .problems.qp import QP, QPBatch, generate, load_qp

__all__ = [
    "AmortizedModel", "ContextualProblem", "MultistartAdamSettings", "OSQPBatch", "OSQPSettings", "QP", "QPBatch",
    "QPSolution", "SolveResult", "Status", "generate", "load_qp", "make_problem", "multistart_adam", "solve_qps",
]
