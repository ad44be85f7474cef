"""The fixed-point map protocol: y = g(y; x), batched over contexts x (tutorial 3.4).

Two domains implement it: the fixed-point domain's own maps (``deq``, ``ista``)
and the conic domain's SCS iteration as a map (``scs-*``); the fixed-point
core, env and agents accelerate any of them. A family fixes the map's
parameters once from ``family_seed`` (so a trained accelerator always faces the
same map) and draws contexts x ~ p(x). Every map is differentiable in y, runs
on any device and dtype, and gives its residual R(y) = g(y) - y. The settings
of the MDP around the map (action mode, memory, horizon) live in the same
settings class, so one config section describes the whole task.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import torch

from learned_optimizers.common.settings import setting, validate

ACTION_MODES = ("hyper_aa", "neural_fp")


@dataclass(frozen=True)
class FixedPointTaskSettings:
    """The MDP around any map: shared by every family."""

    mode: str = setting("hyper_aa", choices=ACTION_MODES,
                        doc="hyper_aa: action corrects Anderson's mixing coefficients and beta; "
                            "neural_fp: action corrects the plain step")
    memory: int = setting(5, ge=1, le=64, doc="M, iterates kept by Anderson and shown to the policy")
    regularization: float = setting(1e-4, ge=0.0, doc="Anderson's ridge on its Gram matrix (relative to its scale)")
    beta: float = setting(1.0, gt=0.0, le=2.0, doc="Anderson's damping (1 = undamped)")
    max_steps: int = setting(25, ge=1, doc="K, map evaluations per episode")
    tol: float = setting(1e-6, gt=0.0, lt=1.0, doc="episode ends once ||R(y)|| <= tol * ||R(y_default)||")
    max_correction: float = setting(1.0, gt=0.0, doc="bound of each action entry (the action space)")
    family_seed: int = setting(0, ge=0, doc="fixes the map's parameters (W, U, b or D)")

    def __post_init__(self) -> None:
        validate(self)


class FixedPointMap(ABC):
    """A family of maps g(.; x): R^dim -> R^dim with contexts x ~ p(x)."""

    family: str
    dim: int
    context_dim: int

    def __init__(self, settings: FixedPointTaskSettings) -> None:
        self.settings = settings
        self._cache: dict[tuple, tuple[torch.Tensor, ...]] = {}

    # ------------------------------------------------------------ parameters
    @abstractmethod
    def _parameters(self) -> tuple[torch.Tensor, ...]:
        """The map's fixed parameters in float64 on the CPU, built from ``family_seed``."""

    def parameters_on(self, like: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The parameters on ``like``'s device and dtype, built once per (device, dtype)."""
        key = (like.device, like.dtype)
        if key not in self._cache:
            if not self._cache:
                self._cache[("base",)] = self._parameters()
            self._cache[key] = tuple(p.to(like.device, like.dtype) for p in self._cache[("base",)])
        return self._cache[key]

    def _family_generator(self) -> torch.Generator:
        return torch.Generator().manual_seed(10_007 * self.settings.family_seed + 17)

    # ------------------------------------------------------------ the map
    @abstractmethod
    def sample_contexts(self, n: int, generator: torch.Generator, device: torch.device | str = "cpu") -> torch.Tensor:
        """``n`` contexts from p(x), shape (n, context_dim), float32."""

    def sample_heldout_contexts(self, n: int, generator: torch.Generator,
                                device: torch.device | str = "cpu") -> torch.Tensor:
        """Contexts for evaluation: from a part of the data training never sees, where the family has such a part."""
        return self.sample_contexts(n, generator, device)

    @abstractmethod
    def g(self, y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """The map, batched: y (n, dim), x (n, context_dim) -> (n, dim); differentiable in y."""

    def residual(self, y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return self.g(y, x) - y

    def initial_iterate(self, x: torch.Tensor) -> torch.Tensor:
        """The classical start y_0 = 0, against whose residual every method is measured."""
        return torch.zeros(x.shape[0], self.dim, device=x.device, dtype=x.dtype)

    def termination(self, y: torch.Tensor, x: torch.Tensor, eps: float) -> torch.Tensor | None:
        """(B,) bool: the solver's own stopping test at tolerance ``eps``, for maps that have one (else None)."""
        return None

    def check_contexts(self, x: torch.Tensor) -> None:
        if x.ndim != 2 or x.shape[1] != self.context_dim:
            raise ValueError(f"{self.family}: contexts must have shape (n, {self.context_dim}), got {tuple(x.shape)}")
        if not torch.isfinite(x).all():
            raise ValueError(f"{self.family}: contexts contain NaN or inf")
