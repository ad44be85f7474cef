"""Entropic OT between pairs of measures as amortized optimization (Meta OT, Amos et al. 2022).

A context is a pair of measures on the family's grid, x = [a, b] (2N entries).
Two views of one family, sharing its measures and cost (``TransportPairs``):

* ``OTPotentialProblem`` (``ot-digits``, ``ot-gaussians``): one step. The
  solution is the potential f (N entries, in the cost's units); the objective is
  minus the entropic dual at (f, c-transform of f), Meta OT's loss. A model
  trained on it starts Sinkhorn (ours or POT's) from its prediction.
* ``SinkhornMap`` (``sinkhorn-digits``, ``sinkhorn-gaussians``): Sinkhorn as a
  fixed-point map on f, g(f) = eps * one log-domain Sinkhorn iteration of f / eps,
  for the fixed-point domain's env and agents (a learned initial potential and a
  learned correction of each step, NeuralFP's two action modes).

Held-out contexts of the digits families use images that training never sees
(the split is by image index); those of the Gaussian families are fresh draws.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from learned_optimizers.common.fixed_point_map import ACTION_MODES, FixedPointMap, FixedPointTaskSettings
from learned_optimizers.common.problem import Box, ContextualProblem
from learned_optimizers.common.settings import SettingsError, setting, validate
from learned_optimizers.ot import sinkhorn as sk
from learned_optimizers.ot.measures import (
    MeasureError,
    check_measures,
    check_positive,
    digit_images,
    digit_split,
    gaussian_mixtures,
    grid_points,
    mix_uniform,
    squared_euclidean_cost,
)


@dataclass(frozen=True)
class OTSettings:
    """What every OT family shares: the grid, the entropic regularization, the reference solve."""

    grid: int = setting(16, ge=2, le=64, doc="measures live on the grid x grid points of [0, 1]^2 (N = grid^2)")
    epsilon: float = setting(0.01, gt=0.0, le=10.0, doc="entropic regularization, in units of the cost (max 2)")
    uniform_weight: float = setting(0.01, gt=0.0, lt=1.0, doc="uniform mass mixed into every measure (keeps it > 0)")
    reference_tol: float = setting(1e-9, gt=0.0, lt=1.0,
                                   doc="marginal violation at which float64 Sinkhorn labels the optimal potential")
    reference_iterations: int = setting(20_000, ge=1, doc="iteration cap of that reference solve")

    def __post_init__(self) -> None:
        validate(self)


@dataclass(frozen=True)
class DigitsSettings(OTSettings):
    heldout_fraction: float = setting(0.2, gt=0.0, lt=1.0,
                                      doc="the last part of the 1797 images, never drawn for training")


@dataclass(frozen=True)
class GaussianMixtureSettings(OTSettings):
    components: int = setting(3, ge=1, le=16, doc="Gaussian bumps per measure")
    min_width: float = setting(0.05, gt=0.0, doc="smallest standard deviation of a bump")
    max_width: float = setting(0.2, gt=0.0, doc="largest standard deviation of a bump")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.min_width > self.max_width:
            raise SettingsError(f"min_width={self.min_width} exceeds max_width={self.max_width}; "
                                "allowed: min_width <= max_width")


class TransportPairs:
    """The measures p(a, b) and cost C of one family, shared by its one-step problem and its Sinkhorn map."""

    def __init__(self, measures: str, settings: OTSettings) -> None:
        if measures not in ("digits", "gaussians"):
            raise ValueError(f"measures={measures!r}; allowed: digits, gaussians")
        self.measures, self.settings = measures, settings
        self.size = settings.grid**2
        self.epsilon = settings.epsilon
        self._cost = squared_euclidean_cost(grid_points(settings.grid))
        self._kernels: dict[torch.device, sk.GibbsKernel] = {}

    def cost_on(self, like: torch.Tensor) -> torch.Tensor:
        """C on ``like``'s device and dtype, (N, N)."""
        return self._cost.to(like.device, like.dtype)

    def kernel_on(self, like: torch.Tensor) -> sk.GibbsKernel:
        """The Gibbs kernel on ``like``'s device (float64), built once per device."""
        if like.device not in self._kernels:
            self._kernels[like.device] = sk.GibbsKernel(self._cost.to(like.device), self.epsilon)
        return self._kernels[like.device]

    def sample(self, n: int, generator: torch.Generator, device: torch.device | str, heldout: bool) -> torch.Tensor:
        """``n`` contexts [a, b], (n, 2N) float32."""
        s = self.settings
        if self.measures == "digits":
            images = digit_images(s.grid)
            train, held = digit_split(images.shape[0], s.heldout_fraction)
            pool = (held if heldout else train).to(device)
            pick = torch.randint(0, pool.numel(), (2 * n,), generator=generator, device=device)
            raw = images.to(device)[pool[pick]]
        else:
            raw = gaussian_mixtures(2 * n, s.grid, s.components, (s.min_width, s.max_width), generator, device)
        pairs = mix_uniform(raw, s.uniform_weight).reshape(n, 2 * self.size)
        return pairs.float()

    def split(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(a, b), each (n, N), renormalized in x's dtype (float32 contexts sum to 1 only within rounding)."""
        a, b = x[:, : self.size], x[:, self.size :]
        return a / a.sum(-1, keepdim=True), b / b.sum(-1, keepdim=True)

    def check(self, x: torch.Tensor, family: str) -> None:
        if x.ndim != 2 or x.shape[1] != 2 * self.size:
            raise MeasureError(f"{family}: contexts are pairs [a, b] of measures on {self.size} grid points, shape "
                               f"(n, {2 * self.size}); got {tuple(x.shape)}")
        for name, part in (("a", x[:, : self.size]), ("b", x[:, self.size :])):
            check_measures(part, f"{family}: {name}", self.size)
            check_positive(part, f"{family}: {name}")

    def potential_bound(self) -> float:
        """A bound on |f| for potentials centred to mean zero: the cost's range plus eps times the log-mass range."""
        min_mass = self.settings.uniform_weight / self.size
        return float(self._cost.max()) + self.epsilon * math.log(1.0 / min_mass) + 1.0

    def solve(self, x: torch.Tensor, u0: torch.Tensor | None = None) -> sk.SinkhornResult:
        """The reference: float64 Sinkhorn to ``reference_tol``."""
        a, b = self.split(x.double())
        s = self.settings
        return sk.sinkhorn(a, b, self.kernel_on(a), s.epsilon, tol=s.reference_tol,
                           max_iterations=s.reference_iterations, u0=u0)


def centred(f: torch.Tensor) -> torch.Tensor:
    """The potential's representative of mean zero (the dual is invariant to f + c)."""
    return f - f.mean(-1, keepdim=True)


class OTPotentialProblem(ContextualProblem):
    """min_f -D(f, f^c; a, b): predict the optimal dual potential of a pair of measures."""

    measures: str

    def __init__(self, settings: OTSettings) -> None:
        self.settings = settings
        self.pairs = TransportPairs(self.measures, settings)
        self.context_dim, self.solution_dim = 2 * self.pairs.size, self.pairs.size

    @property
    def context_bounds(self) -> Box:
        return Box(torch.zeros(self.context_dim), torch.ones(self.context_dim))

    @property
    def solution_bounds(self) -> Box:
        bound = self.pairs.potential_bound()
        return Box(torch.full((self.solution_dim,), -bound), torch.full((self.solution_dim,), bound))

    def sample_contexts(self, n: int, generator: torch.Generator, device: torch.device | str = "cpu") -> torch.Tensor:
        return self.pairs.sample(n, generator, device, heldout=False)

    def sample_heldout_contexts(self, n: int, generator: torch.Generator,
                                device: torch.device | str = "cpu") -> torch.Tensor:
        return self.pairs.sample(n, generator, device, heldout=True)

    def objective(self, y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        a, b = self.pairs.split(x.to(y.dtype))
        return -sk.dual_objective(y, a, b, self.pairs.kernel_on(y))

    def canonicalize(self, y: torch.Tensor) -> torch.Tensor:
        return centred(y)

    def model_features(self, x: torch.Tensor) -> torch.Tensor:
        """log(N x): the measures' entries are ~1/N, and Sinkhorn's potentials depend on their logs."""
        return torch.log((x * self.pairs.size).clamp(min=1e-12))

    def initial_guesses(self, x: torch.Tensor, restarts: int, generator: torch.Generator) -> torch.Tensor:
        """Sinkhorn's own start (f = 0) and small perturbations of it."""
        noise = 0.01 * torch.randn(restarts, x.shape[0], self.solution_dim, generator=generator, device=x.device)
        noise[0] = 0.0
        return noise

    def reference_solutions(self, x: torch.Tensor) -> torch.Tensor:
        """The optimal potentials by float64 Sinkhorn, centred; raises where Sinkhorn did not converge."""
        result = self.pairs.solve(x)
        if not bool(result.converged.all()):
            bad = int((~result.converged).sum())
            raise RuntimeError(f"{self.family}: Sinkhorn reached {self.settings.reference_tol:g} on "
                               f"{x.shape[0] - bad}/{x.shape[0]} pairs in {self.settings.reference_iterations} iterations")
        return centred(result.f).to(x.dtype)

    def check_contexts(self, x: torch.Tensor) -> None:
        self.pairs.check(x, self.family)


class OTDigitsProblem(OTPotentialProblem):
    family = "ot-digits"
    measures = "digits"

    def __init__(self, settings: DigitsSettings | None = None, **kwargs) -> None:
        super().__init__(settings if settings is not None else DigitsSettings(**kwargs))


class OTGaussiansProblem(OTPotentialProblem):
    family = "ot-gaussians"
    measures = "gaussians"

    def __init__(self, settings: GaussianMixtureSettings | None = None, **kwargs) -> None:
        super().__init__(settings if settings is not None else GaussianMixtureSettings(**kwargs))


# ---------------------------------------------------------------- Sinkhorn as a fixed-point map
@dataclass(frozen=True)
class SinkhornMapSettings(FixedPointTaskSettings):
    mode: str = setting("neural_fp", choices=ACTION_MODES,
                        doc="neural_fp: action corrects the Sinkhorn step; hyper_aa: Anderson's mixing coefficients")
    tol: float = setting(1e-6, gt=0.0, lt=1.0, doc="episode ends once ||R(f)|| <= tol * ||R(0)||")


@dataclass(frozen=True)
class SinkhornDigitsSettings(SinkhornMapSettings, DigitsSettings):
    pass


@dataclass(frozen=True)
class SinkhornGaussiansSettings(SinkhornMapSettings, GaussianMixtureSettings):
    pass


class SinkhornMap(FixedPointMap):
    """g(f; a, b) = eps * u+(f / eps): one log-domain Sinkhorn iteration on the potential f."""

    measures: str

    def __init__(self, settings: SinkhornMapSettings) -> None:
        super().__init__(settings)
        self.pairs = TransportPairs(self.measures, settings)
        self.dim, self.context_dim = self.pairs.size, 2 * self.pairs.size

    def _parameters(self) -> tuple[torch.Tensor, ...]:
        return ()

    def sample_contexts(self, n: int, generator: torch.Generator, device: torch.device | str = "cpu") -> torch.Tensor:
        return self.pairs.sample(n, generator, device, heldout=False)

    def sample_heldout_contexts(self, n: int, generator: torch.Generator,
                                device: torch.device | str = "cpu") -> torch.Tensor:
        return self.pairs.sample(n, generator, device, heldout=True)

    def _step(self, f: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One iteration from f: (f+, v+) with v+ the log scaling of the half-step."""
        eps = self.pairs.epsilon
        a, b = self.pairs.split(x.to(f.dtype))
        u, v = sk.sinkhorn_step(self.pairs.kernel_on(f), f / eps, torch.log(a), torch.log(b))
        return (eps * u).to(f.dtype), v

    def g(self, y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return self._step(y, x)[0]

    def termination(self, y: torch.Tensor, x: torch.Tensor, eps: float) -> torch.Tensor:
        """POT's test at the point it would check after one iteration from f = y: ||P' 1 - b|| < eps."""
        with torch.no_grad():
            f, v = self._step(y, x)
            b = self.pairs.split(x.to(y.dtype))[1]
            return sk.marginal_error(self.pairs.kernel_on(y), f / self.pairs.epsilon, v, b) < eps

    def check_contexts(self, x: torch.Tensor) -> None:
        self.pairs.check(x, self.family)


class SinkhornDigitsMap(SinkhornMap):
    family = "sinkhorn-digits"
    measures = "digits"


class SinkhornGaussiansMap(SinkhornMap):
    family = "sinkhorn-gaussians"
    measures = "gaussians"


#: one-step potential families: name -> (problem class, settings class)
OT_PROBLEM_FAMILIES = {
    "ot-digits": (OTDigitsProblem, DigitsSettings),
    "ot-gaussians": (OTGaussiansProblem, GaussianMixtureSettings),
}

#: Sinkhorn as fixed-point map families, merged into the fixed-point families
SINKHORN_MAP_FAMILIES = {
    "sinkhorn-digits": (SinkhornDigitsMap, SinkhornDigitsSettings),
    "sinkhorn-gaussians": (SinkhornGaussiansMap, SinkhornGaussiansSettings),
}
