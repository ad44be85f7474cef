"""The contract of a contextual problem family: f(y; x), p(x) and a solver.

This is the (f, Y, X, p(x)) part of an amortized optimization method. The
environment in ``envs.amortization`` wraps any family that follows it, and the
agents amortize it three ways (objective, regression, RL) without knowing which
family it is.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Box:
    """Elementwise bounds of a flat vector (inf where unbounded)."""

    low: torch.Tensor
    high: torch.Tensor


class ContextualProblem(ABC):
    """A family of problems min_y f(y; x) with contexts x ~ p(x), batched over x."""

    #: short name used in configs and registries
    family: str
    context_dim: int
    solution_dim: int

    @property
    @abstractmethod
    def context_bounds(self) -> Box:
        """Bounds of a context vector (the observation space)."""

    @property
    @abstractmethod
    def solution_bounds(self) -> Box:
        """A box that contains every canonical solution (the action space)."""

    @abstractmethod
    def sample_contexts(self, n: int, generator: torch.Generator, device: torch.device | str = "cpu") -> torch.Tensor:
        """Draw ``n`` contexts, shape (n, context_dim), from p(x)."""

    def sample_heldout_contexts(self, n: int, generator: torch.Generator,
                                device: torch.device | str = "cpu") -> torch.Tensor:
        """Contexts for evaluation. A family drawn from a finite data set (OT's digit images) draws them from a part
        that training never sees; elsewhere held-out contexts differ from training ones by their seed alone."""
        return self.sample_contexts(n, generator, device)

    def model_features(self, x: torch.Tensor) -> torch.Tensor:
        """What a model sees of a context (identity here; OT's measures, of entries ~1/N, enter as logs of N x)."""
        return x

    def reference_solutions(self, x: torch.Tensor) -> torch.Tensor | None:
        """y*(x) by the family's own exact solver (Sinkhorn for OT), for regression labels and held-out optima;
        None where the family has none and multi-start Adam is the reference."""
        return None

    @abstractmethod
    def objective(self, y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """f(y; x) per row, shape (n,), differentiable in y."""

    def canonicalize(self, y: torch.Tensor) -> torch.Tensor:
        """Map a raw prediction into the domain Y (identity unless Y is a manifold)."""
        return y

    def random_solutions(self, shape: tuple[int, ...], generator: torch.Generator, device: torch.device | str) -> torch.Tensor:
        """Uninformed points of Y, shape (*shape, solution_dim): uniform in the solution box."""
        b = self.solution_bounds
        u = torch.rand(*shape, self.solution_dim, generator=generator, device=device)
        return b.low.to(device) + u * (b.high - b.low).to(device)

    @abstractmethod
    def initial_guesses(self, x: torch.Tensor, restarts: int, generator: torch.Generator) -> torch.Tensor:
        """Starting points for a multi-start solver, shape (restarts, n, solution_dim).

        These may use what the context says (e.g. component centres); a solve
        "from scratch" uses ``random_solutions`` instead.
        """

    def check_contexts(self, x: torch.Tensor) -> None:
        """Reject malformed context batches with a clear message."""
        if x.ndim != 2 or x.shape[1] != self.context_dim:
            raise ValueError(f"{self.family}: contexts must have shape (n, {self.context_dim}), got {tuple(x.shape)}")
        if not torch.isfinite(x).all():
            raise ValueError(f"{self.family}: contexts contain NaN or inf")

    def check_solutions(self, y: torch.Tensor, n: int) -> None:
        if y.ndim != 2 or y.shape != (n, self.solution_dim):
            raise ValueError(f"{self.family}: solutions must have shape ({n}, {self.solution_dim}), got {tuple(y.shape)}")


# atanh(+-1) is infinite: a start on the bound is moved this far inside
_BOUND_MARGIN = 1e-6


@dataclass(frozen=True)
class ActionBox(Box):
    """A finite action box [low, high] with the maps a solver and an SB3 policy need: the unit box
    [-1, 1] (where SB3's squashing policies and critics work) and R^d through tanh."""

    def __post_init__(self) -> None:
        if self.low.shape != self.high.shape or self.low.ndim != 1:
            raise ValueError(f"action bounds: low and high must be vectors of one shape, got {tuple(self.low.shape)} "
                             f"and {tuple(self.high.shape)}")
        if not (torch.isfinite(self.low).all() and torch.isfinite(self.high).all()) or not bool((self.high > self.low).all()):
            raise ValueError("action bounds: need finite low < high in every coordinate for a box-constrained solve")

    @classmethod
    def from_bounds(cls, low, high, device: torch.device | str = "cpu") -> "ActionBox":
        def as_vector(v) -> torch.Tensor:
            return torch.as_tensor(v, dtype=torch.float32, device=device).reshape(-1)

        return cls(as_vector(low), as_vector(high))

    @property
    def mid(self) -> torch.Tensor:
        return 0.5 * (self.high + self.low)

    @property
    def half(self) -> torch.Tensor:
        return 0.5 * (self.high - self.low)

    def from_unit(self, a: torch.Tensor) -> torch.Tensor:
        """[-1, 1] -> the box."""
        return self.mid + self.half * a

    def to_unit(self, u: torch.Tensor) -> torch.Tensor:
        """The box -> [-1, 1]."""
        return (u - self.mid) / self.half

    def to_box(self, z: torch.Tensor) -> torch.Tensor:
        """R^d -> the box's interior."""
        return self.from_unit(torch.tanh(z))

    def to_unconstrained(self, u: torch.Tensor) -> torch.Tensor:
        return torch.atanh(self.to_unit(u).clamp(-1.0 + _BOUND_MARGIN, 1.0 - _BOUND_MARGIN))
