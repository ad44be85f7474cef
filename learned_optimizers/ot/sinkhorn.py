"""Batched log-domain Sinkhorn: entropic optimal transport between many pairs of measures at once.

For measures a (n,), b (m,) and a cost C (n, m), entropic OT solves
min_P <C, P> - eps H(P) with P 1 = a, P' 1 = b. Its dual, with the potentials
f = eps u, g = eps v, is max_{f, g} <f, a> + <g, b> - eps <exp((f + g - C) / eps), 1>.
One Sinkhorn iteration is two exact block maximizations of that dual, written
in the log domain (stable for small eps):

    v = log b - LSE_i(-C_ij / eps + u_i),   u = log a - LSE_j(-C_ij / eps + v_j).

The loop follows POT's ``ot.sinkhorn(..., method="sinkhorn_log")`` step for
step, so that iteration counts can be compared exactly: u starts at zero (or a
warm start), each iteration updates v then u, and after iterations 1, 1 + k,
1 + 2k, ... (k = ``check_every``, 10 as in POT) it measures the violation of
the second marginal, ||P' 1 - b||_2 (the first holds exactly after the u
update), and stops once it is below ``tol``. Every problem of the batch stops
on its own; finished ones leave the working set, so the batch never pays for
its slowest member more than its own iterations.

A learned start (Meta OT) enters as u0 = f0 / eps: only u matters, since the
first update recomputes v from it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import IntEnum

import torch

from learned_optimizers.ot.measures import check_cost, check_measures


class SinkhornStatus(IntEnum):
    RUNNING = 0
    CONVERGED = 1  # marginal violation below tol at a check
    MAX_ITERATIONS = 2
    DIVERGED = 3  # a potential or the violation became NaN or inf

    @property
    def label(self) -> str:
        return self.name.lower()


@dataclass
class SinkhornResult:
    """A batch of solves: log scalings u, v (potentials f = eps u, g = eps v), iterations, the violation trace."""

    u: torch.Tensor  # (B, n)
    v: torch.Tensor  # (B, m)
    iterations: torch.Tensor  # (B,) long: Sinkhorn iterations performed (POT's log["niter"] + 1)
    error: torch.Tensor  # (B,) the last measured marginal violation
    status: torch.Tensor  # (B,) SinkhornStatus values
    #: (B, checks) the violation at each check (after iterations 1, 1 + k, ...); inf after a problem stopped
    errors_at_checks: torch.Tensor
    check_every: int
    epsilon: float

    @property
    def f(self) -> torch.Tensor:
        return self.epsilon * self.u

    @property
    def g(self) -> torch.Tensor:
        return self.epsilon * self.v

    def iterations_to(self, tol: float) -> torch.Tensor:
        """(B,) float: iterations until the first check whose violation is below ``tol`` (inf where none was)."""
        below = self.errors_at_checks < tol
        first = below.to(torch.uint8).argmax(1)
        iterations = (first * self.check_every + 1).to(torch.float64)
        return torch.where(below.any(1), iterations, math.inf)

    @property
    def converged(self) -> torch.Tensor:
        return self.status == SinkhornStatus.CONVERGED


#: below exp(-600) a float64 term loses precision (and is 0 past exp(-745)): the matrix-product LSE is used only
#: where its largest term stays above that
_SAFE_EXPONENT = 600.0


class GibbsKernel:
    """K = exp(-C / eps) and its log, with the log-sum-exps of Sinkhorn computed as matrix products.

    LSE_i(log K_ij + u_i) = s + log(sum_i K_ij exp(u_i - s)) with s = max_i u_i is one matrix product instead of
    B * n * m exponentials (about 100x faster on a CPU). Its terms stay representable while
    max_i log K_ij + min u - max u > -600 for every j; rows where that bound fails are computed with
    ``torch.logsumexp``. Computes in float64 whatever the caller's dtype, differentiably.
    """

    def __init__(self, cost: torch.Tensor, epsilon: float) -> None:
        self.epsilon = epsilon
        self.log_k = -cost.to(torch.float64) / epsilon  # (n, m) or (B, n, m)
        self.k = torch.exp(self.log_k)
        # the worst column (row) maximum of log K: the bound on how small the largest term of an LSE can get
        self._col_floor = self.log_k.amax(-2).amin(-1)
        self._row_floor = self.log_k.amax(-1).amin(-1)

    @property
    def shared(self) -> bool:
        return self.log_k.ndim == 2

    def subset(self, rows: torch.Tensor) -> "GibbsKernel":
        """The kernel of the problems ``rows`` (itself when one cost is shared)."""
        if self.shared:
            return self
        out = object.__new__(GibbsKernel)
        out.epsilon, out.log_k, out.k = self.epsilon, self.log_k[rows], self.k[rows]
        out._col_floor, out._row_floor = self._col_floor[rows], self._row_floor[rows]
        return out

    def lse_cols(self, u: torch.Tensor) -> torch.Tensor:
        """LSE_i(log K_ij + u_i), (B, m)."""
        return self._lse(u.to(torch.float64), self.k, self.log_k, self._col_floor, -2)

    def lse_rows(self, v: torch.Tensor) -> torch.Tensor:
        """LSE_j(log K_ij + v_j), (B, n)."""
        return self._lse(v.to(torch.float64), self.k.transpose(-2, -1), self.log_k.transpose(-2, -1), self._row_floor, -2)

    def _lse(self, w: torch.Tensor, k: torch.Tensor, log_k: torch.Tensor, floor: torch.Tensor, dim: int) -> torch.Tensor:
        s = w.amax(-1, keepdim=True).detach()
        scaled = torch.exp(w - s)
        sums = scaled @ k if k.ndim == 2 else (scaled.unsqueeze(-2) @ k).squeeze(-2)
        out = s + torch.log(sums)
        unsafe = floor + (w.amin(-1) - s.squeeze(-1)).detach() < -_SAFE_EXPONENT
        if bool(unsafe.any()):
            lk = log_k if log_k.ndim == 2 else log_k[unsafe]
            exact = torch.logsumexp(lk + w[unsafe].unsqueeze(-1), dim=dim)
            out = out.index_put((unsafe.nonzero().squeeze(1),), exact)
        return out


def update_v(kernel: GibbsKernel, u: torch.Tensor, log_b: torch.Tensor) -> torch.Tensor:
    """v = log b - LSE_i(log K_ij + u_i): the second marginal made exact."""
    return log_b - kernel.lse_cols(u)


def update_u(kernel: GibbsKernel, v: torch.Tensor, log_a: torch.Tensor) -> torch.Tensor:
    """u = log a - LSE_j(log K_ij + v_j): the first marginal made exact."""
    return log_a - kernel.lse_rows(v)


def sinkhorn_step(kernel: GibbsKernel, u: torch.Tensor, log_a: torch.Tensor,
                  log_b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One Sinkhorn iteration from u: (u+, v+), differentiable, float64."""
    v = update_v(kernel, u, log_b)
    return update_u(kernel, v, log_a), v


