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
* ``scs-lasso``, ``scs-huber``, ``scs-socp``: one step of SCS on a cone
  program of the family (``scs_maps``; NeuralSCS, tutorial 3.4.1).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import torch

from ..settings import SettingsError, setting, validate

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


#: family name -> (map class, settings class)
FIXED_POINT_FAMILIES: dict[str, tuple[type[FixedPointMap], type[FixedPointTaskSettings]]] = {
    "deq": (DEQMap, DEQSettings),
    "ista": (ISTAMap, ISTASettings),
}


# SCS's iteration as map families (they build on the classes above)
from .scs_maps import SCS_MAP_FAMILIES  # noqa: E402

FIXED_POINT_FAMILIES.update(SCS_MAP_FAMILIES)


def make_map(family: str, **settings) -> FixedPointMap:
    """A map family by name, e.g. ``make_map("deq", spectral_norm=0.9)``."""
    if family not in FIXED_POINT_FAMILIES:
        raise ValueError(f"family={family!r}; allowed: {', '.join(FIXED_POINT_FAMILIES)}")
    map_cls, settings_cls = FIXED_POINT_FAMILIES[family]
    return map_cls(settings_cls(**settings))
