"""RLQP with osqp's own interface: ``setup`` / ``update`` / ``warm_start`` / ``solve``, results shaped like osqp's.

A user of the real ``osqp`` switches to the learned rho by changing one line::

    solver = RLQP(policy="shipped")          # or a policy file, or a RhoPolicy
    solver.setup(P, q, A, l, u, eps_abs=1e-6, eps_rel=1e-6)
    res = solver.solve()                     # res.x, res.y, res.info.status, res.info.iter, res.info.solve_time

P is taken as osqp takes it (its upper triangle, scipy.sparse) or as a full symmetric matrix; numpy arrays and
torch tensors are accepted too. ``update(Px=...)`` and ``update(Ax=...)`` take new values of the nonzeros in
the order osqp uses (column-major, P's upper triangle), with the sparsity pattern of the setup.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch
from torch import nn

from learned_optimizers.qp.admm import OSQPSettings, Status
from learned_optimizers.qp.problems import QP, QPValidationError
from learned_optimizers.qp.rlqp import SHIPPED_POLICY, RhoPolicy, RLQPSettings, RLQPSolver

#: osqp settings that configure the core; the others that osqp accepts are taken and have no effect here
CORE_SETTINGS = tuple(f.name for f in fields(OSQPSettings))
IGNORED_SETTINGS = ("verbose", "polishing", "polish", "warm_starting", "time_limit", "linsys_solver", "scaled_termination")


@dataclass(frozen=True)
class Info:
    """osqp's ``res.info`` fields."""

    status: str
    status_val: int
    iter: int
    obj_val: float
    prim_res: float
    dual_res: float
    setup_time: float
    solve_time: float
    run_time: float
    rho_updates: int
    fell_back: bool  # RLQP's safeguard handed the problem back to OSQP's heuristic


@dataclass(frozen=True)
class Result:
    x: np.ndarray
    y: np.ndarray
    info: Info


def _as_sparse(M: Any, name: str) -> sp.csc_matrix:
    if isinstance(M, torch.Tensor):
        M = M.detach().cpu().numpy()
    if sp.issparse(M):
        return sp.csc_matrix(M)
    array = np.asarray(M)
    if array.ndim != 2:
        raise QPValidationError(f"{name} must be a matrix (2-D), got shape {array.shape}")
    return sp.csc_matrix(array)


def _as_vector(v: Any, name: str, size: int) -> np.ndarray:
    if isinstance(v, torch.Tensor):
        v = v.detach().cpu().numpy()
    array = np.asarray(v, dtype=np.float64).reshape(-1)
    if array.shape != (size,):
        raise QPValidationError(f"{name} must have {size} entries, got {array.size}")
    return array


def _finite(v: np.ndarray | None, name: str) -> np.ndarray | None:
    if v is not None and not np.all(np.isfinite(v)):
        raise QPValidationError(f"{name} contains NaN or inf; a warm start must be finite")
    return v


def full_symmetric(P: sp.csc_matrix) -> sp.csc_matrix:
    """P from its upper triangle (osqp's form) or as given when already symmetric."""
    if sp.tril(P, k=-1).nnz == 0:  # upper triangular: mirror it
        upper = sp.triu(P, format="csc")
        return (upper + sp.triu(upper, k=1).T).tocsc()
    return P


