"""OSQP's ADMM, batched in torch: many QPs advance together on one device.

This follows the OSQP 1.x C sources step for step (setup, Ruiz scaling, the
vector rho rule, the ADMM updates, residuals, the duality-gap test,
infeasibility certificates, the adaptive-rho rule and the order in which
termination and rho adaptation happen), so that iteration counts can be
compared with the real ``osqp`` package. Each problem keeps its own status and
iteration count; a finished problem is frozen by a mask while the others go on.
There is no per-problem Python loop on the iteration path.

Two ways in:
* ``OSQPBatch(...).solve()`` runs OSQP's algorithm to termination;
* ``advance(k, rho_vec=...)`` runs k iterations with a given step size per
  constraint and ``state()`` reads the iterates: the RL environment's handle.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from enum import IntEnum
from typing import Callable, Literal

import torch

from learned_optimizers.common.chunks import chunk_size, solve_in_chunks
from learned_optimizers.common.linalg import (
    BatchMatrix,
    DenseCholesky,
    LinearSystem,
    SparseLDL,
    limit_scaling,
    norm_inf,
)
from learned_optimizers.common.settings import setting, validate
from learned_optimizers.common.timing import synchronize
from learned_optimizers.qp.problems import QP, QPBatch

# OSQP 1.x constants (osqp_api_constants.h)
OSQP_INFTY = 1e30
INFINITE_BOUND = OSQP_INFTY * 1e-4  # after scaling, |bound| above this counts as no bound
RHO_MIN, RHO_MAX = 1e-6, 1e6
RHO_TOL = 1e-4  # u - l below this makes a row an equality
RHO_EQ_OVER_RHO_INEQ = 1e3
DIVISION_TOL = 1.0 / OSQP_INFTY
ZERO_DEADZONE = 1e-15


class Status(IntEnum):
    """OSQP's status values (``info.status_val``); RUNNING is OSQP's 'unsolved'."""

    SOLVED = 1
    SOLVED_INACCURATE = 2
    PRIMAL_INFEASIBLE = 3
    PRIMAL_INFEASIBLE_INACCURATE = 4
    DUAL_INFEASIBLE = 5
    DUAL_INFEASIBLE_INACCURATE = 6
    MAX_ITER_REACHED = 7
    NON_CONVEX = 9
    RUNNING = 11

    @property
    def label(self) -> str:
        """The same string as ``osqp``'s ``info.status``."""
        return {
            1: "solved", 2: "solved inaccurate", 3: "primal infeasible", 4: "primal infeasible inaccurate",
            5: "dual infeasible", 6: "dual infeasible inaccurate", 7: "maximum iterations reached",
            9: "problem non convex", 11: "unsolved",
        }[int(self)]


@dataclass(frozen=True)
class OSQPSettings:
    """OSQP 1.x defaults. ``adaptive_rho`` is the fixed-interval rule (OSQP's mode 1)."""

    rho: float = setting(0.1, gt=0.0)
    sigma: float = setting(1e-6, gt=0.0)
    alpha: float = setting(1.6, gt=0.0, lt=2.0)
    eps_abs: float = setting(1e-3, ge=0.0)
    eps_rel: float = setting(1e-3, ge=0.0)
    eps_prim_inf: float = setting(1e-4, ge=0.0)
    eps_dual_inf: float = setting(1e-4, ge=0.0)
    max_iter: int = setting(4000, ge=1)
    check_termination: int = setting(25, ge=1, doc="iterations between termination checks")
    adaptive_rho: bool = True
    adaptive_rho_interval: int = setting(50, ge=1)
    adaptive_rho_tolerance: float = setting(5.0, ge=1.0)
    scaling: int = setting(10, ge=0, doc="Ruiz equilibration passes")
    check_dualgap: bool = True

    def __post_init__(self) -> None:
        validate(self)

    def osqp_kwargs(self) -> dict:
        """The same settings for the real ``osqp`` package."""
        return dict(
            rho=self.rho, sigma=self.sigma, alpha=self.alpha, eps_abs=self.eps_abs, eps_rel=self.eps_rel,
            eps_prim_inf=self.eps_prim_inf, eps_dual_inf=self.eps_dual_inf, max_iter=self.max_iter,
            check_termination=self.check_termination, adaptive_rho=1 if self.adaptive_rho else 0,
            adaptive_rho_interval=self.adaptive_rho_interval, adaptive_rho_tolerance=self.adaptive_rho_tolerance,
            scaling=self.scaling, check_dualgap=1 if self.check_dualgap else 0, polishing=False, verbose=False,
        )


