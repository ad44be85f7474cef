"""A parametric QP family in SCS's form, so a warm start predicted for osqp also starts the real ``scs``.

osqp solves  min 1/2 x'Px + q'x  s.t.  l <= Ax <= u  with one dual y per row (y > 0 where the upper bound is
active, y < 0 where the lower one is). SCS solves  min 1/2 x'Px + c'x  s.t.  A_s x + s = b, s in K. The rows map
once per family (the family's matrices are fixed):

* a row with l = u for every context (same constant, same context map) -> the zero cone: A_i x + s_i = u_i;
* every other row with a finite u -> a nonnegative row  A_i x + s = u_i  (its SCS dual is max(y_i, 0));
* every other row with a finite l -> a nonnegative row -A_i x + s = -l_i (its SCS dual is max(-y_i, 0)).

So c = q, b follows (l, u) per context, and osqp's (x, y) becomes SCS's (x, y_s, s) with s = proj_K(b - A_s x)
(the slack of the prediction, on the cone). SCS's y maps back as y = y_eq, y_upper - y_lower.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp

from learned_optimizers.qp.parametric import ParametricQPFamily
from learned_optimizers.qp.problems import QPValidationError

#: a bound at or past this size is infinite (osqp's own infinity is 1e30)
INFINITE_BOUND = 1e20


class SCSForm:
    """The row map of one family: ``data``/``cone`` for ``scs.SCS``, ``b_c`` per context, and starts both ways."""

    def __init__(self, family: ParametricQPFamily) -> None:
        self.family = family
        eq = (family.l0 == family.u0) & np.all(family.Gl == family.Gu, axis=1)
        upper = ~eq & (np.abs(family.u0) < INFINITE_BOUND)
        lower = ~eq & (np.abs(family.l0) < INFINITE_BOUND)
        self.eq_rows, self.upper_rows, self.lower_rows = (np.flatnonzero(mask) for mask in (eq, upper, lower))
        if not (self.eq_rows.size or self.upper_rows.size or self.lower_rows.size):
            raise QPValidationError(f"family {family.name!r}: no row has a finite bound; SCS needs at least one "
                                    "constraint row")
        A = sp.csr_matrix(family.A)
        self.A = sp.vstack([A[self.eq_rows], A[self.upper_rows], -A[self.lower_rows]], format="csc")
        self.cone = {"z": int(self.eq_rows.size), "l": int(self.upper_rows.size + self.lower_rows.size)}
        self.data = {"P": sp.triu(family.P, format="csc"), "A": self.A}

    @property
    def rows(self) -> int:
        return self.A.shape[0]

    def b_c(self, contexts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(b, c) of each context, (k, rows) and (k, n); a malformed context is the family's named error."""
        q, l, u = self.family.data(contexts)
        b = np.concatenate([u[:, self.eq_rows], u[:, self.upper_rows], -l[:, self.lower_rows]], axis=1)
        return b, q

    def start(self, x: np.ndarray, y: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """SCS's (x, y, s) from osqp's (x, y) for data b: the duals split by sign, s the prediction's slack on K."""
        x, y = np.atleast_2d(x), np.atleast_2d(y)
        ys = np.concatenate([y[:, self.eq_rows], np.maximum(y[:, self.upper_rows], 0.0),
                             np.maximum(-y[:, self.lower_rows], 0.0)], axis=1)
        s = np.atleast_2d(b) - (self.A @ x.T).T
        s[:, : self.cone["z"]] = 0.0
        np.maximum(s[:, self.cone["z"]:], 0.0, out=s[:, self.cone["z"]:])
        return x, ys, s

    def osqp_dual(self, y_scs: np.ndarray) -> np.ndarray:
        """osqp's y (one per row of the family's A) from SCS's dual."""
        y_scs = np.atleast_2d(y_scs)
        y = np.zeros((y_scs.shape[0], self.family.m))
        z, k = self.cone["z"], self.upper_rows.size
        y[:, self.eq_rows] = y_scs[:, :z]
        y[:, self.upper_rows] += y_scs[:, z: z + k]
        y[:, self.lower_rows] -= y_scs[:, z + k:]
        return y

    def solver(self, context: np.ndarray, **settings: Any) -> Any:
        """An ``scs.SCS`` set up on this family at ``context`` (later contexts go through ``update``)."""
        import scs

        b, c = self.b_c(context)
        return scs.SCS({**self.data, "b": b[0], "c": c[0]}, self.cone, **{"verbose": False, **settings})
