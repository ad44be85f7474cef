"""Gymnasium environments; every env id of the project is registered here.

``gymnasium.make(id)`` gives the single-instance env; ``gymnasium.make_vec(id,
num_envs, vectorization_mode="vector_entry_point", device=...)`` the batched
torch form.
"""

import gymnasium

from .amortization import AmortizationEnv, AmortizationVectorEnv
from .fixed_point import FixedPointEnv, FixedPointVectorEnv
from .l2o import LearnToOptimizeEnv, LearnToOptimizeVectorEnv
from .qp import QPEnv, QPVectorEnv
from .vector import TorchVectorEnv, resolve_device

#: env id -> one-line description (shown by ``amortize list``)
ENV_IDS: dict[str, str] = {
    "amortize/Sphere-v0": "c-convex function on S^2 (tutorial 4.2): context -> point on the sphere, one step",
    "amortize/QP-RLQP-v0": "OSQP as an MDP (RLQP): per-constraint features -> log10 rho per row, K ADMM iterations a step",
    "amortize/QP-RLQP-Scalar-v0": "OSQP as an MDP, scalar variant: global residual features -> one log10 rho",
    "amortize/FixedPoint-v0": "fixed-point acceleration (NeuralFP / HyperAnderson): history features -> "
                              "correction of the plain or Anderson step, one map evaluation a step",
    "amortize/LearnToOptimize-v0": "learning to optimize (Li & Malik): per-coordinate gradient/objective history -> "
                                   "correction of tuned Adam's step per coordinate, one objective evaluation a step",
}

if "amortize/Sphere-v0" not in gymnasium.registry:
    gymnasium.register(
        id="amortize/Sphere-v0",
        entry_point="envs.amortization:AmortizationEnv",
        vector_entry_point="envs.amortization:AmortizationVectorEnv",
        kwargs={"family": "sphere"},
    )

for _id, _variant in (("amortize/QP-RLQP-v0", "vector"), ("amortize/QP-RLQP-Scalar-v0", "scalar")):
    if _id not in gymnasium.registry:
        gymnasium.register(id=_id, entry_point="envs.qp:QPEnv", vector_entry_point="envs.qp:QPVectorEnv",
                           kwargs={"variant": _variant})

if "amortize/FixedPoint-v0" not in gymnasium.registry:
    gymnasium.register(id="amortize/FixedPoint-v0", entry_point="envs.fixed_point:FixedPointEnv",
                       vector_entry_point="envs.fixed_point:FixedPointVectorEnv")

if "amortize/LearnToOptimize-v0" not in gymnasium.registry:
    gymnasium.register(id="amortize/LearnToOptimize-v0", entry_point="envs.l2o:LearnToOptimizeEnv",
                       vector_entry_point="envs.l2o:LearnToOptimizeVectorEnv")

__all__ = ["AmortizationEnv", "AmortizationVectorEnv", "ENV_IDS", "FixedPointEnv", "FixedPointVectorEnv", "LearnToOptimizeEnv", "LearnToOptimizeVectorEnv", "QPEnv", "QPVectorEnv", "TorchVectorEnv", "resolve_device"]
