"""Fixed-point map families y = g(y; x), batched over contexts x (tutorial 3.4).

A family fixes the map's parameters once from ``family_seed`` (so a trained
accelerator always faces the same map) and draws contexts x ~ p(x). Every map
is differentiable in y, runs on any device and dtype, and gives its residual
R(y) = g(y) - y. The settings of the MDP around the map (action mode, memory,
horizon) live in the same settings class, so one config section describes the
whole task.

* ``deq``: g(y; x) = tanh(W y + U x + b), W rescaled to a chosen spectral norm
  (0.99 makes plain iteration slow), x ~ N(0, I): a deep-equilibrium layer.
* ``ista``: g(y; x) = soft(y - eta D'(D y - x), eta lam) for sparse coding of a
  signal x = D s + noise with a fixed dictionary D (tutorial 3.2).
SCS's iteration as a map (``scs-lasso``, ...) is the conic domain's
(``learned_optimizers.conic.maps``); the map protocol both implement is in
``learned_optimizers.common.fixed_point_map``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from learned_optimizers.common.fixed_point_map import FixedPointMap, FixedPointTaskSettings
from learned_optimizers.common.settings import SettingsError, setting


@dataclass(frozen=True)
class DEQSettings(FixedPointTaskSettings):
    dim: int = setting(64, ge=1, doc="size of the iterate y")
    context_dim: int = setting(16, ge=1, doc="size of the context x")
    spectral_norm: float = setting(0.99, gt=0.0, lt=1.0, doc="||W||_2: the map is a contraction with at most this factor")
    input_scale: float = setting(0.5, gt=0.0, doc="std of U's entries times sqrt(context_dim)")
    bias_scale: float = setting(0.1, ge=0.0, doc="std of b")


@dataclass(frozen=True)
class ISTASettings(FixedPointTaskSettings):
    atoms: int = setting(64, ge=1, doc="size of the code y (dictionary columns)")
    signal_dim: int = setting(32, ge=1, doc="size of the signal x (dictionary rows)")
    sparsity: int = setting(4, ge=1, doc="non-zeros of the code that generates a signal")
    lam: float = setting(0.05, gt=0.0, doc="l1 weight of the lasso that ISTA solves")
    noise: float = setting(0.01, ge=0.0, doc="std of the noise added to D s")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.sparsity > self.atoms:
            raise SettingsError(f"sparsity={self.sparsity} exceeds atoms={self.atoms}; allowed: 1 to atoms")




class DEQMap(FixedPointMap):
    family = "deq"

    def __init__(self, settings: DEQSettings | None = None, **kwargs) -> None:
        settings = settings if settings is not None else DEQSettings(**kwargs)
        super().__init__(settings)
        self.dim, self.context_dim = settings.dim, settings.context_dim

    def _parameters(self) -> tuple[torch.Tensor, ...]:
        s, gen = self.settings, self._family_generator()
        # symmetric W = Q diag(lambda) Q' with |lambda| <= 1 spread uniformly and rescaled to the
        # norm: its spectral radius then equals its norm. (A Gaussian W's radius is about half its
        # norm, and plain iteration would converge fast whatever the norm.)
        Q, _ = torch.linalg.qr(torch.randn(s.dim, s.dim, generator=gen, dtype=torch.float64))
        eigenvalues = torch.rand(s.dim, generator=gen, dtype=torch.float64) * 2 - 1
        W = (Q * eigenvalues) @ Q.T
        W *= s.spectral_norm / torch.linalg.matrix_norm(W, ord=2)
        U = torch.randn(s.dim, s.context_dim, generator=gen, dtype=torch.float64) * (s.input_scale / s.context_dim**0.5)
        b = torch.randn(s.dim, generator=gen, dtype=torch.float64) * s.bias_scale
        return W, U, b

    def sample_contexts(self, n: int, generator: torch.Generator, device: torch.device | str = "cpu") -> torch.Tensor:
        return torch.randn(n, self.context_dim, generator=generator, device=device)

    def g(self, y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        W, U, b = self.parameters_on(y)
        return torch.tanh(y @ W.T + x.to(y.dtype) @ U.T + b)


def soft_threshold(v: torch.Tensor, threshold: float | torch.Tensor) -> torch.Tensor:
    """The proximal map of threshold * ||.||_1."""
    return torch.sign(v) * torch.clamp(v.abs() - threshold, min=0.0)


class ISTAMap(FixedPointMap):
    family = "ista"

    def __init__(self, settings: ISTASettings | None = None, **kwargs) -> None:
        settings = settings if settings is not None else ISTASettings(**kwargs)
        super().__init__(settings)
        self.dim, self.context_dim = settings.atoms, settings.signal_dim

    def _parameters(self) -> tuple[torch.Tensor, ...]:
        s, gen = self.settings, self._family_generator()
        D = torch.randn(s.signal_dim, s.atoms, generator=gen, dtype=torch.float64)
        D /= D.norm(dim=0, keepdim=True)  # unit-norm atoms
        eta = 1.0 / torch.linalg.matrix_norm(D, ord=2) ** 2  # step 1/L: ISTA is then non-expansive
        return D, eta.reshape(1)

    def sample_contexts(self, n: int, generator: torch.Generator, device: torch.device | str = "cpu") -> torch.Tensor:
        s = self.settings
        D = self.parameters_on(torch.empty(0, device=device))[0]
        support = torch.rand(n, s.atoms, generator=generator, device=device).argsort(dim=1)[:, : s.sparsity]
        codes = torch.zeros(n, s.atoms, device=device)
        values = torch.randn(n, s.sparsity, generator=generator, device=device)
        codes.scatter_(1, support, values)
        noise = torch.randn(n, s.signal_dim, generator=generator, device=device) * s.noise
        return codes @ D.T + noise

    def g(self, y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        D, eta = self.parameters_on(y)
        gradient = (y @ D.T - x.to(y.dtype)) @ D
        return soft_threshold(y - eta * gradient, eta * self.settings.lam)


#: the map families of this domain: name -> (map class, settings class)
FIXED_POINT_MAPS: dict[str, tuple[type[FixedPointMap], type[FixedPointTaskSettings]]] = {
    "deq": (DEQMap, DEQSettings),
    "ista": (ISTAMap, ISTASettings),
}
