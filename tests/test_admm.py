"""The batched OSQP core against the real ``osqp`` package, same settings, same problems."""

from dataclasses import replace
from pathlib import Path

import numpy as np
import osqp
import pytest
import scipy.sparse as sp
import torch

from learned_optimizers.qp.admm import OSQPBatch, OSQPSettings, solve_qps
from learned_optimizers.common.linalg import SparseBatch
from learned_optimizers.qp.problems import QP, QPBatch, QPValidationError, generate, load_qp, save_npz

MAROS = Path(__file__).resolve().parent / "data" / "maros_meszaros"
SETTINGS = OSQPSettings()
# every class at small sizes; 5 seeds each
CASES = [("random", 10), ("random", 20), ("eq", 10), ("eq", 30), ("portfolio", 20), ("control", 4), ("lasso", 2),
         ("huber", 1), ("svm", 2)]


def reference(qp: QP, settings: OSQPSettings = SETTINGS):
    solver = osqp.OSQP()
    solver.setup(**qp.osqp_data(), **settings.osqp_kwargs())
    return solver.solve(raise_error=False)


def test_matches_real_osqp_on_every_class():
    rows = []
    for qp_class, n in CASES:
        qps = [generate(qp_class, n, seed) for seed in range(100, 105)]
        ours = solve_qps(qps, SETTINGS)
        for i, qp in enumerate(qps):
            ref = reference(qp)
            rows.append((qp.name, ref.info.status, ours.status_labels()[i], ref.info.iter, int(ours.iterations[i]),
                         ref.info.obj_val, float(ours.objective[i])))
    for name, ref_status, our_status, *_ in rows:
        assert ref_status == our_status, (name, ref_status, our_status)
    solved = [r for r in rows if r[1] == "solved"]
    assert len(solved) >= 35
    for name, _, _, _, _, ref_obj, our_obj in solved:
        assert abs(our_obj - ref_obj) <= 1e-3 * max(1.0, abs(ref_obj)), (name, ref_obj, our_obj)
    within = [abs(r[3] - r[4]) <= SETTINGS.check_termination for r in rows]
    assert np.mean(within) >= 0.9, [r for r, ok in zip(rows, within) if not ok]
    exact = np.mean([r[3] == r[4] for r in rows])
    assert exact >= 0.95, exact  # the scaling, rho rule and checks are OSQP's to the letter


def test_matches_real_osqp_without_adaptive_rho():
    settings = replace(SETTINGS, adaptive_rho=False)
    qps = [generate("random", 15, seed) for seed in range(5)]
    ours = solve_qps(qps, settings)
    for i, qp in enumerate(qps):
        ref = reference(qp, settings)
        assert ours.status_labels()[i] == ref.info.status
        assert abs(int(ours.iterations[i]) - ref.info.iter) <= settings.check_termination
        np.testing.assert_allclose(ours.x[i, : qp.n].numpy(), ref.x, atol=5e-3 * max(1, np.abs(ref.x).max()))


@pytest.mark.parametrize("max_iter", [50, 60])
def test_max_iter_statuses_match_real_osqp(max_iter):
    """At max_iter OSQP tries 10x looser tolerances ('solved inaccurate') before giving up."""
    settings = replace(SETTINGS, max_iter=max_iter)
    qps = [generate("random", 20, seed) for seed in range(8)]
    ours = solve_qps(qps, settings)
    labels = [reference(qp, settings).info.status for qp in qps]
    assert ours.status_labels() == labels
    assert {"solved inaccurate", "maximum iterations reached"} & set(labels)


def test_infeasible_problems_are_certified_by_both():
    # primal infeasible: x >= 1 and x <= 0 on the same variable
    primal = QP(sp.eye(2), np.zeros(2), sp.csc_matrix([[1.0, 0.0], [1.0, 0.0]]), np.array([1.0, -np.inf]), np.array([np.inf, 0.0]))
    # dual infeasible (unbounded): minimize -x1 subject to x1 >= 0, P = 0 on x1
    dual = QP(sp.diags([0.0, 1.0]), np.array([-1.0, 0.0]), sp.csc_matrix([[1.0, 0.0]]), np.array([0.0]), np.array([np.inf]))
    ours = solve_qps([primal, dual])
    assert ours.status_labels() == [reference(primal).info.status, reference(dual).info.status]
    assert ours.status_labels() == ["primal infeasible", "dual infeasible"]


def test_batch_padding_is_inert():
    """A problem solved alone and inside a batch of other sizes gives the same answer."""
    qps = [generate("random", 8, 1), generate("control", 3, 2), generate("portfolio", 12, 3)]
    together = solve_qps(qps)
    for i, qp in enumerate(qps):
        alone = solve_qps([qp])
        assert int(alone.iterations[0]) == int(together.iterations[i])
        torch.testing.assert_close(alone.x[0, : qp.n], together.x[i, : qp.n], atol=1e-9, rtol=1e-9)
        assert together.x[i, qp.n :].abs().max() == 0 if qp.n < together.x.shape[1] else True