def marginal_error(kernel: GibbsKernel, u: torch.Tensor, v: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """||P' 1 - b||_2 per problem, POT's stopping test; the column sums of P are exp(v_j + LSE_i(log K_ij + u_i))."""
    return torch.linalg.vector_norm(torch.exp(v.to(torch.float64) + kernel.lse_cols(u)) - b, dim=-1)


def c_transform(f: torch.Tensor, kernel: GibbsKernel, log_b: torch.Tensor) -> torch.Tensor:
    """The best g for a given f: g_j = eps log b_j - eps LSE_i((f_i - C_ij) / eps) (one Sinkhorn half-step)."""
    eps = kernel.epsilon
    return eps * update_v(kernel, f / eps, log_b)


def dual_objective(f: torch.Tensor, a: torch.Tensor, b: torch.Tensor, kernel: GibbsKernel) -> torch.Tensor:
    """Meta OT's objective: the entropic dual at (f, g(f)) with g its c-transform, per problem, differentiable,
    in f's dtype.

    With g = c_transform(f) the exponential term sums to <b, 1> = 1 and cancels the dual's constant, leaving
    <f, a> + <g, b>. It is maximal (= the entropic OT value) exactly at Sinkhorn's fixed points, and invariant
    to f + c (g shifts by -c).
    """
    f64, a64, b64 = f.to(torch.float64), a.to(torch.float64), b.to(torch.float64)
    g = c_transform(f64, kernel, torch.log(b64))
    return ((f64 * a64).sum(-1) + (g * b64).sum(-1)).to(f.dtype)


@torch.no_grad()
def sinkhorn(a: torch.Tensor, b: torch.Tensor, cost: torch.Tensor | GibbsKernel, epsilon: float, tol: float = 1e-9,
             max_iterations: int = 1000, check_every: int = 10, u0: torch.Tensor | None = None,
             validate: bool = True) -> SinkhornResult:
    """Solve a batch of entropic OT problems with POT's log-domain Sinkhorn, in float64.

    ``a`` (B, n) and ``b`` (B, m) are probability vectors (a single pair may be 1-D; zero entries are allowed),
    ``cost`` is (n, m), shared, or (B, n, m), or a ``GibbsKernel`` built once for several calls; ``u0`` (B, n) is a
    warm start of the log scaling (f0 / eps).
    """
    if not (isinstance(epsilon, (int, float)) and math.isfinite(epsilon) and epsilon > 0):
        raise ValueError(f"epsilon={epsilon!r}: must be a finite number > 0")
    if not (isinstance(tol, (int, float)) and math.isfinite(tol) and tol > 0):
        raise ValueError(f"tol={tol!r}: must be a finite number > 0")
    if max_iterations < 1 or check_every < 1:
        raise ValueError(f"max_iterations={max_iterations}, check_every={check_every}: both must be >= 1")
    a = (a.unsqueeze(0) if a.ndim == 1 else a).to(torch.float64)
    b = (b.unsqueeze(0) if b.ndim == 1 else b).to(a.device, torch.float64)
    if isinstance(cost, GibbsKernel):
        kernel = cost
        if kernel.epsilon != epsilon:
            raise ValueError(f"epsilon={epsilon!r} differs from the kernel's ({kernel.epsilon!r})")
    else:
        if validate:
            check_cost(cost, a.shape, b.shape)
        kernel = GibbsKernel(cost.to(a.device), epsilon)
    if validate:
        check_measures(a, "a")
        check_measures(b, "b")
        check_cost(kernel.log_k, a.shape, b.shape)
    B = a.shape[0]
    u = torch.zeros_like(a) if u0 is None else _checked_start(u0, a)
    v = torch.zeros_like(b)
    iterations = torch.zeros(B, dtype=torch.long, device=a.device)
    error = torch.full((B,), math.inf, dtype=a.dtype, device=a.device)
    status = torch.full((B,), int(SinkhornStatus.MAX_ITERATIONS), dtype=torch.long, device=a.device)
    checks: list[torch.Tensor] = []

    active = torch.arange(B, device=a.device)
    ua, la, lb, ba, ka = u.clone(), torch.log(a), torch.log(b), b, kernel
    done = 0
    while active.numel() and done < max_iterations:
        # iterations up to and including the next check (POT checks after iteration ii with ii % k == 0)
        block = 1 if done == 0 else min(check_every, max_iterations - done)
        for _ in range(block):
            va = update_v(ka, ua, lb)
            ua = update_u(ka, va, la)
        done += block
        if (done - 1) % check_every:  # the budget ran out between checks: the last iterate, untested (as POT)
            u[active], v[active], iterations[active] = ua, va, done
            break
        err = marginal_error(ka, ua, va, ba)
        row = torch.full((B,), math.inf, dtype=a.dtype, device=a.device)
        row[active] = err
        checks.append(row)
        bad = ~torch.isfinite(err) | ~torch.isfinite(ua).all(-1)
        stop = (err < tol) | bad
        u[active], v[active], iterations[active], error[active] = ua, va, done, err
        if bool(stop.any()):
            finished = active[stop]
            status[finished] = torch.where(bad[stop], int(SinkhornStatus.DIVERGED), int(SinkhornStatus.CONVERGED))
            keep = ~stop
            active, ua, va, la, lb, ba = active[keep], ua[keep], va[keep], la[keep], lb[keep], ba[keep]
            ka = kernel.subset(active)
    errors = torch.stack(checks, 1) if checks else torch.full((B, 0), math.inf, dtype=a.dtype, device=a.device)
    return SinkhornResult(u, v, iterations, error, status, errors, check_every, epsilon)


def _checked_start(u0: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    u0 = u0.unsqueeze(0) if u0.ndim == 1 else u0
    if u0.shape != a.shape:
        raise ValueError(f"u0: the warm start must have the shape of a, {tuple(a.shape)}; got {tuple(u0.shape)}")
    if not torch.isfinite(u0).all():
        raise ValueError("u0: the warm start contains NaN or inf")
    return u0.to(a.device, a.dtype).clone()


def plan(result: SinkhornResult, cost: torch.Tensor) -> torch.Tensor:
    """The transport plans P_ij = exp(u_i - C_ij / eps + v_j), (B, n, m)."""
    log_k = -cost.to(result.u.device, result.u.dtype) / result.epsilon
    return torch.exp(log_k + result.u.unsqueeze(-1) + result.v.unsqueeze(-2))


def transport_cost(result: SinkhornResult, cost: torch.Tensor) -> torch.Tensor:
    """<C, P> per problem for the plan of ``result``."""
    return (plan(result, cost) * cost.to(result.u.device, result.u.dtype)).sum((-2, -1))
