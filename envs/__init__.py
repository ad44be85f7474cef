"""Gymnasium environments; every env id of the project is listed and registered here.

``gymnasium.make(id)`` gives the single-instance env; ``gymnasium.make_vec(id,
num_envs, vectorization_mode="vector_entry_point", device=...)`` the batched
torch form. Entry points are strings, so importing this package registers the
ids without importing any domain's env module.
"""

import gymnasium

from envs.control import CONTROL_ENV_IDS

#: env id -> one-line description (``amortize list``); config validation checks every domain's ids against it
ENV_IDS: dict[str, str] = {
    "amortize/Sphere-v0": "c-convex function on S^2 (tutorial 4.2): context -> point on the sphere, one step",
    "amortize/QP-RLQP-v0": "OSQP as an MDP (RLQP): per-constraint features -> log10 rho per row, K ADMM iterations a step",
    "amortize/QP-RLQP-Scalar-v0": "OSQP as an MDP, scalar variant: global residual features -> one log10 rho",
    "amortize/QP-WarmStart-v0": "a parametric QP family (MPC, portfolio, Lasso): context -> a start (x, y) for OSQP, "
                                "reward minus its ADMM iterations / 100, one step",
    "amortize/OT-Potential-v0": "entropic OT (Meta OT): a pair of measures -> the dual potential f that starts Sinkhorn, "
                                "reward the entropic dual at (f, its c-transform), one step",
    "amortize/FixedPoint-v0": "fixed-point acceleration (NeuralFP / HyperAnderson): history features -> "
                              "correction of the plain or Anderson step, one map evaluation a step",
    "amortize/LearnToOptimize-v0": "learning to optimize (Li & Malik): per-coordinate gradient/objective history -> "
                                   "correction of tuned Adam's step per coordinate, one objective evaluation a step",
    **CONTROL_ENV_IDS,  # Gymnasium's own MuJoCo ids (registered by Gymnasium), wrapped by envs.control
}

#: our ids -> (entry point, vector entry point, kwargs)
#: the one-step env of any ContextualProblem family (context -> solution, reward -f)
_ONE_STEP = ("envs.common.amortization:AmortizationEnv", "envs.common.amortization:AmortizationVectorEnv")
_ENTRY_POINTS: dict[str, tuple[str, str, dict]] = {
    "amortize/Sphere-v0": (*_ONE_STEP, {"family": "sphere"}),
    "amortize/QP-RLQP-v0": ("envs.qp:QPEnv", "envs.qp:QPVectorEnv", {"variant": "vector"}),
    "amortize/QP-RLQP-Scalar-v0": ("envs.qp:QPEnv", "envs.qp:QPVectorEnv", {"variant": "scalar"}),
    "amortize/QP-WarmStart-v0": (*_ONE_STEP, {"family": "qp_warm_start"}),
    "amortize/OT-Potential-v0": (*_ONE_STEP, {"family": "ot-digits"}),
    "amortize/FixedPoint-v0": ("envs.fixed_point:FixedPointEnv", "envs.fixed_point:FixedPointVectorEnv", {}),
    "amortize/LearnToOptimize-v0": ("envs.l2o:LearnToOptimizeEnv", "envs.l2o:LearnToOptimizeVectorEnv", {}),
}

for _id, (_entry, _vector_entry, _kwargs) in _ENTRY_POINTS.items():
    if _id not in gymnasium.registry:
        gymnasium.register(id=_id, entry_point=_entry, vector_entry_point=_vector_entry, kwargs=_kwargs)

__all__ = ["CONTROL_ENV_IDS", "ENV_IDS"]
