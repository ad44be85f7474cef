"""c-convex functions on the sphere S^2 (amortized optimization tutorial, section 4.2).

f(y; x) = softmin_gamma_i [ 0.5 * arccos(<pi(y), z_i>)^2 + alpha_i ]  with
pi(y) = y / ||y|| the projection onto S^2. The context x = {z_i, alpha_i} holds
m points z_i uniform on S^2 and offsets alpha_i ~ N(0, beta^2), flattened as
[z_1, ..., z_m, alpha_1, ..., alpha_m]. The minimizer moves discontinuously
with x when two components tie, which is what makes the family a good test of
amortization: a model must learn a map from x to y*(x), not one point.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from learned_optimizers.common.problem import Box, ContextualProblem
from learned_optimizers.common.settings import setting, validate

# arccos has an infinite derivative at +-1: keep inner products a hair inside.
_COS_CLAMP = 1.0 - 1e-6
_NORM_FLOOR = 1e-8


@dataclass(frozen=True)
class SphereSettings:
    """Parameters of the sphere family."""

    n_components: int = setting(4, ge=1, le=1024, doc="m, the number of components z_i")
    gamma: float = setting(0.5, ge=0.0, doc="soft-min temperature; 0 is the hard min")
    beta: float = setting(0.2, ge=0.0, doc="standard deviation of the offsets alpha_i")

    def __post_init__(self) -> None:
        validate(self)


def project_to_sphere(y: torch.Tensor) -> torch.Tensor:
    """pi_S2(y) = y / ||y||, with the norm floored so that y = 0 stays finite."""
    return y / y.norm(dim=-1, keepdim=True).clamp_min(_NORM_FLOOR)


def random_unit_vectors(shape: tuple[int, ...], generator: torch.Generator, device: torch.device | str) -> torch.Tensor:
    """Uniform samples on S^2: normalized standard Gaussians."""
    g = torch.randn(*shape, 3, generator=generator, device=device)
    return project_to_sphere(g)


class SphereProblem(ContextualProblem):
    family = "sphere"
    solution_dim = 3

    def __init__(self, settings: SphereSettings | None = None, **kwargs: float) -> None:
        if settings is not None and kwargs:
            raise TypeError("pass either settings or keyword arguments, not both")
        self.settings = settings if settings is not None else SphereSettings(**kwargs)
        self.m = self.settings.n_components
        self.context_dim = 4 * self.m

    @property
    def context_bounds(self) -> Box:
        low = torch.cat([-torch.ones(3 * self.m), torch.full((self.m,), -math.inf)])
        return Box(low=low, high=-low)

    @property
    def solution_bounds(self) -> Box:
        return Box(low=-torch.ones(3), high=torch.ones(3))

    def split_context(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(z, alpha) with shapes (n, m, 3) and (n, m)."""
        z = x[:, : 3 * self.m].reshape(x.shape[0], self.m, 3)
        return z, x[:, 3 * self.m :]

    def sample_contexts(self, n: int, generator: torch.Generator, device: torch.device | str = "cpu") -> torch.Tensor:
        z = random_unit_vectors((n, self.m), generator, device)
        alpha = self.settings.beta * torch.randn(n, self.m, generator=generator, device=device)
        return torch.cat([z.reshape(n, 3 * self.m), alpha], dim=1)

    def component_costs(self, y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """0.5 d(pi(y), z_i)^2 + alpha_i, shape (n, m)."""
        z, alpha = self.split_context(x)
        p = project_to_sphere(y)
        cos = torch.einsum("nd,nmd->nm", p, z).clamp(-_COS_CLAMP, _COS_CLAMP)
        return 0.5 * torch.arccos(cos) ** 2 + alpha

    def objective(self, y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        costs = self.component_costs(y, x)
        gamma = self.settings.gamma
        if gamma == 0.0:
            return costs.min(dim=1).values
        return -gamma * torch.logsumexp(-costs / gamma, dim=1)

    def canonicalize(self, y: torch.Tensor) -> torch.Tensor:
        return project_to_sphere(y)

    def random_solutions(self, shape: tuple[int, ...], generator: torch.Generator, device: torch.device | str) -> torch.Tensor:
        return random_unit_vectors(shape, generator, device)

    def initial_guesses(self, x: torch.Tensor, restarts: int, generator: torch.Generator) -> torch.Tensor:
        # The component centres are the natural basins; random points cover the rest.
        z, _ = self.split_context(x)
        n = x.shape[0]
        centres = z.transpose(0, 1)[: min(restarts, self.m)]
        extra = restarts - centres.shape[0]
        if extra <= 0:
            return centres
        return torch.cat([centres, self.random_solutions((extra, n), generator, x.device)], dim=0)
