"""SCS 3.x, batched in torch: many cone programs iterate together on one device.

This follows the splitting conic solver's algorithm (O'Donoghue et al.; the
3.x line with quadratic objectives) as its sources and docs describe it, so
that iteration counts can be compared with the real ``scs`` package with
acceleration off:

* the homogeneous self-dual embedding of  min 1/2 x'Px + c'x, Ax + s = b,
  s in K, solved by Douglas-Rachford splitting on the iterate v = (x, y, tau);
* Ruiz and l2 equilibration of [P A'; A 0] (row scaling constant on each
  cone), then b and c scaled by one factor sigma;
* the diagonal R (rho_x on x, 1/(1000 scale) on equality rows, 1/scale on the
  other rows, 10 on tau), the quasi-definite system [R_x + P, A'; A, -R_y]
  factorized once per problem and scale (dense batched Cholesky of its
  Schur complement), tau from the root of SCS's quadratic;
* the iterate kept at norm sqrt(n + m + 1), tau fixed at 1 in the first step;
* termination checked every 25 iterations on unscaled residuals (primal,
  dual, duality gap, eps_abs + eps_rel * scale) and the infeasibility and
  unboundedness certificates;
* the adaptive scale: every check accumulates log(primal / dual relative
  residual); at least 100 iterations after the last change, a geometric-mean
  factor outside [1/sqrt(10), sqrt(10)] rescales R, refactors, and maps v;
* an infeasibility or unboundedness certificate must hold at two consecutive
  checks (measured on scs 3.3.1: it reports them one check after they hold).

Not implemented: scs 3.3's per-row diagonal rescaling (``adaptive_diag_scale``,
on by default there). Compare with ``scs`` run with ``SCS_PACKAGE_AS_THIS_CORE``
(that off, and its Anderson acceleration off) for step-by-step agreement; the
benchmarks also report scs with its defaults.

Each problem keeps its own scale, status and iteration count; finished
problems are frozen by masks, there is no per-problem Python loop.
``SCSWork.step`` is the fixed-point map v -> v+ that learned accelerators act
on (``learned_optimizers.problems.fixed_point`` wraps it as a map family).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from enum import IntEnum

import numpy as np
import torch

from learned_optimizers.common.chunks import chunk_size, solve_in_chunks
from learned_optimizers.common.linalg import factor_reduced_kkt, limit_scaling, norm_inf, solve_factored
from learned_optimizers.common.settings import setting, validate
from learned_optimizers.common.timing import synchronize
from learned_optimizers.conic.programs import ConeProgramBatch

# SCS constants (glbopts.h, normalization code)
NUM_RUIZ_PASSES, NUM_L2_PASSES = 25, 1
TAU_FACTOR = 10.0
ZERO_CONE_R_FACTOR = 1000.0  # R_y on equality rows is 1 / (1000 scale)
CONVERGED_INTERVAL = 25
RESCALING_MIN_ITERS = 100
MIN_SCALE_VALUE, MAX_SCALE_VALUE = 1e-6, 1e6
FEASIBLE_ITERS = 1
EPS_TOL = 1e-18


class SCSStatus(IntEnum):
    """SCS's ``status_val`` values; RUNNING is SCS's 'unfinished'."""

    SOLVED = 1
    SOLVED_INACCURATE = 2
    RUNNING = 0
    UNBOUNDED = -1
    INFEASIBLE = -2
    UNBOUNDED_INACCURATE = -6
    INFEASIBLE_INACCURATE = -7

    @property
    def label(self) -> str:
        """SCS's ``info['status']`` text."""
        return {1: "solved", 2: "solved (inaccurate - reached max_iters)", 0: "unfinished", -1: "unbounded",
                -2: "infeasible", -6: "unbounded (inaccurate - reached max_iters)",
                -7: "infeasible (inaccurate - reached max_iters)"}[int(self)]


