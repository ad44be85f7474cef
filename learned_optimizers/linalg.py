"""Batched matrices and linear-system backends for the ADMM core.

The OSQP iteration (``learned_optimizers.admm``) only needs a handful of
operations on P and A: products, transposed products, row/column inf-norms and
diagonal scaling. ``DenseBatch`` does them with batched dense tensors (fast for
many small problems); ``SparseBatch`` with COO index arithmetic (for problems
too large to store densely). The reduced KKT system

    (P + sigma I + A' diag(rho) A) x = rhs

is solved by a backend: ``DenseCholesky`` (batched Cholesky) or ``SparseLU``
(one sparse factorization of the quasi-definite KKT matrix per problem, on the
CPU). The ADMM code is the same for every combination.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla
import torch


class BatchMatrix(ABC):
    """A batch of B matrices of shape (rows, cols), possibly padded."""

    rows: int
    cols: int

    @abstractmethod
    def mv(self, x: torch.Tensor) -> torch.Tensor:
        """M x for x of shape (B, cols)."""

    @abstractmethod
    def rmv(self, y: torch.Tensor) -> torch.Tensor:
        """M' y for y of shape (B, rows)."""

    @abstractmethod
    def col_norm_inf(self) -> torch.Tensor:
        """(B, cols) max |M_ij| over i."""

    @abstractmethod
    def row_norm_inf(self) -> torch.Tensor:
        """(B, rows) max |M_ij| over j."""

    @abstractmethod
    def scaled(self, row: torch.Tensor | None, col: torch.Tensor | None, factor: torch.Tensor | None = None) -> "BatchMatrix":
        """diag(row) M diag(col) * factor, each optional (per problem)."""

    @abstractmethod
    def dense(self) -> torch.Tensor:
        """(B, rows, cols) dense copy."""

    @abstractmethod
    def scipy(self, b: int) -> sp.csc_matrix:
        """Problem b as a scipy sparse matrix."""


class DenseBatch(BatchMatrix):
    def __init__(self, data: torch.Tensor) -> None:
        self.data = data
        self.rows, self.cols = data.shape[1], data.shape[2]

    def mv(self, x: torch.Tensor) -> torch.Tensor:
        return torch.bmm(self.data, x.unsqueeze(2)).squeeze(2)

    def rmv(self, y: torch.Tensor) -> torch.Tensor:
        return torch.bmm(y.unsqueeze(1), self.data).squeeze(1)

    def col_norm_inf(self) -> torch.Tensor:
        if self.rows == 0:
            return self.data.new_zeros(self.data.shape[0], self.cols)
        return self.data.abs().amax(dim=1)

    def row_norm_inf(self) -> torch.Tensor:
        if self.cols == 0:
            return self.data.new_zeros(self.data.shape[0], self.rows)
        return self.data.abs().amax(dim=2)

    def scaled(self, row=None, col=None, factor=None) -> "DenseBatch":
        d = self.data
        if row is not None:
            d = row.unsqueeze(2) * d
        if col is not None:
            d = d * col.unsqueeze(1)
        if factor is not None:
            d = d * factor.view(-1, 1, 1)
        return DenseBatch(d)

    def dense(self) -> torch.Tensor:
        return self.data

    def scipy(self, b: int) -> sp.csc_matrix:
        return sp.csc_matrix(self.data[b].cpu().numpy())


class SparseBatch(BatchMatrix):
    """COO storage: entry k is values[k] at (batch[k], row[k], col[k])."""

    def __init__(self, batch: torch.Tensor, row: torch.Tensor, col: torch.Tensor, values: torch.Tensor,
                 size: int, rows: int, cols: int) -> None:
        self.batch, self.row, self.col, self.values = batch, row, col, values
        self.size, self.rows, self.cols = size, rows, cols

    @classmethod
    def from_scipy(cls, mats: list[sp.spmatrix], rows: int, cols: int, device, dtype) -> "SparseBatch":
        parts = [sp.coo_matrix(m) for m in mats]
        cat = lambda xs, dt: torch.as_tensor(np.concatenate(xs) if xs else np.zeros(0), dtype=dt, device=device)  # noqa: E731
        return cls(
            cat([np.full(p.nnz, b) for b, p in enumerate(parts)], torch.long),
            cat([p.row for p in parts], torch.long),
            cat([p.col for p in parts], torch.long),
            cat([p.data for p in parts], dtype),
            len(mats), rows, cols,
        )

    def _reduce(self, out_len: int, index: torch.Tensor, src: torch.Tensor, op: str) -> torch.Tensor:
        out = src.new_zeros(self.size * out_len)
        if op == "sum":
            out.index_add_(0, index, src)
        else:
            out.scatter_reduce_(0, index, src, reduce="amax", include_self=True)
        return out.view(self.size, out_len)

    def mv(self, x: torch.Tensor) -> torch.Tensor:
        src = self.values * x[self.batch, self.col]
        return self._reduce(self.rows, self.batch * self.rows + self.row, src, "sum")

    def rmv(self, y: torch.Tensor) -> torch.Tensor:
        src = self.values * y[self.batch, self.row]
        return self._reduce(self.cols, self.batch * self.cols + self.col, src, "sum")

    def col_norm_inf(self) -> torch.Tensor:
        return self._reduce(self.cols, self.batch * self.cols + self.col, self.values.abs(), "amax")

    def row_norm_inf(self) -> torch.Tensor:
        return self._reduce(self.rows, self.batch * self.rows + self.row, self.values.abs(), "amax")

    def scaled(self, row=None, col=None, factor=None) -> "SparseBatch":
        v = self.values
        if row is not None:
            v = v * row[self.batch, self.row]
        if col is not None:
            v = v * col[self.batch, self.col]
        if factor is not None:
            v = v * factor[self.batch]
        return SparseBatch(self.batch, self.row, self.col, v, self.size, self.rows, self.cols)

    def dense(self) -> torch.Tensor:
        out = self.values.new_zeros(self.size, self.rows, self.cols)
        out.index_put_((self.batch, self.row, self.col), self.values, accumulate=True)
        return out

    def scipy(self, b: int) -> sp.csc_matrix:
        k = self.batch == b
        return sp.csc_matrix(
            (self.values[k].cpu().numpy(), (self.row[k].cpu().numpy(), self.col[k].cpu().numpy())), shape=(self.rows, self.cols)
        )


