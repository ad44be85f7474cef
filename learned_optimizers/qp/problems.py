"""Quadratic programs: minimize 0.5 x'Px + q'x subject to l <= Ax <= u.

* ``QP``: one problem, sparse (scipy) and validated on construction.
* ``QPBatch``: many problems as padded dense tensors on a torch device, with
  masks, ready for the batched ADMM core.
* the seven OSQP benchmark classes, generated as the OSQP benchmark suite does
  (random, eq, portfolio, control, lasso, huber, svm), each by size and seed;
* loaders for Maros-Meszaros ``.mat`` files and ``.npz`` files with the same keys.

Infinite bounds are stored as +/-inf. ``.mat`` files store them as +/-1e20,
which the loader converts.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import scipy.linalg as sla
import scipy.sparse as sp
import torch

from learned_optimizers.common.linalg import SparseBatch

#: |bound| at or above this in a data file means "no bound"
FILE_INFINITY = 1e20


class QPValidationError(ValueError):
    """A QP is malformed; the message names the field and what is wrong."""


@dataclass
class QP:
    P: sp.csc_matrix
    q: np.ndarray
    A: sp.csc_matrix
    l: np.ndarray
    u: np.ndarray
    name: str = "qp"
    r: float = 0.0  # constant term of the objective

    def __post_init__(self) -> None:
        for key in ("P", "q", "A", "l", "u"):  # converting would drop an imaginary part or fail obscurely
            value = getattr(self, key)
            dtype = value.dtype if hasattr(value, "dtype") else np.asarray(value).dtype
            if np.issubdtype(dtype, np.complexfloating):
                raise QPValidationError(f"QP {self.name!r}: {key} is complex ({dtype}); a QP's data must be real")
            if not (np.issubdtype(dtype, np.number) or np.issubdtype(dtype, np.bool_)):
                raise QPValidationError(f"QP {self.name!r}: {key} holds {dtype} values, not numbers")
        self.P = sp.csc_matrix(self.P, dtype=np.float64)
        self.A = sp.csc_matrix(self.A, dtype=np.float64)
        self.q = np.asarray(self.q, dtype=np.float64).reshape(-1)
        self.l = np.asarray(self.l, dtype=np.float64).reshape(-1)
        self.u = np.asarray(self.u, dtype=np.float64).reshape(-1)
        self.validate()

    @property
    def n(self) -> int:
        return self.P.shape[0]

    @property
    def m(self) -> int:
        return self.A.shape[0]

    def validate(self) -> None:
        n = self.q.shape[0]
        where = f"QP {self.name!r}"
        if self.P.shape != (n, n):
            raise QPValidationError(f"{where}: P must be {n}x{n} (q has {n} entries), got {self.P.shape[0]}x{self.P.shape[1]}")
        if self.A.shape[1] != n:
            raise QPValidationError(f"{where}: A must have {n} columns, got {self.A.shape[1]}")
        m = self.A.shape[0]
        for key, vec in (("l", self.l), ("u", self.u)):
            if vec.shape != (m,):
                raise QPValidationError(f"{where}: {key} must have {m} entries (one per row of A), got {vec.shape[0]}")
        for key, arr in (("P", self.P.data), ("q", self.q), ("A", self.A.data)):
            if not np.all(np.isfinite(arr)):
                raise QPValidationError(f"{where}: {key} contains NaN or inf")
        for key, vec in (("l", self.l), ("u", self.u)):
            if np.isnan(vec).any():
                raise QPValidationError(f"{where}: {key} contains NaN")
        bad = np.flatnonzero(self.l > self.u)
        if bad.size:
            i = bad[0]
            raise QPValidationError(f"{where}: l > u at row {i} ({self.l[i]:g} > {self.u[i]:g}); {bad.size} such rows")
        asym = abs(self.P - self.P.T)
        if asym.nnz and asym.max() > 1e-9 * max(1.0, abs(self.P).max()):
            raise QPValidationError(f"{where}: P must be symmetric (max |P - P'| = {asym.max():.3g})")

    def objective(self, x: np.ndarray) -> float:
        return float(0.5 * x @ (self.P @ x) + self.q @ x + self.r)

    def osqp_data(self) -> dict:
        """Arguments for the real ``osqp`` package (upper triangle of P)."""
        return {"P": sp.triu(self.P, format="csc"), "q": self.q, "A": self.A, "l": self.l, "u": self.u}


# ------------------------------------------------------------------ benchmark classes
def _sprandn(rng: np.random.Generator, rows: int, cols: int, density: float) -> sp.csc_matrix:
    return sp.random(rows, cols, density=density, format="csc", random_state=rng, data_rvs=rng.standard_normal)


def random_qp(n: int, seed: int) -> QP:
    """Random QP: m = 10n, P = MM' + 1e-2 I, density 0.15, l = -rand, u = rand."""
    rng = np.random.default_rng(seed)
    m = 10 * n
    M = _sprandn(rng, n, n, 0.15)
    P = (M @ M.T + 1e-2 * sp.eye(n)).tocsc()
    q = rng.standard_normal(n)
    A = _sprandn(rng, m, n, 0.15)
    return QP(P, q, A, -rng.random(m), rng.random(m), name=f"random-n{n}-s{seed}")


