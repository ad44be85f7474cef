"""k steps of OSQP's ADMM on a parametric QP family, differentiable in the starting point: the objective of a
warm start learned through the solver (Sambharya et al., "Learning to warm-start fixed-point optimization
algorithms", JMLR 2024).

osqp runs on a Ruiz-scaled problem (D, E, c fixed at its setup: ``update(q=, l=, u=)`` keeps them), and so
does this unroll, with the scaling our batched core computes for the family's mean context: from the same
start, its first iterations are osqp's until osqp first adapts rho. A family's P and A are fixed, so with
OSQP's rho rule (the core's: rho on inequality rows, 1e3 rho on equality rows, rho_min on free rows) the
reduced KKT matrix P + sigma I + A' diag(rho) A is factored once; every context then runs the core's own
iteration (``admm.admm_step``) with dense products, from osqp's own warm start (x, y given, z = A x). The
residuals after k steps, ||A x - z|| and ||P x + q + A'y|| in the problem's units, are what osqp's
termination test reads; their log is the loss.
The rho stays fixed (osqp adapts it later), which is what makes it one factorization and k matrix products
per batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from learned_optimizers.qp.admm import OSQP_INFTY, OSQPBatch, OSQPSettings, admm_step
from learned_optimizers.qp.parametric import ParametricQPFamily


@dataclass
class UnrolledResiduals:
    primal: torch.Tensor  # (B,) ||A x_k - z_k||_2 / sqrt(m)
    dual: torch.Tensor  # (B,) ||P x_k + q + A'y_k||_2 / sqrt(n)

    def log_loss(self, floor: float = 1e-12) -> torch.Tensor:
        """Mean over the batch of log(primal + dual + floor): each context's residual counts by its ratio."""
        return torch.log(self.primal + self.dual + floor).mean()


class UnrolledADMM:
    """OSQP's ADMM for one family at a fixed rho, batched over contexts, differentiable (float64)."""

    def __init__(self, family: ParametricQPFamily, rho: float = 0.1, device: torch.device | str = "cpu") -> None:
        if not rho > 0:
            raise ValueError(f"rho={rho}: must be > 0")
        self.family, self.device = family, torch.device(device)
        # the core set up on the family's mean context: osqp's scaling (P and A fixed; the cost factor c from
        # that context's q), its rho vector and settings
        self.settings = OSQPSettings(rho=rho)
        core = OSQPBatch([family.qp(family.context_mean)], self.settings)
        to = lambda t: t.to(self.device)  # noqa: E731
        self.D, self.E, self.c = to(core.D[0]), to(core.E[0]), float(core.c[0])
        self.P, self.A, self.rho = to(core.P.dense()[0]), to(core.A.dense()[0]), to(core.rho_vec[0])
        n = self.P.shape[0]
        K = self.P + self.settings.sigma * torch.eye(n, dtype=torch.float64, device=self.device) \
            + self.A.T @ (self.rho[:, None] * self.A)
        self.L = torch.linalg.cholesky(K)

    def scaled_data(self, contexts: np.ndarray | torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(q, l, u) of each context (``ParametricQPFamily.data``, whose named errors a bad context gets) in osqp's
        scaled space, as the core scales them."""
        c = contexts.detach().cpu().numpy() if isinstance(contexts, torch.Tensor) else contexts
        q, l, u = (torch.as_tensor(v, dtype=torch.float64, device=self.device) for v in self.family.data(c))
        return (self.c * self.D * q, self.E * l.clamp(-OSQP_INFTY, OSQP_INFTY),
                self.E * u.clamp(-OSQP_INFTY, OSQP_INFTY))

    def run(self, contexts: np.ndarray | torch.Tensor, x: torch.Tensor, y: torch.Tensor, steps: int) -> UnrolledResiduals:
        """The residuals after ``steps`` ADMM steps from (x, y) (z = A x, as osqp's warm start sets it)."""
        if steps < 1:
            raise ValueError(f"steps={steps}: at least 1")
        q, l, u = self.scaled_data(contexts)
        f = self.family
        for name, value, width in (("x", x, f.n), ("y", y, f.m)):
            if value.ndim != 2 or value.shape != (q.shape[0], width):
                raise ValueError(f"{f.name}: {name} must be ({q.shape[0]}, {width}), one row per context; got "
                                 f"{tuple(value.shape)}")
        # into osqp's scaled space, as the core's warm_start does
        x, y = x.to(torch.float64) / self.D, y.to(torch.float64) * self.c / self.E
        z = x @ self.A.T
        A, L, s = self.A, self.L, self.settings
        for _ in range(steps):
            x, z, delta_y = admm_step(x, z, y, self.rho, q, l, u, mv=lambda v: v @ A.T, rmv=lambda v: v @ A,
                                      solve=lambda rhs: torch.cholesky_solve(rhs.T, L).T, sigma=s.sigma,
                                      alpha=s.alpha)
            y = y + delta_y
        n, m = self.P.shape[0], self.A.shape[0]
        # in the problem's units, as osqp's termination test reads them
        primal = ((x @ self.A.T - z) / self.E).norm(dim=1) / m ** 0.5
        dual = ((x @ self.P + q + y @ self.A) / (self.c * self.D)).norm(dim=1) / n ** 0.5
        return UnrolledResiduals(primal, dual)