@dataclass(frozen=True)
class SCSSettings:
    """SCS's settings with its defaults (names as in the ``scs`` package)."""

    scale: float = setting(0.1, gt=0.0, doc="initial dual scale factor")
    adaptive_scale: bool = setting(True, choices=(True, False), doc="update the scale from the residuals")
    alpha: float = setting(1.5, gt=0.0, lt=2.0, doc="Douglas-Rachford relaxation")
    rho_x: float = setting(1e-6, gt=0.0, doc="x-block of the diagonal R")
    eps_abs: float = setting(1e-4, ge=0.0, doc="absolute tolerance")
    eps_rel: float = setting(1e-4, ge=0.0, doc="relative tolerance")
    eps_infeas: float = setting(1e-7, ge=0.0, doc="infeasibility certificate tolerance")
    max_iters: int = setting(100_000, ge=1, doc="iteration limit")
    normalize: bool = setting(True, choices=(True, False), doc="equilibrate the data")

    def __post_init__(self) -> None:
        validate(self)


def _safediv(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """SCS's SAFEDIV_POS: x / y with y floored at 1e-18 (y is a nonnegative quantity)."""
    return x / torch.where(y < EPS_TOL, torch.full_like(y, EPS_TOL), y)


def solved_test(res_pri, res_dual, gap, tau, b_norm, s_norm, ax_norm, c_norm, px_norm, aty_norm, xt_p_x, ctx, bty,
                eps_abs: float, eps_rel: float):
    """SCS's 'solved' test from the unscaled quantities (inf-norms; s, ax, px, aty not divided by tau).

    Works on tensors or numpy values alike, so a benchmark can apply it to the
    real package's per-iteration log.
    """
    grl = _maximum(_maximum(abs(xt_p_x), abs(ctx)), abs(bty))
    prl = _maximum(_maximum(b_norm * tau, s_norm), ax_norm) / tau
    drl = _maximum(_maximum(c_norm * tau, px_norm), aty_norm) / tau
    return (tau > 0) & (res_pri < eps_abs + eps_rel * prl) & (res_dual < eps_abs + eps_rel * drl) \
        & (gap < eps_abs + eps_rel * grl)


def _maximum(a, b):
    return torch.maximum(a, b) if isinstance(a, torch.Tensor) else np.maximum(a, b)


@dataclass
class Residuals:
    """Unscaled residual quantities of one check (SCS's ``ScsResiduals``), batched."""

    tau: torch.Tensor
    kap: torch.Tensor
    x: torch.Tensor  # unscaled, tau not divided out
    y: torch.Tensor
    s: torch.Tensor
    ax: torch.Tensor
    ax_s: torch.Tensor
    ax_s_btau: torch.Tensor
    px: torch.Tensor
    aty: torch.Tensor
    px_aty_ctau: torch.Tensor
    bty_tau: torch.Tensor
    ctx_tau: torch.Tensor
    xt_p_x: torch.Tensor
    ctx: torch.Tensor
    bty: torch.Tensor
    gap: torch.Tensor
    res_pri: torch.Tensor
    res_dual: torch.Tensor
    res_infeas: torch.Tensor
    res_unbdd_a: torch.Tensor
    res_unbdd_p: torch.Tensor

    @property
    def pobj(self) -> torch.Tensor:
        return self.xt_p_x / 2 + self.ctx

    @property
    def dobj(self) -> torch.Tensor:
        return -self.xt_p_x / 2 - self.bty


@dataclass
class StepOutput:
    v: torch.Tensor  # the next iterate
    u: torch.Tensor  # after the cone projection: (x, y, tau)
    u_t: torch.Tensor  # after the linear system
    rsk: torch.Tensor  # (r, s, kappa)


class SCSWork:
    """Scaled data, the diagonal R and the factorization of a batch of cone programs."""

    def __init__(self, programs: ConeProgramBatch, settings: SCSSettings | None = None,
                 scale: torch.Tensor | float | None = None) -> None:
        self.settings = settings = settings if settings is not None else SCSSettings()
        self.programs = programs
        self.cone = programs.cone
        A, b, c, P = programs.A, programs.b, programs.c, programs.P
        self.B, self.m, self.n = A.shape
        self.dtype, self.device = A.dtype, A.device
        if settings.normalize:
            D, E, sigma = self._equilibrate(A, P, b, c)
        else:
            D = torch.ones_like(b)
            E = torch.ones_like(c)
            sigma = torch.ones(self.B, dtype=self.dtype, device=self.device)
        self.D, self.E, self.sigma = D, E, sigma
        self.A = D.unsqueeze(2) * A * E.unsqueeze(1)
        self._At = self.A.transpose(1, 2).contiguous()
        self.P = None if P is None else E.unsqueeze(2) * P * E.unsqueeze(1)
        self.b = sigma.unsqueeze(1) * D * b
        self.c = sigma.unsqueeze(1) * E * c
        initial = settings.scale if scale is None else scale
        self.scale = torch.as_tensor(initial, dtype=self.dtype, device=self.device).expand(self.B).clone()
        self._zero_rows = torch.arange(self.m, device=self.device) < self.cone.z
        self.factor(torch.ones(self.B, dtype=torch.bool, device=self.device))

    # ------------------------------------------------------------ setup
    def _equilibrate(self, A: torch.Tensor, P: torch.Tensor | None, b: torch.Tensor,
                     c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Row scaling D (constant on each cone) and column scaling E of the embedding [0 A' c; -A 0 b; -c' -b' 0].

        25 Ruiz (max-norm) passes and one root-mean-square pass over the
        stored entries; b and c take part through running scaled copies (with
        their own scalar for the tau row and column), which are then dropped.
        """
        B, m, n = A.shape
        D = torch.ones(B, m, dtype=A.dtype, device=A.device)
        E = torch.ones(B, n, dtype=A.dtype, device=A.device)
        tau_scale = torch.ones(B, dtype=A.dtype, device=A.device)
        # the passes read only magnitudes, and scaling by positive factors commutes with abs exactly in floating
        # point, so they run on |A| and |P| in place (a third of the passes over the data)
        A, P, bt, ct = A.abs(), None if P is None else P.abs(), b.clone(), c.clone()
        row_count = (A != 0).sum(2).to(A.dtype) + 1.0  # stored entries of each row of [A b]
        col_count = (A != 0).sum(1).to(A.dtype) + 1.0
        if P is not None:
            col_count = col_count + (P != 0).sum(1).to(A.dtype)
        for k in range(NUM_RUIZ_PASSES + NUM_L2_PASSES):
            if k < NUM_RUIZ_PASSES:
                rows = torch.maximum(A.amax(dim=2), bt.abs())
                rows = self._cone_aggregate(rows, "max")
                cols = torch.maximum(A.amax(dim=1), ct.abs())
                if P is not None:
                    cols = torch.maximum(cols, P.amax(dim=1))
                Dt = 1.0 / limit_scaling(rows).sqrt()
                Et = 1.0 / limit_scaling(cols).sqrt()
                st = 1.0 / limit_scaling(torch.maximum(norm_inf(bt), norm_inf(ct))).sqrt()
            else:
                rows = ((A.square().sum(2) + bt.square()) / row_count).sqrt()
                rows = self._cone_aggregate(rows, "mean")
                cols = A.square().sum(1) + ct.square()
                if P is not None:
                    cols = cols + P.square().sum(1)
                cols = (cols / col_count).sqrt()
                Dt = 1.0 / limit_scaling(rows).sqrt()
                Et = 1.0 / limit_scaling(cols).sqrt()
                tau_norm = torch.maximum(bt.norm(dim=1) / math.sqrt(m), ct.norm(dim=1) / math.sqrt(n))
                st = 1.0 / limit_scaling(tau_norm).sqrt()
            A.mul_(Dt.unsqueeze(2)).mul_(Et.unsqueeze(1))
            if P is not None:
                P.mul_(Et.unsqueeze(2)).mul_(Et.unsqueeze(1))
            bt = bt * Dt * st.unsqueeze(1)
            ct = ct * Et * st.unsqueeze(1)
            D, E, tau_scale = D * Dt, E * Et, tau_scale * st
        return D, E, tau_scale

    def _cone_aggregate(self, rows: torch.Tensor, how: str) -> torch.Tensor:
        """Make a row quantity constant on each second-order cone (max or mean over its rows)."""
        out = rows.clone()
        start = self.cone.z + self.cone.l
        for size in self.cone.q:
            block = rows[:, start: start + size]
            value = block.amax(1, keepdim=True) if how == "max" else block.mean(1, keepdim=True)
            out[:, start: start + size] = value.expand(-1, size)
            start += size
        return out

    def r_y(self, scale: torch.Tensor | None = None) -> torch.Tensor:
        scale = self.scale if scale is None else scale
        inv = 1.0 / scale.unsqueeze(1)
        return torch.where(self._zero_rows, inv / ZERO_CONE_R_FACTOR, inv).expand(self.B, self.m)

    def diag_r(self) -> torch.Tensor:
        """(B, n + m + 1): rho_x, R_y, TAU_FACTOR."""
        r_x = torch.full((self.B, self.n), self.settings.rho_x, dtype=self.dtype, device=self.device)
        r_tau = torch.full((self.B, 1), TAU_FACTOR, dtype=self.dtype, device=self.device)
        return torch.cat([r_x, self.r_y(), r_tau], dim=1)

    def factor(self, which: torch.Tensor) -> None:
        """(Re)factor the problems in ``which`` at their current scale and recompute g = K^-1 (c, -b)."""
        r_y = self.r_y()
        L, info = factor_reduced_kkt(self.P, self.A, self.settings.rho_x, 1.0 / r_y)  # the Schur complement on x
        if bool((info[which] != 0).any()):
            bad = torch.nonzero((info != 0) & which).flatten().tolist()
            raise ValueError(f"P is not positive semidefinite in programs {bad}: SCS's linear system cannot be factored")
        if not hasattr(self, "_chol"):
            self._chol, self._r_y = L, r_y
        else:
            self._chol = torch.where(which.view(-1, 1, 1), L, self._chol)
            self._r_y = torch.where(which.unsqueeze(1), r_y, self._r_y)
        self.g = torch.cat(self.solve_kkt(self.c, -self.b), dim=1)

    # the products as row vectors times a matrix, (z' M')': MKL's batched product of a (1, k) row with a (k, l)
    # matrix took a quarter of the time of the (l, k) matrix with a (k, 1) column (64 dense 100 x 100 programs, CPU)
    def a_mv(self, x: torch.Tensor) -> torch.Tensor:
        """A x, (B, m), on the scaled data."""
        return torch.bmm(x.unsqueeze(1), self._At).squeeze(1)

    def at_mv(self, y: torch.Tensor) -> torch.Tensor:
        """A' y, (B, n), on the scaled data."""
        return torch.bmm(y.unsqueeze(1), self.A).squeeze(1)

    def p_mv(self, x: torch.Tensor) -> torch.Tensor:
        """P x, (B, n) (P is symmetric); zeros for a linear program."""
        return torch.zeros_like(x) if self.P is None else torch.bmm(x.unsqueeze(1), self.P).squeeze(1)

    def solve_kkt(self, r_x: torch.Tensor, r_y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Solve [R_x + P, A'; A, -R_y] (x, y) = (r_x, r_y) by the Schur complement on x."""
        rhs = r_x + self.at_mv(r_y / self._r_y)
        x = solve_factored(self._chol, rhs)
        y = (self.a_mv(x) - r_y) / self._r_y
        return x, y

    def cold_start(self) -> torch.Tensor:
        """SCS's cold start v = (0, 0, 1)."""
        v = torch.zeros(self.B, self.n + self.m + 1, dtype=self.dtype, device=self.device)
        v[:, -1] = 1.0
        return v

    # ------------------------------------------------------------ the iteration
    def _root_plus(self, p: torch.Tensor, v: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
        """tau from the positive root of SCS's quadratic (its ``root_plus``)."""
        g, eta, r_tau = self.g, v[:, -1], r[:, -1]
        r, mu = r[:, :-1], v[:, :-1]
        a = r_tau + (g * r * g).sum(1)
        b = (mu * r * g).sum(1) - 2 * (p * r * g).sum(1) - eta * r_tau
        c = (p * r * p).sum(1) - (p * r * mu).sum(1)
        return (-b + (b * b - 4 * a * c).clamp(min=0.0).sqrt()) / (2 * a)

    def step(self, v: torch.Tensor, first: bool | torch.Tensor = False, normalize_iterate: bool = True) -> StepOutput:
        """One SCS iteration from v (B, n + m + 1): the map of the fixed-point view.

        ``first`` marks SCS's first iteration (tau fixed at 1, iterate not
        rescaled); it may be a (B,) mask. Differentiable in v.
        """
        n, m = self.n, self.m
        first = torch.as_tensor(first, device=self.device).expand(self.B)
        if normalize_iterate:
            norm = v.norm(dim=1, keepdim=True)
            rescaled = v * (math.sqrt(n + m + 1) / norm.clamp(min=torch.finfo(v.dtype).tiny))
            v = torch.where(first.unsqueeze(1), v, rescaled)
        r = self.diag_r()
        px, py = self.solve_kkt(v[:, :n] * r[:, :n], -v[:, n:-1] * r[:, n:-1])
        p = torch.cat([px, py], dim=1)
        tau_t = torch.where(first, torch.ones_like(v[:, -1]), self._root_plus(p, v, r))
        u_t = torch.cat([p - tau_t.unsqueeze(1) * self.g, tau_t.unsqueeze(1)], dim=1)
        w = 2 * u_t - v
        y = self.cone.project_dual(w[:, n:-1])
        tau = torch.where(first, torch.ones_like(tau_t), w[:, -1].clamp(min=0.0))
        u = torch.cat([w[:, :n], y, tau.unsqueeze(1)], dim=1)
        rsk = (v + u - 2 * u_t) * r
        v_next = v + self.settings.alpha * (u - u_t)
        return StepOutput(v_next, u, u_t, rsk)

    # ------------------------------------------------------------ residuals and termination
    def residuals(self, u: torch.Tensor, rsk: torch.Tensor) -> Residuals:
        """SCS's unscaled residuals of the point (u, rsk)."""
        n, m = self.n, self.m
        x, y, s = u[:, :n], u[:, n:n + m], rsk[:, n:n + m]
        tau, kap = u[:, -1].abs(), rsk[:, -1].abs()
        ax = self.a_mv(x)
        ax_s = ax + s
        ax_s_btau = ax_s - self.b * tau.unsqueeze(1)
        px = self.p_mv(x)
        xt_p_x_tau = (px * x).sum(1)
        aty = self.at_mv(y)
        pac = px + aty + self.c * tau.unsqueeze(1)
        bty_tau, ctx_tau = (y * self.b).sum(1), (x * self.c).sum(1)
        # unscale (identity when not normalized)
        sig = self.sigma.unsqueeze(1)
        pd = self.sigma * self.sigma
        primal = lambda z: z / (self.D * sig)  # noqa: E731
        dual = lambda z: z / (self.E * sig)  # noqa: E731
        kap, bty_tau, ctx_tau, xt_p_x_tau = kap / pd, bty_tau / pd, ctx_tau / pd, xt_p_x_tau / pd
        ax, ax_s, ax_s_btau = primal(ax), primal(ax_s), primal(ax_s_btau)
        aty, px, pac = dual(aty), dual(px), dual(pac)
        x_orig, y_orig, s_orig = x * self.E / sig, y * self.D / sig, s / (self.D * sig)
        bty, ctx = _safediv(bty_tau, tau), _safediv(ctx_tau, tau)
        xt_p_x = _safediv(xt_p_x_tau, tau * tau)
        nan = torch.full_like(tau, math.nan)
        res_unbdd_a = torch.where(ctx_tau < 0, _safediv(norm_inf(ax_s), -ctx_tau), nan)
        res_unbdd_p = torch.where(ctx_tau < 0, _safediv(norm_inf(px), -ctx_tau), nan)
        res_infeas = torch.where(bty_tau < 0, _safediv(norm_inf(aty), -bty_tau), nan)
        return Residuals(tau, kap, x_orig, y_orig, s_orig, ax, ax_s, ax_s_btau, px, aty, pac, bty_tau, ctx_tau,
                         xt_p_x, ctx, bty, (xt_p_x + ctx + bty).abs(), _safediv(norm_inf(ax_s_btau), tau),
                         _safediv(norm_inf(pac), tau), res_infeas, res_unbdd_a, res_unbdd_p)

    def check(self, r: Residuals, eps_abs: float | None = None, eps_rel: float | None = None,
              eps_infeas: float | None = None) -> torch.Tensor:
        """SCS's termination test: a status per problem (RUNNING where none holds)."""
        s = self.settings
        eps_abs = s.eps_abs if eps_abs is None else eps_abs
        eps_rel = s.eps_rel if eps_rel is None else eps_rel
        eps_infeas = s.eps_infeas if eps_infeas is None else eps_infeas
        tau = r.tau
        solved = solved_test(r.res_pri, r.res_dual, r.gap, tau, norm_inf(self.programs.b), norm_inf(r.s), norm_inf(r.ax),
                             norm_inf(self.programs.c), norm_inf(r.px), norm_inf(r.aty), r.xt_p_x, r.ctx, r.bty, eps_abs, eps_rel)
        unbounded = (r.res_unbdd_a < eps_infeas) & (r.res_unbdd_p < eps_infeas)
        infeasible = r.res_infeas < eps_infeas
        status = torch.full_like(tau, int(SCSStatus.RUNNING), dtype=torch.long)
        status = torch.where(infeasible, int(SCSStatus.INFEASIBLE), status)
        status = torch.where(unbounded, int(SCSStatus.UNBOUNDED), status)
        return torch.where(solved, int(SCSStatus.SOLVED), status)

    def relative_residual_log_ratio(self, r: Residuals) -> torch.Tensor:
        """log(relative primal residual) - log(relative dual residual): the scale heuristic's signal."""
        pri = _safediv(norm_inf(r.ax_s_btau), torch.maximum(torch.maximum(norm_inf(r.ax), norm_inf(r.s)),
                                                        norm_inf(self.programs.b) * r.tau))
        dua = _safediv(norm_inf(r.px_aty_ctau), torch.maximum(torch.maximum(norm_inf(r.px), norm_inf(r.aty)),
                                                          norm_inf(self.programs.c) * r.tau))
        return torch.log(pri) - torch.log(dua)


@dataclass
class SCSResult:
    """Per-problem outcome of ``solve_cone_programs`` (unscaled, like ``scs``'s output)."""

    x: torch.Tensor
    y: torch.Tensor
    s: torch.Tensor
    status: torch.Tensor  # SCSStatus values
    iterations: torch.Tensor  # SCS's info['iter']
    pobj: torch.Tensor
    dobj: torch.Tensor
    scale: torch.Tensor
    scale_updates: torch.Tensor
    solve_time: float

    def labels(self) -> list[str]:
        return [SCSStatus(int(s)).label for s in self.status]


def _finalize(work: SCSWork, r: Residuals, status: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """The returned x, y, s: divided by tau when solved, certificates when infeasible/unbounded."""
    nan = torch.full_like(r.x, math.nan)
    nan_m = torch.full_like(r.y, math.nan)
    inv_tau = _safediv(torch.ones_like(r.tau), r.tau).unsqueeze(1)
    solved = ((status == SCSStatus.SOLVED) | (status == SCSStatus.SOLVED_INACCURATE)).unsqueeze(1)
    infeasible = ((status == SCSStatus.INFEASIBLE) | (status == SCSStatus.INFEASIBLE_INACCURATE)).unsqueeze(1)
    y_cert = r.y * (-1.0 / r.bty_tau).unsqueeze(1)
    x_cert, s_cert = r.x * (-1.0 / r.ctx_tau).unsqueeze(1), r.s * (-1.0 / r.ctx_tau).unsqueeze(1)
    x = torch.where(solved, r.x * inv_tau, torch.where(infeasible, nan, x_cert))
    y = torch.where(solved, r.y * inv_tau, torch.where(infeasible, y_cert, nan_m))
    s = torch.where(solved, r.s * inv_tau, torch.where(infeasible, nan_m, s_cert))
    pobj = torch.where(solved[:, 0], r.pobj, torch.where(infeasible[:, 0], math.inf, -math.inf))
    dobj = torch.where(solved[:, 0], r.dobj, torch.where(infeasible[:, 0], math.inf, -math.inf))
    return x, y, s, pobj, dobj


#: the real ``scs`` package's settings under which it runs this core's algorithm (no Anderson acceleration, one
#: scalar scale): the reproduction tests, the bench and the speed rows compare with scs so
SCS_PACKAGE_AS_THIS_CORE = {"acceleration_lookback": 0, "adaptive_diag_scale": False}

#: on a CPU, programs solved together at most (as the QP core's ``CPU_CHUNK``): one chunk's dense data then stays in
#: the cache (measured on Lasso cone programs, n = 100, 2 cores: 10.1 ms per program in one batch of 4096; in
#: chunks of 256 / 128 / 64 / 32, 3.2 / 2.5-2.7 / 2.25 / 2.3 ms)
CPU_CHUNK = 64


@torch.no_grad()
def solve_cone_programs(programs: ConeProgramBatch, settings: SCSSettings | None = None,
                        chunk: int | None = None) -> SCSResult:
    """Run SCS (acceleration off) on every program of the batch to its own termination, ``chunk`` programs at a
    time (default ``CPU_CHUNK`` on a CPU, all at once on a GPU)."""
    settings = settings if settings is not None else SCSSettings()
    chunk = chunk_size(chunk, len(programs), programs.A.device, CPU_CHUNK)
    if len(programs) <= chunk:
        return _solve_batch(programs, settings)
    return solve_in_chunks(len(programs), chunk, lambda i, j: _solve_batch(programs.rows(i, j), settings),
                           summed=("solve_time",))


def _solve_batch(programs: ConeProgramBatch, settings: SCSSettings) -> SCSResult:
    start_time = time.perf_counter()
    work = SCSWork(programs, settings)
    B = work.B
    dev = work.device
    v = work.cold_start()
    status = torch.zeros(B, dtype=torch.long, device=dev)
    iterations = torch.full((B,), settings.max_iters, dtype=torch.long, device=dev)
    running = torch.ones(B, dtype=torch.bool, device=dev)
    last_update = torch.zeros(B, dtype=torch.long, device=dev)
    log_sum = torch.zeros(B, dtype=work.dtype, device=dev)
    log_count = torch.zeros(B, dtype=work.dtype, device=dev)
    scale_updates = torch.zeros(B, dtype=torch.long, device=dev)
    final_u, final_rsk = torch.zeros_like(v), torch.zeros_like(v)
    previous = torch.zeros_like(status)
    out = None
    for i in range(settings.max_iters):
        out = work.step(v, first=i < FEASIBLE_ITERS)
        new_v = out.v
        if i % CONVERGED_INTERVAL == 0:
            res = work.residuals(out.u, out.rsk)
            found = work.check(res) * running
            # a certificate must hold at two consecutive checks (as scs 3.3 does); solved ends at once
            certificate = (found == SCSStatus.INFEASIBLE) | (found == SCSStatus.UNBOUNDED)
            confirmed = (found == SCSStatus.SOLVED) | (certificate & (found == previous))
            previous = found
            newly = confirmed & running
            status = torch.where(newly, found, status)
            iterations = torch.where(newly, torch.full_like(iterations, i), iterations)
            final_u = torch.where(newly.unsqueeze(1), out.u, final_u)
            final_rsk = torch.where(newly.unsqueeze(1), out.rsk, final_rsk)
            running = running & ~newly
            if not bool(running.any()):
                break
            if settings.adaptive_scale:
                new_v = _update_scale(work, res, out, new_v, i, running, last_update, log_sum, log_count,
                                      scale_updates)
        v = torch.where(running.unsqueeze(1), new_v, v)
    if bool(running.any()):
        # max_iters: SCS's best guess from the last iterate
        res = work.residuals(out.u, out.rsk)
        guess = torch.where(res.tau > res.kap, int(SCSStatus.SOLVED_INACCURATE),
                            torch.where(res.bty_tau < res.ctx_tau, int(SCSStatus.INFEASIBLE_INACCURATE),
                                        int(SCSStatus.UNBOUNDED_INACCURATE)))
        status = torch.where(running, guess, status)
        final_u = torch.where(running.unsqueeze(1), out.u, final_u)
        final_rsk = torch.where(running.unsqueeze(1), out.rsk, final_rsk)
    res = work.residuals(final_u, final_rsk)
    x, y, s, pobj, dobj = _finalize(work, res, status)
    synchronize(dev)
    return SCSResult(x, y, s, status, iterations, pobj, dobj, work.scale.clone(), scale_updates,
                     time.perf_counter() - start_time)


def _update_scale(work: SCSWork, res: Residuals, out: StepOutput, new_v: torch.Tensor, i: int,
                  running: torch.Tensor, last_update: torch.Tensor, log_sum: torch.Tensor,
                  log_count: torch.Tensor, scale_updates: torch.Tensor) -> torch.Tensor:
    """SCS's scale heuristic (in place on the counters); returns the iterate mapped to the new R."""
    log_sum += torch.where(running, work.relative_residual_log_ratio(res), torch.zeros_like(log_sum))
    log_count += running.to(log_count.dtype)
    factor = torch.exp(log_sum / log_count.clamp(min=1)).sqrt()
    new_scale = (work.scale * factor).clamp(MIN_SCALE_VALUE, MAX_SCALE_VALUE)
    update = running & (i - last_update >= RESCALING_MIN_ITERS) & (new_scale != work.scale) \
        & ((factor > math.sqrt(10.0)) | (factor < 1.0 / math.sqrt(10.0)))
    if not bool(update.any()):
        return new_v
    scale_updates += update.long()
    log_sum.masked_fill_(update, 0.0)
    log_count.masked_fill_(update, 0.0)
    last_update.masked_fill_(update, i)
    work.scale = torch.where(update, new_scale, work.scale)
    work.factor(update)
    # keep r, s, kappa: v_y = rsk_y / R_y(new) + 2 u_t - u on the updated problems
    n, m = work.n, work.m
    r_y = work.r_y()
    mapped = new_v.clone()
    mapped[:, n:n + m] = out.rsk[:, n:n + m] / r_y + 2 * out.u_t[:, n:n + m] - out.u[:, n:n + m]
    mapped[:, n:n + m] += work.settings.alpha * (out.u - out.u_t)[:, n:n + m]  # the dual step follows the remap
    return torch.where(update.unsqueeze(1), mapped, new_v)