class RLQP:
    """The learned-rho OSQP of this project behind osqp's Python interface (one problem at a time)."""

    def __init__(self, policy: str | Path | nn.Module = "shipped", device: torch.device | str = "cpu") -> None:
        if isinstance(policy, nn.Module):
            self.policy = policy
        else:
            path = SHIPPED_POLICY if str(policy) == "shipped" else Path(policy)
            self.policy = RhoPolicy.load(path, device)
        self.device = device
        self._upper: sp.csc_matrix | None = None
        self._start: tuple[np.ndarray | None, np.ndarray | None] = (None, None)

    # ------------------------------------------------------------ osqp's interface
    def setup(self, P: Any, q: Any, A: Any, l: Any, u: Any, **settings: Any) -> None:
        """The problem and osqp's settings (eps_abs, eps_rel, max_iter, rho, sigma, alpha, ...). The tolerance
        defaults to the one the policy was trained at, where its file records it."""
        started = time.perf_counter()
        unknown = sorted(set(settings) - set(CORE_SETTINGS) - set(IGNORED_SETTINGS))
        if unknown:
            raise ValueError(f"unknown settings {unknown}; allowed: {', '.join(CORE_SETTINGS + IGNORED_SETTINGS)}")
        trained_eps = getattr(self.policy, "metadata", {}).get("eps")
        core = {k: v for k, v in settings.items() if k in CORE_SETTINGS}
        if trained_eps is not None:
            core.setdefault("eps_abs", trained_eps)
            core.setdefault("eps_rel", trained_eps)
        interval = getattr(self.policy, "metadata", {}).get("interval", 100)
        self.settings = RLQPSettings(osqp=OSQPSettings(**core), interval=interval)
        P = _as_sparse(P, "P")
        A = _as_sparse(A, "A")
        n, m = P.shape[1], A.shape[0]
        q, l, u = _as_vector(q, "q", n), _as_vector(l, "l", m), _as_vector(u, "u", m)
        full = full_symmetric(P)
        QP(full, q, A, l, u, name="rlqp")  # validates now (a full P must be symmetric): setup fails, as osqp's does
        self._upper, self._A, self._q, self._l, self._u = sp.triu(full, format="csc"), A, q, l, u
        self._start = (None, None)
        self._setup_seconds = time.perf_counter() - started

    def update(self, q: Any = None, l: Any = None, u: Any = None, Px: Any = None, Ax: Any = None) -> None:
        """New data with the setup's sparsity: vectors q, l, u; Px, Ax the nonzeros of P's upper triangle and of A.
        Malformed data is refused and the previous problem stays."""
        self._require_setup()
        n, m = self._upper.shape[0], self._A.shape[0]
        q = self._q if q is None else _as_vector(q, "q", n)
        l = self._l if l is None else _as_vector(l, "l", m)
        u = self._u if u is None else _as_vector(u, "u", m)
        upper, A = self._upper, self._A
        if Px is not None:
            upper = sp.csc_matrix((_as_vector(Px, "Px", upper.nnz), upper.indices, upper.indptr), shape=upper.shape)
        if Ax is not None:
            A = sp.csc_matrix((_as_vector(Ax, "Ax", A.nnz), A.indices, A.indptr), shape=A.shape)
        QP(full_symmetric(upper), q, A, l, u, name="rlqp")  # validates before anything changes
        self._upper, self._A, self._q, self._l, self._u = upper, A, q, l, u

    def warm_start(self, x: Any = None, y: Any = None) -> None:
        """Start the next solve from this x (primal) and y (dual) instead of zero."""
        self._require_setup()
        self._start = (_finite(None if x is None else _as_vector(x, "x", self._upper.shape[0]), "x"),
                       _finite(None if y is None else _as_vector(y, "y", self._A.shape[0]), "y"))

    def solve(self) -> Result:
        self._require_setup()
        started = time.perf_counter()
        problem = self._problem()
        solver = RLQPSolver(self.policy, self.settings)
        x0, y0 = self._start
        sol = solver.solve([problem], device=self.device, warm_start=(x0, y0))
        n, m = problem.n, problem.m
        status = Status(int(sol.status[0]))
        solve_seconds = time.perf_counter() - started
        info = Info(status=status.label, status_val=int(status), iter=int(sol.iterations[0]),
                    obj_val=float(sol.objective[0]) + problem.r, prim_res=float(sol.prim_res[0]),
                    dual_res=float(sol.dual_res[0]), setup_time=self._setup_seconds, solve_time=solve_seconds,
                    run_time=self._setup_seconds + solve_seconds, rho_updates=int(sol.rho_updates[0]),
                    fell_back=bool(sol.fell_back[0]))
        return Result(sol.x[0, :n].cpu().numpy().astype(np.float64), sol.y[0, :m].cpu().numpy().astype(np.float64), info)

    # ------------------------------------------------------------ internals
    def _require_setup(self) -> None:
        if self._upper is None:
            raise RuntimeError("call setup(P, q, A, l, u) first")

    def _problem(self) -> QP:
        return QP(full_symmetric(self._upper), self._q, self._A, self._l, self._u, name="rlqp")


    def update_settings(self, **settings: Any) -> None:
        """Change osqp settings after setup (eps_abs, eps_rel, max_iter, ...), as osqp's own method does."""
        self._require_setup()
        unknown = sorted(set(settings) - set(CORE_SETTINGS) - set(IGNORED_SETTINGS))
        if unknown:
            raise ValueError(f"unknown settings {unknown}; allowed: {', '.join(CORE_SETTINGS + IGNORED_SETTINGS)}")
        core = {k: v for k, v in settings.items() if k in CORE_SETTINGS}
        self.settings = replace(self.settings, osqp=replace(self.settings.osqp, **core))
