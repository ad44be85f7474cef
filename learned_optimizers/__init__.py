"""Problem families, batched solver cores, classical baselines and deployable learned models, one folder per domain.

This package knows nothing of gymnasium or stable-baselines3: a trained model
is loaded and used with torch alone. ``common/`` holds what two or more domains
use; ``families.py`` names every problem family; ``amortized.py`` is the
context -> solution model of any family. Importing this package imports no
domain: each is imported where it is used.
"""

from importlib import import_module
from typing import Any

#: the names this package has always exported -> the module that defines them now (imported on first use)
_EXPORTS: dict[str, str] = {
    "AmortizedModel": "learned_optimizers.amortized",
    "ContextualProblem": "learned_optimizers.common.problem",
    "MultistartAdamSettings": "learned_optimizers.common.multistart",
    "SolveResult": "learned_optimizers.common.multistart",
    "multistart_adam": "learned_optimizers.common.multistart",
    "make_problem": "learned_optimizers.families",
    "OSQPBatch": "learned_optimizers.qp.admm",
    "OSQPSettings": "learned_optimizers.qp.admm",
    "QPSolution": "learned_optimizers.qp.admm",
    "Status": "learned_optimizers.qp.admm",
    "solve_qps": "learned_optimizers.qp.admm",
    "QP": "learned_optimizers.qp.problems",
    "QPBatch": "learned_optimizers.qp.problems",
    "generate": "learned_optimizers.qp.problems",
    "load_qp": "learned_optimizers.qp.problems",
    "RLQP": "learned_optimizers.qp.interface",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    """``from learned_optimizers import AmortizedModel`` still works, without importing every domain up front."""
    if name not in _EXPORTS:
        raise AttributeError(f"module 'learned_optimizers' has no attribute {name!r}")
    value = getattr(import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