def test_sparse_backend_runs_the_same_algorithm():
    qps = [generate("svm", 2, 7), generate("lasso", 2, 8)]
    dense = solve_qps(qps, backend="dense")
    sparse = solve_qps(qps, backend="sparse")
    assert dense.status_labels() == sparse.status_labels() == ["solved", "solved"]
    assert torch.equal(dense.iterations, sparse.iterations)
    torch.testing.assert_close(dense.objective, sparse.objective, rtol=1e-6, atol=1e-8)


def test_warm_start_from_the_solution_stops_at_the_first_check():
    qp = generate("random", 12, 4)
    first = solve_qps([qp])
    core = OSQPBatch([qp])
    core.warm_start(first.x, first.y)
    again = core.solve()
    assert again.status_labels() == ["solved"]
    assert int(again.iterations[0]) == SETTINGS.check_termination < int(first.iterations[0])


def test_step_api_constant_rho_vector_equals_scalar_rho():
    qp = generate("control", 3, 5)
    settings = replace(SETTINGS, adaptive_rho=False)
    reference_core = OSQPBatch([qp], settings)
    reference_core.advance(60)
    stepped = OSQPBatch([qp], settings)
    rho = stepped.rho_vec.clone()  # OSQP's own vector (equality rows 1e3 rho)
    for _ in range(3):
        stepped.advance(20, rho_vec=rho)
    a, b = reference_core.state(), stepped.state()
    torch.testing.assert_close(a["x"], b["x"])
    torch.testing.assert_close(a["y"], b["y"])
    assert set(b) >= {"x", "z", "y", "Ax", "prim_res", "dual_res", "l_scaled", "u_scaled", "rho_vec"}


def test_larger_rho_vector_changes_the_trajectory_and_is_validated():
    qp = generate("random", 10, 6)
    core = OSQPBatch([qp], replace(SETTINGS, adaptive_rho=False))
    core.advance(25, rho_vec=torch.full((1, qp.m), 10.0, dtype=torch.float64))
    assert torch.allclose(core.rho_vec[0], torch.full((qp.m,), 10.0, dtype=torch.float64))
    with pytest.raises(ValueError, match="rho_vec must have shape"):
        core.set_rho(torch.ones(2, 3))


def test_non_convex_problem_is_a_status_not_a_crash():
    P = sp.csc_matrix(np.array([[-1.0, 0.0], [0.0, 1.0]]))
    qp = QP(P, np.zeros(2), sp.csc_matrix(np.zeros((1, 2))), np.array([-1.0]), np.array([1.0]))
    sol = solve_qps([qp, generate("random", 5, 0)])
    assert sol.status_labels()[0] == "problem non convex"
    assert sol.status_labels()[1] == "solved"


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(P=sp.eye(3), q=np.zeros(2), A=sp.eye(2), l=np.zeros(2), u=np.ones(2)), "P must be 2x2"),
        (dict(P=sp.eye(2), q=np.zeros(2), A=sp.eye(3, 2), l=np.zeros(2), u=np.ones(2)), "l must have 3 entries"),
        (dict(P=sp.eye(2), q=np.zeros(2), A=sp.eye(2), l=np.array([0.0, 2.0]), u=np.ones(2)), r"l > u at row 1"),
        (dict(P=sp.eye(2), q=np.array([0.0, np.nan]), A=sp.eye(2), l=np.zeros(2), u=np.ones(2)), "q contains NaN"),
        (dict(P=sp.csc_matrix([[1.0, 1.0], [0.0, 1.0]]), q=np.zeros(2), A=sp.eye(2), l=np.zeros(2), u=np.ones(2)), "P must be symmetric"),
    ],
)
def test_malformed_problems_name_what_is_wrong(kwargs, message):
    with pytest.raises(QPValidationError, match=message):
        QP(**kwargs)


def test_settings_are_validated():
    with pytest.raises(ValueError, match="alpha"):
        OSQPSettings(alpha=2.0)
    with pytest.raises(ValueError, match="backend"):
        OSQPBatch([generate("random", 3, 0)], backend="magic")


def test_rounded_file_infinity_is_infinite(tmp_path):
    """Data files hold +/-1e20 rounded (9.999999999999998e19): still no bound."""
    qp = generate("random", 4, 0)
    qp.u[0], qp.l[1] = 9.999999999999998e19, -1e20
    qp.u[2] = 9.9e19  # a genuine (huge) finite bound stays
    save_npz(qp, tmp_path / "b.npz")
    back = load_qp(tmp_path / "b.npz")
    assert np.isposinf(back.u[0]) and np.isneginf(back.l[1]) and back.u[2] == 9.9e19


def test_npz_round_trip(tmp_path):
    qp = generate("portfolio", 10, 3)
    save_npz(qp, tmp_path / "p.npz")
    back = load_qp(tmp_path / "p.npz")
    assert (back.P != qp.P).nnz == 0 and (back.A != qp.A).nnz == 0
    np.testing.assert_array_equal(back.l, qp.l)
    np.testing.assert_array_equal(back.u, qp.u)


