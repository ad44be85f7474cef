"""Parametric QP families: P and A fixed, the data (q, l, u) an affine function of a context that changes.

    q = q0 + Gq c,   l = l0 + Gl c,   u = u0 + Gu c

covers what is solved again and again with one factorization: MPC (the context is the initial state, entering
the first dynamics rows), a portfolio (the expected returns, entering q) and a Lasso (the observations, entering
the rows y = A x - b). A family is seeded: the same seed gives the same P, A and context distribution; held-out
contexts come from their own seed. ``ParametricQPFamily.from_file`` reads a user's family.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import scipy.linalg as sla
import scipy.sparse as sp

import torch

from learned_optimizers.common.problem import Box, ContextualProblem
from learned_optimizers.common.settings import setting, validate
from learned_optimizers.qp.admm import OSQPBatch, OSQPSettings
from learned_optimizers.qp.problems import QP, QPValidationError

FAMILIES = ("mpc", "portfolio", "lasso")


@dataclass(frozen=True)
class ParametricQPSettings:
    """Which family, how large, and the seed that fixes its matrices."""

    kind: str = setting("mpc", choices=FAMILIES, doc="which family: mpc, portfolio or lasso")
    size: int = setting(6, ge=1, le=2000, doc="states (mpc), assets (portfolio) or features (lasso)")
    horizon: int = setting(10, ge=1, le=200, doc="mpc: steps of the prediction horizon")
    seed: int = setting(0, ge=0, doc="fixes P, A and the context distribution")
    eps: float = setting(1e-5, gt=0.0, lt=1.0, doc="eps_abs = eps_rel that a warm start is judged at")
    path: str = setting("", doc="a family of your own: an .npz of ParametricQPFamily.save's keys (then kind, size, "
                                "horizon and seed are not used)")

    def __post_init__(self) -> None:
        validate(self)


class ParametricQPFamily:
    """A QP family with fixed P, A and data affine in the context (see the module docstring)."""

    def __init__(self, name: str, P: sp.spmatrix, A: sp.spmatrix, q0: np.ndarray, l0: np.ndarray, u0: np.ndarray,
                 Gq: np.ndarray, Gl: np.ndarray, Gu: np.ndarray, context_mean: np.ndarray, context_scale: np.ndarray,
                 walk: float = 0.1) -> None:
        self.name = name
        self.P, self.A = sp.csc_matrix(P, dtype=np.float64), sp.csc_matrix(A, dtype=np.float64)
        self.q0, self.l0, self.u0 = (np.asarray(v, dtype=np.float64).reshape(-1) for v in (q0, l0, u0))
        self.Gq, self.Gl, self.Gu = (np.asarray(G, dtype=np.float64) for G in (Gq, Gl, Gu))
        self.context_mean = np.asarray(context_mean, dtype=np.float64).reshape(-1)
        self.context_scale = np.asarray(context_scale, dtype=np.float64).reshape(-1)
        self.walk = walk
        n, m, d = self.P.shape[0], self.A.shape[0], self.context_mean.size
        for key, G, rows in (("Gq", self.Gq, n), ("Gl", self.Gl, m), ("Gu", self.Gu, m)):
            if G.shape != (rows, d):
                raise QPValidationError(f"family {name!r}: {key} must be {rows}x{d}, got {'x'.join(map(str, G.shape))}")
        for key, arr in (("Gq", self.Gq), ("Gl", self.Gl), ("Gu", self.Gu), ("context_mean", self.context_mean),
                         ("context_scale", self.context_scale)):
            if not np.all(np.isfinite(arr)):
                raise QPValidationError(f"family {name!r}: {key} contains NaN or inf")
        if self.context_scale.shape != self.context_mean.shape or np.any(self.context_scale < 0):
            raise QPValidationError(f"family {name!r}: context_scale must be {d} non-negative half-widths")
        QP(self.P, self.q0, self.A, self.l0, self.u0, name=name)  # the shapes, symmetry and finiteness of P, A

    @property
    def n(self) -> int:
        return self.P.shape[0]

    @property
    def m(self) -> int:
        return self.A.shape[0]

    @property
    def context_dim(self) -> int:
        return self.context_mean.size

    def check_contexts(self, contexts: np.ndarray) -> np.ndarray:
        """(k, context_dim) float64 contexts, or a named error (wrong shape, NaN or inf)."""
        c = np.asarray(contexts, dtype=np.float64)
        if c.ndim == 1:
            c = c[None, :]
        if c.ndim != 2 or c.shape[1] != self.context_dim:
            raise ValueError(f"{self.name}: a context has {self.context_dim} entries; got an array of shape "
                             f"{np.shape(contexts)}")
        if not np.isfinite(c).all():
            raise ValueError(f"{self.name}: contexts contain NaN or inf")
        return c

    def data(self, contexts: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(q, l, u) of each context, shapes (k, n), (k, m), (k, m)."""
        c = self.check_contexts(contexts)
        return self.q0 + c @ self.Gq.T, self.l0 + c @ self.Gl.T, self.u0 + c @ self.Gu.T

    def qp(self, context: np.ndarray) -> QP:
        q, l, u = self.data(context)
        return QP(self.P, q[0], self.A, l[0], u[0], name=self.name)

    def sample_contexts(self, count: int, rng: np.random.Generator) -> np.ndarray:
        """Independent draws: mean + scale * uniform(-1, 1) per entry."""
        return self.context_mean + self.context_scale * rng.uniform(-1.0, 1.0, (count, self.context_dim))

    def sequence(self, count: int, rng: np.random.Generator) -> np.ndarray:
        """Contexts that drift, as the data of a problem solved again and again does (an MPC's state from one
        control step to the next, a portfolio's returns from one day to the next): a mean-reverting walk that
        stays inside the sampling box, each step ``walk`` of its half-width."""
        c = self.sample_contexts(1, rng)[0]
        out = np.empty((count, self.context_dim))
        for t in range(count):
            out[t] = c
            step = self.walk * self.context_scale * rng.standard_normal(self.context_dim)
            c = np.clip(c + step - 0.1 * (c - self.context_mean), self.context_mean - self.context_scale,
                        self.context_mean + self.context_scale)
        return out

    def osqp_solver(self, context: np.ndarray, **settings):
        """The real ``osqp.OSQP`` set up on this family at ``context`` (no polishing, quiet, then ``settings``):
        P and A stay, so later contexts go through ``update(q=, l=, u=)`` on the same factorization."""
        import osqp

        q, l, u = self.data(context)
        solver = osqp.OSQP()
        solver.setup(P=sp.triu(self.P, format="csc"), q=q[0], A=self.A, l=l[0], u=u[0],
                     **{"polishing": False, "verbose": False, **settings})
        return solver

    # ------------------------------------------------------------ files
    def save(self, path: str | Path) -> None:
        np.savez(path, P=self.P.toarray(), A=self.A.toarray(), q0=self.q0, l0=self.l0, u0=self.u0, Gq=self.Gq,
                 Gl=self.Gl, Gu=self.Gu, context_mean=self.context_mean, context_scale=self.context_scale)

    @classmethod
    def from_file(cls, path: str | Path) -> "ParametricQPFamily":
        """A user's family from an .npz with P, A, q0, l0, u0, Gq, Gl, Gu, context_mean, context_scale."""
        path = Path(path)
        if not path.is_file():
            raise QPValidationError(f"{str(path)!r}: no family file there")
        keys = ("P", "A", "q0", "l0", "u0", "Gq", "Gl", "Gu", "context_mean", "context_scale")
        try:
            with np.load(path, allow_pickle=False) as f:
                missing = [k for k in keys if k not in f.files]
                if missing:
                    raise QPValidationError(f"{path}: missing {', '.join(missing)}; a family file holds {', '.join(keys)}")
                arrays = {k: f[k] for k in keys}
        except (OSError, ValueError) as err:
            if isinstance(err, QPValidationError):
                raise
            raise QPValidationError(f"{path}: not a readable .npz family file ({err})") from None
        return cls(path.stem, **arrays)


