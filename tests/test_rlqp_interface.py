"""RLQP behind osqp's interface: the same calls as the real osqp, checked against it on the same problems."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import osqp
import pytest
import scipy.sparse as sp
import torch

from learned_optimizers.qp.interface import RLQP
from learned_optimizers.qp.problems import QPValidationError, generate

EPS = 1e-6


def osqp_solve(qp, **data):
    solver = osqp.OSQP()
    args = {**qp.osqp_data(), **data}
    solver.setup(**args, eps_abs=EPS, eps_rel=EPS, verbose=False, polishing=False)
    return solver, solver.solve()


@pytest.fixture(scope="module")
def qp():
    return generate("random", 15, seed=3)


def test_setup_and_solve_match_the_real_osqp(qp):
    solver = RLQP(policy="shipped")
    solver.setup(sp.triu(qp.P, format="csc"), qp.q, qp.A, qp.l, qp.u, eps_abs=EPS, eps_rel=EPS, verbose=False)
    res = solver.solve()
    _, ref = osqp_solve(qp)
    assert res.info.status == ref.info.status == "solved"
    assert res.x.shape == (qp.n,) and res.y.shape == (qp.m,)  # the problem's own sizes, not padded
    np.testing.assert_allclose(res.x, ref.x, atol=1e-3 * max(1.0, np.abs(ref.x).max()))
    assert res.info.obj_val == pytest.approx(ref.info.obj_val, rel=1e-4, abs=1e-6)
    assert res.info.iter > 0 and res.info.solve_time > 0 and res.info.run_time >= res.info.solve_time


def test_p_as_upper_triangle_full_numpy_or_torch_is_the_same_problem(qp):
    results = []
    for P, A in [(sp.triu(qp.P, format="csc"), qp.A), (qp.P, qp.A), (qp.P.toarray(), qp.A.toarray()),
                 (torch.as_tensor(qp.P.toarray()), torch.as_tensor(qp.A.toarray()))]:
        solver = RLQP()
        solver.setup(P, qp.q, A, qp.l, qp.u)
        results.append(solver.solve())
    for r in results[1:]:
        np.testing.assert_array_equal(r.x, results[0].x)
        assert r.info.iter == results[0].info.iter


def test_update_follows_osqps_semantics(qp):
    rng = np.random.default_rng(0)
    solver = RLQP()
    solver.setup(sp.triu(qp.P, format="csc"), qp.q, qp.A, qp.l, qp.u, eps_abs=EPS, eps_rel=EPS)
    real, _ = osqp_solve(qp)
    q2 = qp.q + 0.1 * rng.standard_normal(qp.n)
    upper = sp.triu(qp.P, format="csc")
    Px = upper.data * (1.0 + 0.1 * rng.random(upper.nnz))  # new nonzeros of P's upper triangle, osqp's order
    Ax = qp.A.data * (1.0 + 0.1 * rng.random(qp.A.nnz))
    solver.update(q=q2, Px=Px, Ax=Ax)
    real.update(q=q2, Px=Px, Ax=Ax)
    res, ref = solver.solve(), real.solve()
    assert res.info.status == ref.info.status == "solved"
    np.testing.assert_allclose(res.x, ref.x, atol=1e-3 * max(1.0, np.abs(ref.x).max()))


def test_a_warm_start_at_the_solution_stops_at_the_first_termination_check(qp):
    _, ref = osqp_solve(qp)
    solver = RLQP()
    solver.setup(sp.triu(qp.P, format="csc"), qp.q, qp.A, qp.l, qp.u, eps_abs=EPS, eps_rel=EPS)
    cold = solver.solve()
    solver.warm_start(x=ref.x, y=ref.y)
    warm = solver.solve()
    assert warm.info.status == "solved" and warm.info.iter == solver.settings.osqp.check_termination < cold.info.iter


def test_the_tolerance_defaults_to_the_policys_training_tolerance(qp):
    solver = RLQP()
    solver.setup(qp.P, qp.q, qp.A, qp.l, qp.u)
    trained = solver.policy.metadata["eps"]
    assert solver.settings.osqp.eps_abs == solver.settings.osqp.eps_rel == trained


def test_update_settings_changes_the_solve_as_a_setup_with_those_settings_would():
    qp = generate("random", 30, seed=1)  # a problem whose iterations differ between the two tolerances
    tight, loose = RLQP(), RLQP()
    tight.setup(qp.P, qp.q, qp.A, qp.l, qp.u, eps_abs=1e-8, eps_rel=1e-8)
    loose.setup(qp.P, qp.q, qp.A, qp.l, qp.u, eps_abs=1e-3, eps_rel=1e-3)
    strict = tight.solve().info.iter
    tight.update_settings(eps_abs=1e-3, eps_rel=1e-3)
    relaxed = tight.solve()
    assert relaxed.info.status == "solved" and relaxed.info.iter == loose.solve().info.iter < strict
    with pytest.raises(ValueError, match=r"unknown settings \['tol'\]"):
        tight.update_settings(tol=1e-3)


def test_the_batched_solver_takes_a_single_qp(qp):
    from learned_optimizers.qp.rlqp import SHIPPED_POLICY, RhoPolicy, RLQPSolver

    single = RLQPSolver(RhoPolicy.load(SHIPPED_POLICY)).solve(qp)
    listed = RLQPSolver(RhoPolicy.load(SHIPPED_POLICY)).solve([qp])
    assert single.iterations.tolist() == listed.iterations.tolist() and single.status_labels() == ["solved"]


def test_bad_input_is_named(qp):
    solver = RLQP()
    with pytest.raises(RuntimeError, match="call setup"):
        solver.solve()
    with pytest.raises(ValueError, match=r"unknown settings \['eps'\]; allowed: .*eps_abs"):
        solver.setup(qp.P, qp.q, qp.A, qp.l, qp.u, eps=1e-3)
    with pytest.raises(QPValidationError, match="q must have 15 entries, got 3"):
        solver.setup(qp.P, np.ones(3), qp.A, qp.l, qp.u)
    with pytest.raises(QPValidationError, match="l > u at row 0"):
        solver.setup(qp.P, qp.q, qp.A, qp.u + 1.0, qp.u)
    solver.setup(qp.P, qp.q, qp.A, qp.l, qp.u)
    with pytest.raises(QPValidationError, match="x contains NaN or inf"):
        solver.warm_start(x=np.full(qp.n, np.nan))
    with pytest.raises(QPValidationError, match="y must have 150 entries, got 2"):
        solver.warm_start(y=np.zeros(2))
    with pytest.raises(QPValidationError, match="q contains NaN"):
        solver.update(q=np.full(qp.n, np.nan))
    assert solver.solve().info.status == "solved"  # the refused update left the problem as it was
    bad = qp.P.toarray()
    bad[0, 1] += 1.0  # full but not symmetric
    with pytest.raises(QPValidationError, match="P must be symmetric"):
        solver.setup(bad, qp.q, qp.A, qp.l, qp.u)


def test_the_interface_imports_neither_gymnasium_nor_sb3():
    code = ("import sys, learned_optimizers.qp.interface as i; i.RLQP(); "
            "print(sorted(m for m in ('gymnasium', 'stable_baselines3') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
