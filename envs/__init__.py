"""Gymnasium environments; every env id of the project is registered here.

``gymnasium.make(id)`` gives the single-instance env; ``gymnasium.make_vec(id,
num_envs, vectorization_mode="vector_entry_point", device=...)`` the batched
torch form.
"""

import gymnasium

from .amortization import AmortizationEnv, AmortizationVectorEnv
from .vector import TorchVectorEnv, resolve_device

#: env id -> one-line description (shown by ``amortize list``)
ENV_IDS: dict[str, str] = {
    "amortize/Sphere-v0": "c-convex function on S^2 (tutorial 4.2): context -> point on the sphere, one step",
}

if "amortize/Sphere-v0" not in gymnasium.registry:
    gymnasium.register(
        id="amortize/Sphere-v0",
        entry_point="envs.amortization:AmortizationEnv",
        vector_entry_point="envs.amortization:AmortizationVectorEnv",
        kwargs={"family": "sphere"},
    )

__all__ = ["AmortizationEnv", "AmortizationVectorEnv", "ENV_IDS", "TorchVectorEnv", "resolve_device"]