# ---------------------------------------------------------------- the shipped families
def make_family(settings: ParametricQPSettings) -> ParametricQPFamily:
    if settings.path:
        return ParametricQPFamily.from_file(settings.path)
    builders = {"mpc": _mpc, "portfolio": _portfolio, "lasso": _lasso}
    return builders[settings.kind](settings)


def _mpc(s: ParametricQPSettings) -> ParametricQPFamily:
    """Linear MPC: nx = size states, nu = size // 2 inputs, state and input boxes, DARE terminal cost; the
    context is the initial state, sampled in half the state box."""
    rng = np.random.default_rng(s.seed)
    nx, nu, T = s.size, max(1, s.size // 2), s.horizon
    Ad = np.eye(nx) + 0.1 * rng.standard_normal((nx, nx))
    lam, V = np.linalg.eig(Ad)
    lam = np.where(np.abs(lam) < 1 - 1e-2, lam, lam / (np.abs(lam) + 1e-2))  # stable but slow modes
    Ad = (V @ np.diag(lam) @ np.linalg.inv(V)).real
    B = rng.standard_normal((nx, nu))
    Q, R = np.diag(0.5 + rng.random(nx)), 0.1 * np.eye(nu)
    QN = sla.solve_discrete_are(Ad, B, Q, R)
    QN = 0.5 * (QN + QN.T)
    umax, xmax = 0.1 + 0.2 * rng.random(nu), 1.0 + rng.random(nx)  # tight inputs: constraints bind
    P = 2.0 * sp.block_diag([sp.kron(sp.eye(T), Q), QN, sp.kron(sp.eye(T), R)], format="csc")
    n = (T + 1) * nx + T * nu
    Ax = sp.kron(sp.eye(T + 1), -sp.eye(nx)) + sp.kron(sp.eye(T + 1, k=-1), Ad)
    Au = sp.kron(sp.vstack([sp.csc_matrix((1, T)), sp.eye(T)]), B)
    A = sp.vstack([sp.hstack([Ax, Au]), sp.eye(n)]).tocsc()
    m_eq = (T + 1) * nx
    l0 = np.concatenate([np.zeros(m_eq), np.tile(-xmax, T + 1), np.tile(-umax, T)])
    u0 = np.concatenate([np.zeros(m_eq), np.tile(xmax, T + 1), np.tile(umax, T)])
    G = np.zeros((A.shape[0], nx))
    G[:nx] = -np.eye(nx)  # -x_0 = -x_init: the first dynamics rows
    return ParametricQPFamily(f"mpc-{nx}x{nu}-T{T}-s{s.seed}", P, A, np.zeros(n), l0, u0, np.zeros((n, nx)), G, G,
                              np.zeros(nx), 0.8 * xmax)


def _portfolio(s: ParametricQPSettings) -> ParametricQPFamily:
    """Markowitz with factors, fully invested and long only; the context is the expected returns."""
    rng = np.random.default_rng(s.seed)
    n, k = s.size, max(1, s.size // 10)
    F = sp.random(n, k, density=0.5, format="csc", random_state=rng, data_rvs=rng.standard_normal)
    D = sp.diags(rng.random(n) * np.sqrt(k))
    P = sp.block_diag((2 * D, 2 * sp.eye(k)), format="csc")
    A = sp.vstack([
        sp.hstack([sp.csc_matrix(np.ones((1, n))), sp.csc_matrix((1, k))]),
        sp.hstack([F.T, -sp.eye(k)]),
        sp.hstack([sp.eye(n), sp.csc_matrix((n, k))]),
    ]).tocsc()
    l0 = np.concatenate([[1.0], np.zeros(k), np.zeros(n)])
    u0 = np.concatenate([[1.0], np.zeros(k), np.ones(n)])
    Gq = np.vstack([-np.eye(n), np.zeros((k, n))])  # q = [-mu; 0]
    m = A.shape[0]
    return ParametricQPFamily(f"portfolio-{n}-s{s.seed}", P, A, np.zeros(n + k), l0, u0, Gq, np.zeros((m, n)),
                              np.zeros((m, n)), rng.standard_normal(n), 0.5 * np.ones(n))


def _lasso(s: ParametricQPSettings) -> ParametricQPFamily:
    """Lasso with size features and 10 x size observations, as a QP in (x, y, t); the context is b."""
    rng = np.random.default_rng(s.seed)
    n, m_obs = s.size, 10 * s.size
    Ad = sp.random(m_obs, n, density=0.5, format="csc", random_state=rng, data_rvs=rng.standard_normal)
    lam = 0.1 * np.sqrt(m_obs)
    P = sp.block_diag((sp.csc_matrix((n, n)), 2 * sp.eye(m_obs), sp.csc_matrix((n, n))), format="csc")
    q0 = np.concatenate([np.zeros(m_obs + n), lam * np.ones(n)])
    In, Onm = sp.eye(n), sp.csc_matrix((n, m_obs))
    A = sp.vstack([
        sp.hstack([Ad, -sp.eye(m_obs), sp.csc_matrix((m_obs, n))]),
        sp.hstack([In, Onm, -In]),
        sp.hstack([In, Onm, In]),
    ]).tocsc()
    l0 = np.concatenate([np.zeros(m_obs), -np.inf * np.ones(n), np.zeros(n)])
    u0 = np.concatenate([np.zeros(m_obs), np.zeros(n), np.inf * np.ones(n)])
    G = np.vstack([np.eye(m_obs), np.zeros((2 * n, m_obs))])  # A x - y = b
    x_true = (rng.random(n) > 0.5) * rng.standard_normal(n)
    return ParametricQPFamily(f"lasso-{n}-s{s.seed}", P, A, q0, l0, u0, np.zeros((P.shape[0], m_obs)), G, G,
                              Ad @ x_true, np.ones(m_obs))


# ---------------------------------------------------------------- the one-step warm-start problem
#: a warm start's (x, y) stays in the labelled solutions' range widened by this many of their spreads
SOLUTION_BOX_SPREADS = 4.0
#: contexts solved once at construction to size the solution box
CALIBRATION_CONTEXTS = 128


def solve_family(family: ParametricQPFamily, contexts: np.ndarray, eps: float,
                 progress: Callable[[int], None] | None = None) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(x*, y*, statuses) of each context by the real osqp (set up once, then ``update``; at most 10,000
    iterations, so an infeasible context costs a bounded time): the labels of a regression onto solutions.
    ``progress(k)`` is called after every solve with the count done."""
    q, l, u = family.data(contexts)
    solver = family.osqp_solver(contexts[0], eps_abs=eps, eps_rel=eps, max_iter=10_000)
    xs, ys, statuses = np.zeros((len(q), family.n)), np.zeros((len(q), family.m)), []
    for i in range(len(q)):
        solver.update(q=q[i], l=l[i], u=u[i])
        solver.warm_start(x=np.zeros(family.n), y=np.zeros(family.m))
        res = solver.solve(raise_error=False)
        statuses.append(res.info.status)
        if res.info.status == "solved":
            xs[i], ys[i] = res.x, res.y
        if progress is not None:
            progress(i + 1)
    return xs, ys, statuses


class QPWarmStartProblem(ContextualProblem):
    """A parametric QP family as a one-step amortization problem: context -> a start (x, y), in the QP's own
    units; f = the ADMM iterations our batched core (OSQP's algorithm) needs from that start, in hundreds."""

    family = "qp_warm_start"

    def __init__(self, settings: ParametricQPSettings | None = None) -> None:
        self.settings = settings or ParametricQPSettings()
        self.qp_family = make_family(self.settings)
        self.context_dim = self.qp_family.context_dim
        self.solution_dim = self.qp_family.n + self.qp_family.m
        rng = np.random.default_rng(self.settings.seed + 7)
        x, y, _ = solve_family(self.qp_family, self.qp_family.sample_contexts(CALIBRATION_CONTEXTS, rng), 1e-6)
        sol = np.concatenate([x, y], axis=1)
        centre, spread = sol.mean(axis=0), sol.std(axis=0) + 1e-3
        self._solution_box = Box(torch.as_tensor(centre - SOLUTION_BOX_SPREADS * spread - 1.0, dtype=torch.float32),
                                 torch.as_tensor(centre + SOLUTION_BOX_SPREADS * spread + 1.0, dtype=torch.float32))

    @property
    def context_bounds(self) -> Box:
        f = self.qp_family
        return Box(torch.as_tensor(f.context_mean - f.context_scale, dtype=torch.float32),
                   torch.as_tensor(f.context_mean + f.context_scale, dtype=torch.float32))

    @property
    def solution_bounds(self) -> Box:
        return self._solution_box

    def sample_contexts(self, n: int, generator: torch.Generator, device: torch.device | str = "cpu") -> torch.Tensor:
        b = self.context_bounds
        u = torch.rand(n, self.context_dim, generator=generator, device=device)
        return b.low.to(device) + u * (b.high - b.low).to(device)

    def objective(self, y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Iterations / 100 of OSQP's algorithm from the start y, on each context's QP (not differentiable)."""
        self.check_contexts(x)
        self.check_solutions(y, x.shape[0])
        contexts = x.detach().double().cpu().numpy()
        qps = [self.qp_family.qp(c) for c in contexts]
        batch = OSQPBatch(qps, OSQPSettings(eps_abs=self.settings.eps, eps_rel=self.settings.eps, max_iter=4000))
        start = y.detach().double().cpu()
        batch.warm_start(start[:, : self.qp_family.n], start[:, self.qp_family.n:])
        return (batch.solve().iterations.to(y.dtype) / 100.0).to(y.device)

    def initial_guesses(self, x: torch.Tensor, restarts: int, generator: torch.Generator) -> torch.Tensor:
        return self.random_solutions((restarts, x.shape[0]), generator, x.device)