# ------------------------------------------------------------------ linear systems
class LinearSystem(ABC):
    """Solves (P + sigma I + A' diag(rho) A) x = rhs for every problem of a batch."""

    def __init__(self, P: BatchMatrix, A: BatchMatrix, sigma: float) -> None:
        self.P, self.A, self.sigma = P, A, sigma

    @abstractmethod
    def factor(self, rho_vec: torch.Tensor, which: torch.Tensor) -> torch.Tensor:
        """(Re)factor the problems where ``which`` is true; returns a (B,) bool tensor, false
        where the matrix is not positive definite (a non-convex problem)."""

    @abstractmethod
    def solve(self, rhs: torch.Tensor) -> torch.Tensor:
        """x for every problem, shape (B, n)."""


class DenseCholesky(LinearSystem):
    """Batched dense Cholesky of the reduced system: one ``cholesky_ex`` for the whole batch."""

    def __init__(self, P: BatchMatrix, A: BatchMatrix, sigma: float) -> None:
        super().__init__(P, A, sigma)
        self.Pd, self.Ad = P.dense(), A.dense()
        self.eye = torch.eye(P.rows, dtype=self.Pd.dtype, device=self.Pd.device)
        self.L = torch.zeros_like(self.Pd)

    def factor(self, rho_vec: torch.Tensor, which: torch.Tensor) -> torch.Tensor:
        idx = which.nonzero().squeeze(1)
        ok = torch.ones_like(which)
        if idx.numel() == 0:
            return ok
        Ad = self.Ad[idx]
        K = self.Pd[idx] + self.sigma * self.eye + Ad.transpose(1, 2) @ (rho_vec[idx].unsqueeze(2) * Ad)
        L, info = torch.linalg.cholesky_ex(K)
        self.L[idx] = L
        ok[idx] = info == 0
        return ok

    def solve(self, rhs: torch.Tensor) -> torch.Tensor:
        return torch.cholesky_solve(rhs.unsqueeze(2), self.L).squeeze(2)


class SparseLU(LinearSystem):
    """Sparse LU of the quasi-definite KKT matrix [[P + sigma I, A'], [A, -diag(1/rho)]] per problem.

    For problems too large to densify. The factorization runs on the CPU in
    float64 whatever the batch's device; solves move the right-hand side there.
    """

    def __init__(self, P: BatchMatrix, A: BatchMatrix, sigma: float) -> None:
        super().__init__(P, A, sigma)
        self.Ps = [P.scipy(b) for b in range(self._size(P))]
        self.As = [A.scipy(b) for b in range(self._size(P))]
        self.lu: list = [None] * len(self.Ps)

    @staticmethod
    def _size(M: BatchMatrix) -> int:
        return M.size if isinstance(M, SparseBatch) else M.dense().shape[0]

    def factor(self, rho_vec: torch.Tensor, which: torch.Tensor) -> torch.Tensor:
        ok = torch.ones_like(which)
        rho = rho_vec.detach().cpu().numpy()
        for b in which.nonzero().squeeze(1).tolist():  # one factorization per changed problem
            P, A = self.Ps[b], self.As[b]
            n = P.shape[0]
            kkt = sp.bmat([[P + self.sigma * sp.eye(n), A.T], [A, -sp.diags(1.0 / rho[b])]], format="csc")
            try:
                lu = spla.splu(kkt, permc_spec="COLAMD")
            except RuntimeError:  # exactly singular
                ok[b] = False
                continue
            # LU gives no inertia: a non-convex P shows up later as diverging residuals
            self.lu[b] = lu
            ok[b] = bool(np.isfinite(lu.U.diagonal()).all())
        return ok

    def solve(self, rhs: torch.Tensor) -> torch.Tensor:
        out = torch.empty_like(rhs)
        host = rhs.detach().cpu().numpy()
        for b, lu in enumerate(self.lu):
            n, m = self.Ps[b].shape[0], self.As[b].shape[0]
            if lu is None:
                out[b] = 0.0
                continue
            sol = lu.solve(np.concatenate([host[b], np.zeros(m)]))
            out[b] = torch.as_tensor(sol[:n], dtype=rhs.dtype)
        return out