def test_small_maros_meszaros_problems_match_real_osqp():
    """Every problem of the subset with n + m <= 400, batched together (13 problems)."""
    qps = [q for q in (load_qp(f) for f in sorted(MAROS.glob("*.mat"))) if q.n + q.m <= 400]
    assert len(qps) == 13
    ours = solve_qps(qps)
    for i, qp in enumerate(qps):
        ref = reference(qp)
        if ref.info.status == "solved":
            assert ours.status_labels()[i] == "solved", qp.name
            assert abs(float(ours.objective[i]) - ref.info.obj_val) <= 1e-3 * max(1.0, abs(ref.info.obj_val)), qp.name
        assert abs(int(ours.iterations[i]) - ref.info.iter) <= SETTINGS.check_termination, qp.name


def test_maros_meszaros_mat_loader_and_solve():
    qp = load_qp(MAROS / "HS21.mat")
    assert qp.n == 2 and qp.m == 3 and np.isinf(qp.u[0])  # 1e20 became inf
    ref = reference(qp)
    ours = solve_qps([qp])
    assert ours.status_labels()[0] == ref.info.status == "solved"
    assert abs(float(ours.objective[0]) - ref.info.obj_val) <= 1e-3 * abs(ref.info.obj_val)


def test_solving_in_chunks_gives_the_one_batch_results():
    qps = [generate("random", n, seed) for n, seed in ((10, 0), (20, 1), (10, 2), (15, 3), (20, 4))]
    whole = solve_qps(qps, SETTINGS, chunk=len(qps))
    chunks = solve_qps(qps, SETTINGS, chunk=2)
    assert chunks.x.shape == whole.x.shape and chunks.y.shape == whole.y.shape
    assert torch.equal(chunks.status, whole.status) and torch.equal(chunks.iterations, whole.iterations)
    assert torch.allclose(chunks.x, whole.x, atol=1e-9) and torch.allclose(chunks.objective, whole.objective)
    single = solve_qps(qps, SETTINGS, chunk=2, dtype=torch.float32)  # the opt-in float32 form, chunked alike
    assert single.x.dtype == torch.float32 and torch.equal(single.status, whole.status)
    assert torch.allclose(single.objective.double(), whole.objective, rtol=1e-3)
    for bad in (0, -1):  # 0 is not "the default"
        with pytest.raises(ValueError, match=f"chunk={bad}: at least 1"):
            solve_qps(qps, SETTINGS, chunk=bad)


def test_sparse_batch_from_scipy_sums_duplicates_sorts_and_pads():
    """Each matrix enters through its CSR arrays: duplicates summed, columns sorted, rows padded with nothing."""
    messy = sp.coo_matrix(([1.0, 2.0, 3.0, -4.0], ([1, 0, 1, 1], [2, 1, 0, 2])), shape=(2, 3))  # (1, 2) twice
    small = sp.csc_matrix(np.array([[5.0, 0.0], [0.0, 6.0]]))
    batch = SparseBatch.from_scipy([messy, small], rows=3, cols=3, device="cpu", dtype=torch.float64)
    dense = batch.dense()
    assert torch.equal(dense[0], torch.tensor([[0.0, 2.0, 0.0], [3.0, 0.0, -3.0], [0.0, 0.0, 0.0]], dtype=torch.float64))
    assert torch.equal(dense[1], torch.tensor([[5.0, 0.0, 0.0], [0.0, 6.0, 0.0], [0.0, 0.0, 0.0]], dtype=torch.float64))
    key = (batch.batch * 3 + batch.row) * 3 + batch.col
    assert bool((key[1:] > key[:-1]).all())  # the batch's order, which the products and norms rely on
    x = torch.randn(2, 3, dtype=torch.float64)
    assert torch.allclose(batch.mv(x), (dense @ x.unsqueeze(2)).squeeze(2))
    with pytest.raises(ValueError, match="matrix 0 is 2x3, larger than the batch's 3x2"):
        SparseBatch.from_scipy([messy, small], rows=3, cols=2, device="cpu", dtype=torch.float64)


def test_taking_problems_in_order_keeps_the_transpose_without_sorting_again():
    """A compaction's take() carries the transpose's permutation over; it must equal a fresh build's."""
    qps = [generate("random", 10, s) for s in range(5)]
    batch = QPBatch.from_qps(qps).A
    y = torch.randn(5, batch.rows, dtype=torch.float64)
    batch.rmv(y)  # builds the transpose
    keep = torch.tensor([0, 2, 3])
    taken, fresh = batch.take(keep), QPBatch.from_qps([qps[i] for i in keep.tolist()]).A
    assert taken.pattern._perm_t is not None  # derived, not sorted
    assert torch.equal(taken.rmv(y[keep]), fresh.rmv(y[keep]))
    assert torch.equal(taken.col_norm_inf(), fresh.col_norm_inf()) and torch.equal(taken.dense(), fresh.dense())
    shuffled = batch.take(torch.tensor([3, 0]))  # out of order: sorted afresh, same matrices
    assert torch.equal(shuffled.dense(), batch.dense()[[3, 0]])