def eq_qp(n: int, seed: int) -> QP:
    """Equality-constrained QP: m = n/2 rows with l = u."""
    rng = np.random.default_rng(seed)
    m = max(1, n // 2)
    M = _sprandn(rng, n, n, 0.15)
    P = (M @ M.T + 1e-2 * sp.eye(n)).tocsc()
    q = rng.standard_normal(n)
    A = _sprandn(rng, m, n, 0.15)
    b = rng.standard_normal(m)
    return QP(P, q, A, b, b.copy(), name=f"eq-n{n}-s{seed}")


def portfolio(n: int, seed: int) -> QP:
    """Markowitz portfolio with n assets and k = max(1, n // 10) factors."""
    rng = np.random.default_rng(seed)
    k = max(1, n // 10)
    F = _sprandn(rng, n, k, 0.5)
    D = sp.diags(rng.random(n) * np.sqrt(k))
    mu = rng.standard_normal(n)
    P = sp.block_diag((2 * D, 2 * sp.eye(k)), format="csc")
    q = np.concatenate([-mu, np.zeros(k)])
    A = sp.vstack([
        sp.hstack([sp.csc_matrix(np.ones((1, n))), sp.csc_matrix((1, k))]),
        sp.hstack([F.T, -sp.eye(k)]),
        sp.hstack([sp.eye(n), sp.csc_matrix((n, k))]),
    ]).tocsc()
    l = np.concatenate([[1.0], np.zeros(k), np.zeros(n)])
    u = np.concatenate([[1.0], np.zeros(k), np.ones(n)])
    return QP(P, q, A, l, u, name=f"portfolio-n{n}-s{seed}")


def control(n: int, seed: int, horizon: int = 10) -> QP:
    """Linear MPC: n states, n/2 inputs, horizon 10, box constraints, DARE terminal cost."""
    rng = np.random.default_rng(seed)
    nx, nu = n, max(1, n // 2)
    Ad = np.eye(nx) + 0.1 * rng.standard_normal((nx, nx))
    lam, V = np.linalg.eig(Ad)
    lam = np.where(np.abs(lam) < 1 - 1e-2, lam, lam / (np.abs(lam) + 1e-2))
    Ad = (V @ np.diag(lam) @ np.linalg.inv(V)).real
    B = rng.standard_normal((nx, nu))
    R = 0.1 * np.eye(nu)
    Q = np.diag(rng.random(nx) * (rng.random(nx) < 0.7))
    QN = sla.solve_discrete_are(Ad, B, Q, R)
    QN = QN @ QN.T
    umax = rng.random(nu)
    xmax = 1.0 + rng.random(nx)
    x0 = (rng.random(nx) - 0.5) * xmax  # inside half the state box
    T = horizon
    P = 2.0 * sp.block_diag([sp.kron(sp.eye(T), Q), QN, sp.kron(sp.eye(T), R)], format="csc")
    q = np.zeros((T + 1) * nx + T * nu)
    Ax = sp.kron(sp.eye(T + 1), -sp.eye(nx)) + sp.kron(sp.eye(T + 1, k=-1), Ad)
    Au = sp.kron(sp.vstack([sp.csc_matrix((1, T)), sp.eye(T)]), B)
    Aeq = sp.hstack([Ax, Au])
    beq = np.zeros((T + 1) * nx)
    beq[:nx] = -x0
    A = sp.vstack([Aeq, sp.eye((T + 1) * nx + T * nu)]).tocsc()
    l = np.concatenate([beq, np.tile(-xmax, T + 1), np.tile(-umax, T)])
    u = np.concatenate([beq, np.tile(xmax, T + 1), np.tile(umax, T)])
    return QP(P, q, A, l, u, name=f"control-n{n}-s{seed}")


def lasso(n: int, seed: int) -> QP:
    """Lasso with n features and 100n data points, as a QP in (x, y, t)."""
    rng = np.random.default_rng(seed)
    m = 100 * n
    Ad = _sprandn(rng, m, n, 0.5)
    x_true = (rng.random(n) > 0.5) * rng.standard_normal(n) / np.sqrt(n)
    b = Ad @ x_true + rng.standard_normal(m)
    lam = 0.2 * np.linalg.norm(Ad.T @ b, np.inf)
    P = sp.block_diag((sp.csc_matrix((n, n)), 2 * sp.eye(m), sp.csc_matrix((n, n))), format="csc")
    q = np.concatenate([np.zeros(m + n), lam * np.ones(n)])
    In, Onm = sp.eye(n), sp.csc_matrix((n, m))
    A = sp.vstack([
        sp.hstack([Ad, -sp.eye(m), sp.csc_matrix((m, n))]),
        sp.hstack([In, Onm, -In]),
        sp.hstack([In, Onm, In]),
    ]).tocsc()
    l = np.concatenate([b, -np.inf * np.ones(n), np.zeros(n)])
    u = np.concatenate([b, np.zeros(n), np.inf * np.ones(n)])
    return QP(P, q, A, l, u, name=f"lasso-n{n}-s{seed}")


def huber(n: int, seed: int) -> QP:
    """Huber regression with n features and 100n data points (5% outliers)."""
    rng = np.random.default_rng(seed)
    m = 100 * n
    Ad = _sprandn(rng, m, n, 0.5)
    x_true = rng.standard_normal(n) / np.sqrt(n)
    inlier = (rng.random(m) < 0.95).astype(float)
    b = Ad @ x_true + 0.5 * rng.standard_normal(m) * inlier + 10.0 * rng.random(m) * (1 - inlier)
    Im = sp.eye(m)
    P = sp.block_diag((sp.csc_matrix((n, n)), Im, sp.csc_matrix((2 * m, 2 * m))), format="csc")
    q = np.concatenate([np.zeros(n + m), np.ones(2 * m)])
    A = sp.bmat([[Ad, -Im, -Im, Im], [None, None, Im, None], [None, None, None, Im]], format="csc")
    l = np.concatenate([b, np.zeros(2 * m)])
    u = np.concatenate([b, np.inf * np.ones(2 * m)])
    return QP(P, q, A, l, u, name=f"huber-n{n}-s{seed}")


def svm(n: int, seed: int) -> QP:
    """Support vector machine with n features and 100n data points."""
    rng = np.random.default_rng(seed)
    m = 100 * n
    N = m // 2
    b_svm = np.concatenate([np.ones(N), -np.ones(N)])
    upper = _sprandn(rng, N, n, 0.15)
    lower = _sprandn(rng, N, n, 0.15)
    A_svm = sp.vstack([
        upper / np.sqrt(n) + (upper != 0).astype(float) / n,
        lower / np.sqrt(n) - (lower != 0).astype(float) / n,
    ]).tocsc()
    P = sp.block_diag((sp.eye(n), sp.csc_matrix((m, m))), format="csc")
    q = np.concatenate([np.zeros(n), 0.5 * np.ones(m)])
    A = sp.vstack([
        sp.hstack([sp.diags(b_svm) @ A_svm, -sp.eye(m)]),
        sp.hstack([sp.csc_matrix((m, n)), sp.eye(m)]),
    ]).tocsc()
    l = np.concatenate([-np.inf * np.ones(m), np.zeros(m)])
    u = np.concatenate([-np.ones(m), np.inf * np.ones(m)])
    return QP(P, q, A, l, u, name=f"svm-n{n}-s{seed}")


#: class name -> generator(n, seed)
QP_CLASSES: dict[str, Callable[[int, int], QP]] = {
    "random": random_qp,
    "eq": eq_qp,
    "portfolio": portfolio,
    "control": control,
    "lasso": lasso,
    "huber": huber,
    "svm": svm,
}


def generate(qp_class: str, n: int, seed: int) -> QP:
    if qp_class not in QP_CLASSES:
        raise ValueError(f"unknown QP class {qp_class!r}; allowed: {', '.join(QP_CLASSES)}")
    if n < 1:
        raise ValueError(f"QP size n={n}: must be >= 1")
    return QP_CLASSES[qp_class](n, seed)


# ------------------------------------------------------------------ files
_REQUIRED = ("P", "q", "A", "l", "u")
#: the arrays of a CSC matrix in an ``.npz`` QP file, as ``<key>_<part>``
_SPARSE_PARTS = ("data", "indices", "indptr", "shape")


def _bounds_from_file(v: np.ndarray) -> np.ndarray:
    """+/-1e20 means no bound. Files hold it rounded (9.999999999999998e19 in
    QPILOTNO), so compare with a relative margin: a finite 1e20 bound would make
    the duality gap hinge on round-off in y."""
    v = np.asarray(v, dtype=np.float64).reshape(-1).copy()
    limit = FILE_INFINITY * (1.0 - 1e-9)
    v[v >= limit] = np.inf
    v[v <= -limit] = -np.inf
    return v


def load_qp(path: str | Path) -> QP:
    """Read a ``.mat`` (Maros-Meszaros layout) or ``.npz`` file with keys P, q, A, l, u (and optional r).

    Every way a file can be unreadable (missing, a directory, empty, truncated, incomplete sparse parts,
    an ``r`` that is not one number, complex data) is a ``QPValidationError`` naming the file."""
    path = Path(path)
    if path.suffix not in (".mat", ".npz"):
        raise QPValidationError(f"{str(path)!r}: unsupported file type {path.suffix!r}; allowed: .mat, .npz")
    if not path.is_file():
        what = "a directory" if path.is_dir() else "missing"
        raise QPValidationError(f"{str(path)!r} is {what}, not a {path.suffix} QP file")
    if path.stat().st_size == 0:
        raise QPValidationError(f"{str(path)!r} is empty (0 bytes), not a {path.suffix} QP file")
    data = _read_mat(path) if path.suffix == ".mat" else _read_npz(path)
    missing = [k for k in _REQUIRED if k not in data]
    if missing:
        raise QPValidationError(f"{str(path)!r}: missing keys {', '.join(missing)}; a QP file needs P, q, A, l, u")
    r = 0.0
    if "r" in data:
        values = np.asarray(data["r"]).reshape(-1)
        if values.size != 1 or not np.issubdtype(values.dtype, np.number) or np.iscomplexobj(values):
            raise QPValidationError(f"{str(path)!r}: r (the objective's constant) must be one real number, "
                                    f"got {values.size} values of {values.dtype}")
        r = float(values[0])
    try:
        return QP(data["P"], data["q"], data["A"], _bounds_from_file(data["l"]), _bounds_from_file(data["u"]),
                  name=path.stem, r=r)
    except QPValidationError as err:
        raise QPValidationError(f"{str(path)!r}: {err}") from None
    except (ValueError, TypeError) as err:  # e.g. a field that is not an array of numbers
        raise QPValidationError(f"{str(path)!r}: not a QP ({err.__class__.__name__}: {str(err)[:200]})") from None


def _read_mat(path: Path) -> dict:
    from scipy.io import loadmat

    try:
        return loadmat(str(path))
    except Exception as err:  # scipy raises ValueError, TypeError, OSError or struct errors on damaged files
        raise QPValidationError(f"{str(path)!r} is not a readable .mat file (truncated or damaged?): "
                                f"{err.__class__.__name__}: {str(err)[:200]}") from None


def _read_npz(path: Path) -> dict:
    try:
        with np.load(path, allow_pickle=False) as f:
            data = {k: f[k] for k in f.files}
    except Exception as err:  # BadZipFile, EOFError, ValueError (pickled objects refused), ...
        raise QPValidationError(f"{str(path)!r} is not a readable .npz file (truncated, damaged, or holding "
                                f"pickled objects?): {err.__class__.__name__}: {str(err)[:200]}") from None
    for key in ("P", "A"):  # sparse matrices stored as (data, indices, indptr, shape)
        parts = [f"{key}_{p}" for p in _SPARSE_PARTS]
        present = [p for p in parts if p in data]
        if not present:
            continue
        if len(present) < len(parts):
            raise QPValidationError(f"{str(path)!r}: sparse {key} is incomplete: has {', '.join(present)}, "
                                    f"lacks {', '.join(p for p in parts if p not in data)}")
        try:
            shape = tuple(int(v) for v in np.asarray(data[f"{key}_shape"]).reshape(-1))
            data[key] = sp.csc_matrix((data[f"{key}_data"], data[f"{key}_indices"], data[f"{key}_indptr"]), shape=shape)
            data[key].check_format(full_check=True)
        except (ValueError, TypeError, IndexError) as err:
            raise QPValidationError(f"{str(path)!r}: sparse {key} is malformed ({str(err)[:200]})") from None
    return data


def save_npz(qp: QP, path: str | Path) -> None:
    """Write a QP in the ``.npz`` layout that ``load_qp`` reads."""
    arrays = {"q": qp.q, "l": qp.l, "u": qp.u, "r": np.array([qp.r])}
    for key, mat in (("P", qp.P), ("A", qp.A)):
        arrays.update({f"{key}_data": mat.data, f"{key}_indices": mat.indices, f"{key}_indptr": mat.indptr,
                       f"{key}_shape": np.array(mat.shape)})
    np.savez(path, **arrays)


# ------------------------------------------------------------------ batches
@dataclass
class QPBatch:
    """Problems padded to common sizes on one device: padded variables are inert
    (P_ii = 1, no constraints, q = 0, so x_i = 0) and padded rows are free
    (l = -inf, u = inf). P and A are batched sparse matrices."""

    P: SparseBatch  # (B, n, n)
    q: torch.Tensor  # (B, n)
    A: SparseBatch  # (B, m, n)
    l: torch.Tensor  # (B, m)
    u: torch.Tensor  # (B, m)
    var_mask: torch.Tensor  # (B, n) bool
    con_mask: torch.Tensor  # (B, m) bool
    names: list[str]

    @property
    def size(self) -> int:
        return self.q.shape[0]

    @property
    def n(self) -> int:
        return self.q.shape[1]

    @property
    def m(self) -> int:
        return self.l.shape[1]

    @classmethod
    def from_qps(cls, qps: list[QP], device: torch.device | str = "cpu", dtype: torch.dtype = torch.float64,
                 n: int | None = None, m: int | None = None) -> "QPBatch":
        """Pad to the largest problem, or to given sizes ``n`` and ``m`` (a live batch's)."""
        if not qps:
            raise ValueError("a QP batch needs at least one problem")
        B, n_max, m_max = len(qps), max(p.n for p in qps), max(max(p.m for p in qps), 1)
        if (n is not None and n < n_max) or (m is not None and m < m_max):
            raise ValueError(f"cannot pad problems of sizes up to n={n_max}, m={m_max} to n={n}, m={m}")
        n, m = n or n_max, m or m_max
        q = np.zeros((B, n))
        l = np.full((B, m), -np.inf)
        u = np.full((B, m), np.inf)
        var_mask = np.zeros((B, n), dtype=bool)
        con_mask = np.zeros((B, m), dtype=bool)
        Ps, As = [], []
        for b, p in enumerate(qps):
            Ps.append(sp.block_diag((p.P, sp.eye(n - p.n))) if n > p.n else p.P)  # inert padded variables
            A = sp.coo_matrix(p.A)
            As.append(sp.coo_matrix((A.data, (A.row, A.col)), shape=(m, n)))
            q[b, : p.n], l[b, : p.m], u[b, : p.m] = p.q, p.l, p.u
            var_mask[b, : p.n], con_mask[b, : p.m] = True, True
        t = lambda a: torch.as_tensor(a, dtype=dtype, device=device)  # noqa: E731
        return cls(
            SparseBatch.from_scipy(Ps, n, n, device, dtype), t(q), SparseBatch.from_scipy(As, m, n, device, dtype),
            t(l), t(u), torch.as_tensor(var_mask, device=device), torch.as_tensor(con_mask, device=device),
            [p.name for p in qps],
        )