@dataclass
class QPSolution:
    """Per-problem results, unscaled. Padded entries of x and y are zero."""

    x: torch.Tensor
    y: torch.Tensor
    status: torch.Tensor  # (B,) Status values
    iterations: torch.Tensor  # (B,)
    objective: torch.Tensor  # (B,) 0.5 x'Px + q'x (nan unless solved)
    prim_res: torch.Tensor
    dual_res: torch.Tensor
    rho_updates: torch.Tensor
    setup_seconds: float
    solve_seconds: float

    def status_labels(self) -> list[str]:
        return [Status(int(s)).label for s in self.status.tolist()]


class OSQPBatch:
    """OSQP for a batch of QPs. ``backend``: 'dense' (batched Cholesky) or 'sparse' (QDLDL of the KKT matrix)."""

    #: per-problem tensors (first dimension = batch): what compaction and slot replacement move
    PER_PROBLEM = ("x", "z", "y", "delta_x", "delta_y", "rho", "rho_vec", "status", "iterations", "rho_updates",
                   "q", "l", "u", "D", "E", "c", "Dinv", "Einv", "cinv", "var_mask", "con_mask", "loose",
                   "equality", "index")

    def __init__(
        self,
        problems: list[QP] | QPBatch,
        settings: OSQPSettings | None = None,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float64,
        backend: Literal["dense", "sparse"] = "dense",
    ) -> None:
        t0 = time.perf_counter()
        self.settings = s = settings or OSQPSettings()
        if backend not in ("dense", "sparse"):
            raise ValueError(f"backend={backend!r}; allowed: dense, sparse")
        if isinstance(problems, QPBatch):
            batch = problems
        else:
            batch = QPBatch.from_qps(problems, device, dtype)
        P, A = batch.P, batch.A
        q, l, u, self.var_mask, self.con_mask = batch.q, batch.l, batch.u, batch.var_mask, batch.con_mask
        self.names = batch.names
        self.B, self.n, self.m = q.shape[0], q.shape[1], l.shape[1]
        self.device, self.dtype = q.device, q.dtype
        # bounds: infinities become +/- OSQP_INFTY as in OSQP's setup
        l = l.clamp(-OSQP_INFTY, OSQP_INFTY)
        u = u.clamp(-OSQP_INFTY, OSQP_INFTY)
        self._scale(P, q, A, l, u)
        self.linsys: LinearSystem = (DenseCholesky if backend == "dense" else SparseLDL)(self.P, self.A, s.sigma)
        B, n, m = self.B, self.n, self.m
        z = lambda *shape: torch.zeros(*shape, dtype=self.dtype, device=self.device)  # noqa: E731
        self.x, self.z, self.y = z(B, n), z(B, m), z(B, m)
        self.delta_x, self.delta_y = z(B, n), z(B, m)
        self.rho = torch.full((B,), s.rho, dtype=self.dtype, device=self.device).clamp(RHO_MIN, RHO_MAX)
        self.status = torch.full((B,), int(Status.RUNNING), dtype=torch.long, device=self.device)
        self.iterations = torch.zeros(B, dtype=torch.long, device=self.device)
        self.rho_updates = torch.zeros(B, dtype=torch.long, device=self.device)
        self.k = 0  # iterations run so far (all running problems move in lock step)
        self.info: dict[str, torch.Tensor] = {}
        # solve() drops finished problems from the working set; their results wait here
        self.index = torch.arange(B, device=self.device)  # global id of each working row
        self.total = B
        self._results: dict[str, torch.Tensor] | None = None
        loose = (self.l < -INFINITE_BOUND) & (self.u > INFINITE_BOUND)
        self.loose, self.equality = loose, ~loose & (self.u - self.l < RHO_TOL)
        self.rho_vec = self._rho_vector(self.rho)
        ok = self.linsys.factor(self.rho_vec, torch.ones(B, dtype=torch.bool, device=self.device))
        self.status[~ok] = int(Status.NON_CONVEX)
        self.setup_seconds = time.perf_counter() - t0

    # ------------------------------------------------------------ setup
    def _scale(self, P: BatchMatrix, q: torch.Tensor, A: BatchMatrix, l: torch.Tensor, u: torch.Tensor) -> None:
        """Ruiz equilibration of the KKT matrix and cost scaling, as OSQP's scale_data."""
        B = q.shape[0]
        D = torch.ones_like(q)
        E = torch.ones_like(l)
        c = torch.ones(B, dtype=q.dtype, device=q.device)
        n_real = self.var_mask.sum(dim=1).clamp(min=1).to(q.dtype)
        # OSQP stores the upper triangle of P and takes its column norms without
        # mirroring (csc_col_norm_inf in OSQP 1.x): do the same to get its scaling.
        P_cols = P.col_norm_inf(upper_only=True) if self.settings.scaling else None
        for _ in range(self.settings.scaling):
            d = torch.maximum(P_cols, A.col_norm_inf())
            e = A.row_norm_inf()
            d = 1.0 / torch.sqrt(limit_scaling(d))
            e = 1.0 / torch.sqrt(limit_scaling(e))
            P = P.scaled(d, d)
            A = A.scaled(e, d)
            q = q * d
            D, E = D * d, E * e
            # cost normalization: mean column norm of P (real columns only) against ||q||
            P_cols = P.col_norm_inf(upper_only=True)
            mean_col = (P_cols * self.var_mask).sum(dim=1) / n_real
            cost = limit_scaling(torch.maximum(mean_col, limit_scaling(norm_inf(q))))
            ct = 1.0 / cost
            P = P.scaled(None, None, ct)
            # the next pass's column norms without another pass over P: |v ct| = |v| ct and the max commutes
            # with a positive factor, exactly in floating point (rounding is symmetric and monotone)
            P_cols = P_cols * ct.unsqueeze(1)
            q = q * ct.unsqueeze(1)
            c = c * ct
        self.P, self.A, self.q = P, A, q
        self.l, self.u = l * E, u * E
        self.D, self.E, self.c = D, E, c
        self.Dinv, self.Einv, self.cinv = 1.0 / D, 1.0 / E, 1.0 / c

    def _rho_vector(self, rho: torch.Tensor) -> torch.Tensor:
        """OSQP's per-constraint rho: loose rows rho_min, equality rows 1e3 rho, others rho."""
        r = rho.clamp(RHO_MIN, RHO_MAX).unsqueeze(1).expand(-1, self.m)
        out = torch.where(self.equality, RHO_EQ_OVER_RHO_INEQ * r, r)
        return torch.where(self.loose, torch.full_like(out, RHO_MIN), out)

    # ------------------------------------------------------------ public API
    @property
    def running(self) -> torch.Tensor:
        return self.status == int(Status.RUNNING)

    def warm_start(self, x: torch.Tensor | None = None, y: torch.Tensor | None = None) -> None:
        """Start from unscaled (x, y); z = A x as OSQP does."""
        if x is not None:
            self.x = torch.as_tensor(x, dtype=self.dtype, device=self.device) * self.Dinv
            self.z = self.A.mv(self.x)
        if y is not None:
            self.y = torch.as_tensor(y, dtype=self.dtype, device=self.device) * self.Einv * self.c.unsqueeze(1)

    def cold_start(self, which: torch.Tensor) -> None:
        """Put the problems ``which`` back at OSQP's starting point x = z = y = 0 (iteration counts go on)."""
        rows = which.unsqueeze(1)
        for name in ("x", "delta_x", "z", "y", "delta_y"):
            value = getattr(self, name)
            setattr(self, name, torch.where(rows, torch.zeros_like(value), value))
        self.info = {}

    def set_rho(self, rho_vec: torch.Tensor, which: torch.Tensor | None = None) -> None:
        """Use a per-constraint rho (rows of the scaled problem) and refactor.

        Applies to the running problems (and only to ``which`` when given).
        Loose rows keep rho_min; values are clipped to [rho_min, rho_max] as OSQP does.
        """
        r = torch.as_tensor(rho_vec, dtype=self.dtype, device=self.device).clamp(RHO_MIN, RHO_MAX)
        if r.shape != (self.B, self.m):
            raise ValueError(f"rho_vec must have shape ({self.B}, {self.m}), got {tuple(r.shape)}")
        if torch.isnan(r).any():
            raise ValueError("rho_vec contains NaN")
        rows = self.running if which is None else self.running & which
        r = torch.where(self.loose, torch.full_like(r, RHO_MIN), r)
        self.rho_vec = torch.where(rows.unsqueeze(1), r, self.rho_vec)
        ok = self.linsys.factor(self.rho_vec, rows)
        self.status[~ok & rows] = int(Status.NON_CONVEX)

    def set_scalar_rho(self, rho: torch.Tensor, which: torch.Tensor | None = None) -> None:
        """One rho per problem, expanded by OSQP's rule (equality rows 1e3 rho, loose rows rho_min)."""
        rho = torch.as_tensor(rho, dtype=self.dtype, device=self.device).clamp(RHO_MIN, RHO_MAX).expand(self.B)
        rows = self.running if which is None else self.running & which
        self.rho = torch.where(rows, rho, self.rho)
        self.set_rho(self._rho_vector(self.rho), rows)

    def adapt_rho(self, which: torch.Tensor) -> None:
        """Apply OSQP's adaptive-rho rule now to the running problems ``which``."""
        self._update_info()
        self._adapt_rho(self.running & which)

    def advance(self, iterations: int, rho_vec: torch.Tensor | None = None, adapt_rho: bool | torch.Tensor = False,
                check_termination: bool = True, compact: bool = False) -> None:
        """Run up to ``iterations`` ADMM iterations on the running problems.

        Termination is checked on OSQP's fixed interval (``settings.check_termination``)
        counted from the start of the batch, and OSQP's rule updates rho on its
        interval for the problems where ``adapt_rho`` holds (a bool for all, or a
        (B,) mask). A given ``rho_vec`` is applied first.
        """
        if rho_vec is not None:
            self.set_rho(rho_vec)
        if isinstance(adapt_rho, torch.Tensor) and adapt_rho.shape != (self.B,):
            raise ValueError(f"adapt_rho mask must have shape ({self.B},), got {tuple(adapt_rho.shape)}")
        s = self.settings
        # the batch clock: check and adapt intervals count from here, so problems that join a live
        # batch (``replace``) stay aligned when the clock always moves by whole requests
        target = self.k + iterations
        # which problems move changes only at a check, a rho update or a problem reaching max_iter: it is
        # recomputed then (one host sync), not every iteration, and the iteration counts are added in bulk
        active: torch.Tensor | None = None
        all_active, until_cap, pending = False, 0, 0
        for _ in range(iterations):
            if active is None or until_cap == 0:
                if pending:
                    self.iterations, pending = self.iterations + pending * active.long(), 0
                active = self.running & (self.iterations < s.max_iter)
                n_active = int(active.sum())
                if n_active == 0:
                    self.k = target
                    break
                all_active = n_active == self.B
                until_cap = int((s.max_iter - self.iterations[active]).min())
            self._iterate(active, all_active=all_active)
            self.k += 1
            pending += 1
            until_cap -= 1
            check = check_termination and self.k % s.check_termination == 0
            adapt = self.k % s.adaptive_rho_interval == 0 \
                and (adapt_rho if isinstance(adapt_rho, bool) else bool(adapt_rho.any()))
            if not (check or adapt):
                continue
            self.iterations, pending = self.iterations + pending * active.long(), 0
            self._update_info()
            if check:
                self._check_termination(active, approximate=False)
            if adapt:
                self._adapt_rho(self.running if isinstance(adapt_rho, bool) else self.running & adapt_rho)
            active = None  # statuses (and with them who moves) may have changed
            if check:
                running = int(self.running.sum())
                if running == 0:
                    self.k = target
                    break
                if compact and running <= self.B // 2:
                    self._compact()
        if pending:
            self.iterations = self.iterations + pending * active.long()

    def solve(self) -> QPSolution:
        """OSQP's full solve: iterate to termination or max_iter, then the final checks."""
        t0 = time.perf_counter()
        s = self.settings
        self.advance(s.max_iter - self.k, adapt_rho=s.adaptive_rho, compact=True)
        return self.finish(t0)

    def finish(self, started: float) -> QPSolution:
        """OSQP's last checks for problems that reached max_iter, then the results (timed from ``started``)."""
        s = self.settings
        if bool(self.running.any()):
            self._update_info()
            unchecked = self.running & (self.iterations % s.check_termination != 0)  # last iteration was no check
            if bool(unchecked.any()):
                self._check_termination(unchecked, approximate=False)
            self._check_termination(self.running, approximate=True)
            self.status = torch.where(self.running, torch.full_like(self.status, int(Status.MAX_ITER_REACHED)), self.status)
        synchronize(self.device)
        return self.solution(time.perf_counter() - started)

    def solution(self, solve_seconds: float = 0.0) -> QPSolution:
        """Results for every problem of the batch, in the order given."""
        self._stash(torch.ones(self.B, dtype=torch.bool, device=self.device))
        r = self._results
        return QPSolution(r["x"], r["y"], r["status"], r["iterations"], r["objective"], r["prim_res"], r["dual_res"],
                          r["rho_updates"], self.setup_seconds, solve_seconds)

    def _stash(self, rows: torch.Tensor) -> None:
        """Copy the results of the working ``rows`` into the batch-wide results."""
        self._update_info()
        has_solution = (self.status == int(Status.SOLVED)) | (self.status == int(Status.SOLVED_INACCURATE)) \
            | (self.status == int(Status.MAX_ITER_REACHED))
        values = {
            "x": self.unscaled_x(), "y": self.y * self.E * self.cinv.unsqueeze(1), "status": self.status,
            "iterations": self.iterations, "prim_res": self.info["prim_res"], "dual_res": self.info["dual_res"],
            "objective": torch.where(has_solution, self.info["obj_val"], torch.full_like(self.info["obj_val"], float("nan"))),
            "rho_updates": self.rho_updates,
        }
        if self._results is None:
            self._results = {k: v.new_zeros((self.total, *v.shape[1:])) for k, v in values.items()}
        gid = self.index[rows]
        for k, v in values.items():
            self._results[k][gid] = v[rows]

    def compact_finished(self, at_most: float = 0.5) -> bool:
        """Drop the finished problems from the working set once at most ``at_most`` of it still runs (their
        results are kept): a batch then costs what its running problems cost. Returns whether it did."""
        running = int(self.running.sum())
        if running == self.B or running > at_most * self.B:
            return False
        self._compact()
        self._update_info()  # what the residual readers (normalized_residuals, a policy's features) read
        return True

    def _compact(self) -> None:
        """Drop finished problems from the working set (their results are stashed first)."""
        running = self.running
        self._stash(~running)
        keep = running.nonzero().squeeze(1)
        for name in self.PER_PROBLEM:
            setattr(self, name, getattr(self, name)[keep])
        self.P, self.A = self.P.take(keep), self.A.take(keep)
        self.linsys.take(keep, self.P, self.A)
        self.B = keep.numel()
        self.info = {}

    def replace(self, slots: torch.Tensor, other: "OSQPBatch") -> None:
        """Put the problems of ``other`` (same padded sizes, device and dtype) into ``slots``.

        What a batched environment needs to start new episodes in a live batch:
        the newcomers were set up (and possibly advanced) on their own, and the
        batch keeps one block-diagonal structure. Iterations of the batch and of
        ``other`` must be aligned on the check and adaptive-rho intervals.
        """
        slots = torch.as_tensor(slots, dtype=torch.long, device=self.device)
        if (other.n, other.m) != (self.n, self.m) or other.B != slots.numel():
            raise ValueError(f"replace: {slots.numel()} slots need a batch of that size padded to n={self.n}, "
                             f"m={self.m}; got B={other.B}, n={other.n}, m={other.m}")
        other.info = {}
        for name in self.PER_PROBLEM:
            setattr(self, name, getattr(self, name).index_copy(0, slots, getattr(other, name)))
        self.P, self.A = self.P.replace(slots, other.P), self.A.replace(slots, other.A)
        self.linsys.replace(slots, other.linsys, self.P, self.A)
        self.names = list(self.names)
        for i, name in zip(slots.tolist(), other.names):
            self.names[i] = name
        self.info = {}

    def unscaled_x(self) -> torch.Tensor:
        return self.x * self.D

    def state(self) -> dict[str, torch.Tensor]:
        """Iterates and residuals for a policy: unscaled x, z, y, Ax; scaled l, u and rho.

        Rows are the working problems (all of them unless ``solve()`` compacted the batch)."""
        self._update_info()
        return {
            "x": self.unscaled_x(),
            "z": self.z * self.Einv,
            "y": self.y * self.E * self.cinv.unsqueeze(1),
            "Ax": self.info["Ax"] * self.Einv,
            "prim_res": self.info["prim_res"],
            "dual_res": self.info["dual_res"],
            "l_scaled": self.l,
            "u_scaled": self.u,
            "z_scaled": self.z,
            "y_scaled": self.y,
            "Ax_scaled": self.info["Ax"],
            "rho_vec": self.rho_vec,
            "con_mask": self.con_mask,
            "status": self.status,
            "iterations": self.iterations,
        }

    # ------------------------------------------------------------ the iteration
    def _iterate(self, active: torch.Tensor, all_active: bool = False) -> None:
        """One ADMM iteration of the ``active`` problems; ``all_active`` (every row of the working set)
        skips the masks."""
        s = self.settings
        x_prev, z_prev, y = self.x, self.z, self.y
        x, z, delta_y = admm_step(x_prev, z_prev, y, self.rho_vec, self.q, self.l, self.u, self.A.mv, self.A.rmv,
                                  self.linsys.solve, s.sigma, s.alpha)
        if all_active:
            self.x, self.z, self.y = x, z, y + delta_y
            self.delta_x, self.delta_y = x - x_prev, delta_y
            return
        a_n, a_m = active.unsqueeze(1), active.unsqueeze(1)
        self.x = torch.where(a_n, x, x_prev)
        self.z = torch.where(a_m, z, z_prev)
        self.y = torch.where(a_m, y + delta_y, y)
        self.delta_x = torch.where(a_n, x - x_prev, self.delta_x)
        self.delta_y = torch.where(a_m, delta_y, self.delta_y)

    def _project_polar_reccone(self, v: torch.Tensor) -> torch.Tensor:
        upper_inf, lower_inf = self.u > INFINITE_BOUND, self.l < -INFINITE_BOUND
        v = torch.where(upper_inf & ~lower_inf, v.clamp(max=0.0), v)
        v = torch.where(lower_inf & ~upper_inf, v.clamp(min=0.0), v)
        return torch.where(upper_inf & lower_inf, torch.zeros_like(v), v)

    def _support(self, v: torch.Tensor) -> torch.Tensor:
        """u'max(v, 0) + l'min(v, 0) for v already in the polar recession cone."""
        return (self.u * v.clamp(min=0.0)).sum(dim=1) + (self.l * v.clamp(max=0.0)).sum(dim=1)

    def _update_info(self) -> None:
        """Residuals, objective and duality gap at the current iterate (OSQP's update_info)."""
        x, z, y = self.x, self.z, self.y
        Ax, Px, Aty = self.A.mv(x), self.P.mv(x), self.A.rmv(y)
        prim_vec = Ax - z
        dual_vec = self.q + Px + Aty
        quad = (Px * x).sum(dim=1)
        lin = (self.q * x).sum(dim=1)
        yp = self._project_polar_reccone(y)
        yp = torch.where(yp.abs() < ZERO_DEADZONE, torch.zeros_like(yp), yp)
        sup = self._support(yp)
        cinv = self.cinv
        self.info = {
            "Ax": Ax, "Px": Px, "Aty": Aty,
            "scaled_prim_res": norm_inf(prim_vec),
            "scaled_dual_res": norm_inf(dual_vec),
            "prim_res": norm_inf(self.Einv * prim_vec),
            "dual_res": cinv * norm_inf(self.Dinv * dual_vec),
            "obj_val": cinv * (0.5 * quad + lin),
            "duality_gap": cinv * (quad + lin + sup),
            "gap_scale": cinv * torch.maximum(torch.maximum(quad.abs(), lin.abs()), sup.abs()),
        }

    def _check_termination(self, active: torch.Tensor, approximate: bool) -> None:
        s, info = self.settings, self.info
        f = 10.0 if approximate else 1.0
        eps_abs, eps_rel, eps_pinf, eps_dinf = s.eps_abs * f, s.eps_rel * f, s.eps_prim_inf * f, s.eps_dual_inf * f
        Ax, Px, Aty = info["Ax"], info["Px"], info["Aty"]
        nonconvex = ~(info["prim_res"] <= OSQP_INFTY) | ~(info["dual_res"] <= OSQP_INFTY)
        eps_prim = eps_abs + eps_rel * torch.maximum(norm_inf(self.Einv * self.z), norm_inf(self.Einv * Ax))
        eps_dual = eps_abs + eps_rel * self.cinv * torch.maximum(
            torch.maximum(norm_inf(self.Dinv * self.q), norm_inf(self.Dinv * Aty)), norm_inf(self.Dinv * Px))
        prim_ok = info["prim_res"] < eps_prim
        dual_ok = info["dual_res"] < eps_dual
        gap_ok = (info["duality_gap"].abs() < eps_abs + eps_rel * info["gap_scale"]) if s.check_dualgap else torch.ones_like(prim_ok)
        prim_inf = ~prim_ok & self._primal_infeasible(eps_pinf)
        dual_inf = ~dual_ok & self._dual_infeasible(eps_dinf)
        status = torch.full_like(self.status, int(Status.RUNNING))
        status = torch.where(dual_inf, int(Status.DUAL_INFEASIBLE_INACCURATE if approximate else Status.DUAL_INFEASIBLE), status)
        status = torch.where(prim_inf, int(Status.PRIMAL_INFEASIBLE_INACCURATE if approximate else Status.PRIMAL_INFEASIBLE), status)
        status = torch.where(prim_ok & dual_ok & gap_ok, int(Status.SOLVED_INACCURATE if approximate else Status.SOLVED), status)
        status = torch.where(nonconvex, int(Status.NON_CONVEX), status)
        self.status = torch.where(active, status, self.status)

    def _primal_infeasible(self, eps: float) -> torch.Tensor:
        dy = self._project_polar_reccone(self.delta_y)
        norm_dy = norm_inf(self.E * dy)
        lhs = self._support(dy)
        Atdy = norm_inf(self.Dinv * self.A.rmv(dy))
        return (norm_dy > DIVISION_TOL) & (lhs < 0.0) & (Atdy < eps * norm_dy)

    def _dual_infeasible(self, eps: float) -> torch.Tensor:
        dx = self.delta_x
        norm_dx = norm_inf(self.D * dx)
        descent = (self.q * dx).sum(dim=1) < 0.0
        Pdx = norm_inf(self.Dinv * self.P.mv(dx))
        Adx = self.Einv * self.A.mv(dx)
        tol = (eps * norm_dx).unsqueeze(1)
        violated = ((self.u < INFINITE_BOUND) & (Adx > tol)) | ((self.l > -INFINITE_BOUND) & (Adx < -tol))
        in_reccone = ~violated.any(dim=1)
        return (norm_dx > DIVISION_TOL) & descent & (Pdx < self.c * eps * norm_dx) & in_reccone

    def normalized_residuals(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(B,) primal and dual residuals relative to their terms, on the scaled problem: what OSQP's
        adaptive rule balances (and what a learned rho policy observes). Reads the last ``_update_info``."""
        info = self.info
        prim = info["scaled_prim_res"] / (torch.maximum(norm_inf(self.z), norm_inf(info["Ax"])) + DIVISION_TOL)
        dual_norm = torch.maximum(torch.maximum(norm_inf(self.q), norm_inf(info["Aty"])), norm_inf(info["Px"]))
        return prim, info["scaled_dual_res"] / (dual_norm + DIVISION_TOL)

    def _adapt_rho(self, active: torch.Tensor) -> None:
        """OSQP's rule: rho * sqrt(normalized primal / normalized dual residual), if it moves by > tolerance."""
        s = self.settings
        prim, dual = self.normalized_residuals()
        estimate = torch.nan_to_num(self.rho * torch.sqrt(prim / dual), nan=RHO_MIN, posinf=RHO_MAX).clamp(RHO_MIN, RHO_MAX)
        change = active & ((estimate > self.rho * s.adaptive_rho_tolerance) | (estimate < self.rho / s.adaptive_rho_tolerance))
        if not bool(change.any()):
            return
        self.rho = torch.where(change, estimate, self.rho)
        self.rho_vec = torch.where(change.unsqueeze(1), self._rho_vector(self.rho), self.rho_vec)
        self.rho_updates = self.rho_updates + change.long()
        ok = self.linsys.factor(self.rho_vec, change)
        self.status[change & ~ok] = int(Status.NON_CONVEX)


def admm_step(x_prev: torch.Tensor, z_prev: torch.Tensor, y: torch.Tensor, rho: torch.Tensor, q: torch.Tensor,
              l: torch.Tensor, u: torch.Tensor, mv: Callable[[torch.Tensor], torch.Tensor],
              rmv: Callable[[torch.Tensor], torch.Tensor], solve: Callable[[torch.Tensor], torch.Tensor],
              sigma: float, alpha: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """OSQP's ADMM iteration on a batch, (x, z, delta_y) after it (y+ = y + delta_y): the one place its algebra
    is written, for the core (sparse products, a factored reduced KKT matrix) and the differentiable unroll of
    ``learned_optimizers.qp.unrolled`` (dense products) alike.

        x~ = K^-1 (sigma x - q + A'(rho z - y)),  z~ = A x~,
        x+ = alpha x~ + (1 - alpha) x,  z+ = Pi_[l,u](alpha z~ + (1 - alpha) z + y / rho),
        delta_y = rho (alpha z~ + (1 - alpha) z - z+)

    As few fused passes as the algebra allows (on a CPU each pass over the (B, m) arrays costs about as much as
    a sparse product); in place on its own temporaries unless an input takes part in autograd."""
    inplace = not (torch.is_grad_enabled() and any(t.requires_grad for t in (x_prev, z_prev, y)))
    rhs = torch.add(rmv(torch.addcmul(-y, rho, z_prev)), x_prev, alpha=sigma)
    x_tilde = solve(rhs.sub_(q) if inplace else rhs - q)
    z_tilde = mv(x_tilde)
    x = torch.lerp(x_prev, x_tilde, alpha)
    z_relaxed = torch.lerp(z_prev, z_tilde, alpha)
    z = torch.addcdiv(z_relaxed, y, rho)
    if inplace:
        z = z.clamp_(l, u)
        return x, z, z_relaxed.sub_(z).mul_(rho)
    z = torch.clamp(z, l, u)
    return x, z, (z_relaxed - z) * rho


#: on a CPU, problems solved together at most: one batch's (B, m) arrays and sparse factors then stay in the
#: cache (measured on Random QPs, n = 50, 2 cores: 249 problems/s at 256, 140 at 4096 in one batch)
CPU_CHUNK = 256


def in_chunks(problems: list[QP] | QPBatch | QP, device: torch.device, solve: Callable[[list[QP] | QPBatch], QPSolution],
              chunk: int | None = None, dtype: torch.dtype = torch.float64) -> QPSolution:
    """``solve`` on batches of at most ``chunk`` problems (default ``CPU_CHUNK`` on a CPU, all at once on a GPU),
    padded to the largest problem of the list so that the results concatenate as one batch's would."""
    if isinstance(problems, (QP, QPBatch)):
        return solve([problems] if isinstance(problems, QP) else problems)
    chunk = chunk_size(chunk, len(problems), device, CPU_CHUNK)
    if len(problems) <= chunk:
        return solve(problems)
    n = max(p.n for p in problems)
    m = max(max(p.m for p in problems), 1)
    return solve_in_chunks(len(problems), chunk,
                           lambda i, j: solve(QPBatch.from_qps(problems[i:j], device, dtype, n=n, m=m)),
                           summed=("setup_seconds", "solve_seconds"))


def solve_qps(problems: list[QP], settings: OSQPSettings | None = None, device: torch.device | str = "cpu",
              backend: Literal["dense", "sparse"] = "dense", chunk: int | None = None,
              dtype: torch.dtype = torch.float64) -> QPSolution:
    """Solve a list of QPs with the batched core: ``solve_qps([qp1, qp2]).x``; ``chunk``: see ``in_chunks``.

    ``dtype=torch.float32`` is opt-in: measured 1.27x faster on 256 Random QPs (n = 50, 2 CPU threads), with
    the same statuses but not always the same iterations (55450 against 55425 in all)."""
    device = torch.device(device)
    return in_chunks(problems, device,
                     lambda part: OSQPBatch(part, settings, device=device, dtype=dtype, backend=backend).solve(),
                     chunk, dtype)
