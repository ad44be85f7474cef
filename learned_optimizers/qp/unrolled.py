"""k steps of OSQP's ADMM on a parametric QP family, differentiable in the starting point: the objective of a
warm start learned through the solver (Sambharya et al., "Learning to warm-start fixed-point optimization
algorithms", JMLR 2024).

osqp runs on a Ruiz-scaled problem (D, E, c fixed at its setup: ``update(q=, l=, u=)`` keeps them), and so
does this unroll, with the scaling our batched core computes for the family's mean context: from the same
start, its first iterations are osqp's until osqp first adapts rho. A family's P and A are fixed, so with
OSQP's rho rule (rho on inequality rows, 1e3 rho on equality rows,
rho_min on free rows) the reduced KKT matrix P + sigma I + A' diag(rho) A is factored once; every context
then runs the same dense, batched updates:

    x~ = K^-1 (sigma x - q + A'(rho z - y)),  z~ = A x~,
    x+ = alpha x~ + (1 - alpha) x,  z+ = Pi_[l,u](alpha z~ + (1 - alpha) z + y / rho),
    y+ = y + rho (alpha z~ + (1 - alpha) z - z+)

from osqp's own warm start (x, y given, z = A x). The residuals after k steps, ||A x - z|| and
||P x + q + A'y|| in the problem's units, are what osqp's termination test reads; their log is the loss.
The rho stays fixed (osqp adapts it later), which is what makes it one factorization and k matrix products
per batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from learned_optimizers.qp.admm import RHO_EQ_OVER_RHO_INEQ, RHO_MIN, RHO_TOL, OSQPBatch, OSQPSettings
from learned_optimizers.qp.parametric import ParametricQPFamily

#: OSQP's sigma and relaxation (the core's defaults)
SIGMA, ALPHA = OSQPSettings.sigma, OSQPSettings.alpha
FREE = 1e19  # |bound| at or above this: no bound on that side


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
        t = lambda a: torch.as_tensor(np.asarray(a), dtype=torch.float64, device=device)  # noqa: E731
        self.family = family
        # osqp's scaling of the family (P and A fixed; the cost factor c from the mean context's q)
        core = OSQPBatch([family.qp(family.context_mean)])
        self.D, self.E, self.c = core.D[0].to(device), core.E[0].to(device), float(core.c[0])
        self.P = t(family.P.toarray()) * self.D[:, None] * self.D[None, :] * self.c
        self.A = t(family.A.toarray()) * self.E[:, None] * self.D[None, :]
        self.q0, self.l0, self.u0 = t(family.q0), t(family.l0), t(family.u0)
        self.Gq, self.Gl, self.Gu = t(family.Gq), t(family.Gl), t(family.Gu)
        # the rho rule on the family's rows: a row's kind depends on its bounds, which the context may move;
        # it is decided on the family's base bounds l0, u0
        l0, u0 = family.l0, family.u0
        free = (l0 <= -FREE) & (u0 >= FREE)
        equality = ~free & (u0 - l0 < RHO_TOL)
        rho_vec = np.where(free, RHO_MIN, np.where(equality, RHO_EQ_OVER_RHO_INEQ * rho, rho))
        self.rho = t(rho_vec)
        n = self.P.shape[0]
        K = self.P + SIGMA * torch.eye(n, dtype=torch.float64, device=device) + self.A.T @ (self.rho[:, None] * self.A)
        self.L = torch.linalg.cholesky(K)

    def data(self, contexts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(q, l, u) of each context, as ``ParametricQPFamily.data`` (bounds clipped to +-FREE)."""
        c = contexts.to(torch.float64)
        q = self.q0 + c @ self.Gq.T
        l = (self.l0 + c @ self.Gl.T).clamp(-FREE, FREE)
        u = (self.u0 + c @ self.Gu.T).clamp(-FREE, FREE)
        return q, l, u

    def run(self, contexts: torch.Tensor, x: torch.Tensor, y: torch.Tensor, steps: int) -> UnrolledResiduals:
        """The residuals after ``steps`` ADMM steps from (x, y) (z = A x, as osqp's warm start sets it)."""
        if steps < 1:
            raise ValueError(f"steps={steps}: at least 1")
        f = self.family
        for name, value, width in (("contexts", contexts, f.context_dim), ("x", x, f.n), ("y", y, f.m)):
            if value.ndim != 2 or value.shape[1] != width or value.shape[0] != contexts.shape[0]:
                raise ValueError(f"{f.name}: {name} must be (batch, {width}) with the contexts' batch; got "
                                 f"{tuple(value.shape)}")
        q, l, u = self.data(contexts)
        # into osqp's scaled space (bounds beyond FREE stay free)
        q = self.c * self.D * q
        l = torch.where(l <= -FREE, l, self.E * l)
        u = torch.where(u >= FREE, u, self.E * u)
        x, y = x.to(torch.float64) / self.D, y.to(torch.float64) * self.c / self.E
        z = x @ self.A.T
        rho = self.rho
        for _ in range(steps):
            rhs = SIGMA * x - q + (rho * z - y) @ self.A
            x_tilde = torch.cholesky_solve(rhs.T, self.L).T  # every context's right-hand side against one factor
            z_tilde = x_tilde @ self.A.T
            x = ALPHA * x_tilde + (1 - ALPHA) * x
            z_relaxed = ALPHA * z_tilde + (1 - ALPHA) * z
            z_new = torch.minimum(torch.maximum(z_relaxed + y / rho, l), u)
            y = y + rho * (z_relaxed - z_new)
            z = z_new
        n, m = self.P.shape[0], self.A.shape[0]
        # in the problem's units, as osqp's termination test reads them
        primal = ((x @ self.A.T - z) / self.E).norm(dim=1) / m ** 0.5
        dual = ((x @ self.P + q + y @ self.A) / (self.c * self.D)).norm(dim=1) / n ** 0.5
        return UnrolledResiduals(primal, dual)
