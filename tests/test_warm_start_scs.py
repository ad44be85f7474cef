"""Warm starts for the real scs: a parametric QP family in SCS's cone form, checked against osqp's solutions, and
the starter's scs path."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from agents.qp.bench_warm_start import BENCH_SEED, bench_warm_start
from learned_optimizers.qp.parametric import ParametricQPFamily, ParametricQPSettings, make_family, solve_family
from learned_optimizers.qp.problems import QPValidationError
from learned_optimizers.qp.scs_form import SCSForm
from learned_optimizers.qp.warm_start import WarmStarter, WarmStartNet


def _perfect_starter(family, contexts, x, y) -> WarmStarter:
    """A starter whose 'network' is a lookup: a linear layer fitted exactly to (context -> x, y) on these few
    contexts (fewer contexts than inputs plus one, so least squares interpolates)."""
    net = WarmStartNet(family.context_dim, family.n + family.m, ())
    features = np.hstack([contexts, np.ones((len(contexts), 1))])
    weights, *_ = np.linalg.lstsq(features, np.hstack([x, y]), rcond=None)
    with torch.no_grad():
        net.net[-1].weight.copy_(torch.as_tensor(weights[:-1].T))
        net.net[-1].bias.copy_(torch.as_tensor(weights[-1]))
    d, k = family.context_dim, family.n + family.m
    stats = {"context_mean": np.zeros(d), "context_std": np.ones(d), "out_mean": np.zeros(k), "out_std": np.ones(k)}
    return WarmStarter(family, {"kind": "mpc"}, net, stats, 1e-6)


@pytest.mark.parametrize("kind", ["mpc", "portfolio", "lasso"])
def test_scs_on_the_cone_form_finds_osqps_primal_and_dual_solution(kind):
    """Equality rows as a zero cone, each finite bound a nonnegative row (the Lasso has infinite ones): scs's x and
    its dual mapped back equal osqp's to the tolerance, and the cone has one row per finite side."""
    family = make_family(ParametricQPSettings(kind=kind, size=4, horizon=3))
    form = SCSForm(family)
    contexts = family.sample_contexts(3, np.random.default_rng(2))
    x, y, statuses = solve_family(family, contexts, 1e-10)
    assert statuses == ["solved"] * 3
    finite = lambda v: np.abs(v) < 1e20  # noqa: E731
    eq = family.l0 == family.u0
    assert form.cone["z"] == eq.sum() and form.cone["l"] == (finite(family.u0) & ~eq).sum() + (finite(family.l0) & ~eq).sum()
    b, c = form.b_c(contexts)
    solver = form.solver(contexts[0], eps_abs=1e-10, eps_rel=1e-10, max_iters=200_000)
    for i in range(3):
        solver.update(b=b[i], c=c[i])
        result = solver.solve(warm_start=False)
        assert result["info"]["status"] == "solved"
        scale = 1.0 + np.abs(y[i]).max()
        np.testing.assert_allclose(result["x"], x[i], atol=1e-6 * (1 + np.abs(x[i]).max()))
        np.testing.assert_allclose(form.osqp_dual(result["y"])[0], y[i], atol=1e-5 * scale)


def test_a_perfect_start_stops_scs_at_once_and_a_zero_start_is_cold_scs():
    family = make_family(ParametricQPSettings(kind="portfolio", size=12, seed=1))
    form = SCSForm(family)
    contexts = family.sample_contexts(4, np.random.default_rng(3))
    x, y, _ = solve_family(family, contexts, 1e-10)
    b, c = form.b_c(contexts)
    for i in range(4):
        cold = form.solver(contexts[i], eps_abs=1e-6, eps_rel=1e-6).solve(warm_start=False)
        zeros = form.solver(contexts[i], eps_abs=1e-6, eps_rel=1e-6).solve(
            warm_start=True, x=np.zeros(family.n), y=np.zeros(form.rows), s=np.zeros(form.rows))
        assert zeros["info"]["iter"] == cold["info"]["iter"] > 25
        x0, y0, s0 = form.start(x[i], y[i], b[i])
        assert np.all(s0[0, form.cone["z"]:] >= 0) and np.all(s0[0, : form.cone["z"]] == 0)
        perfect = form.solver(contexts[i], eps_abs=1e-6, eps_rel=1e-6).solve(warm_start=True, x=x0[0], y=y0[0],
                                                                             s=s0[0])
        assert perfect["info"]["status"] == "solved" and perfect["info"]["iter"] == 0


def test_the_starters_scs_path_solves_each_context_and_names_bad_ones():
    family = make_family(ParametricQPSettings(kind="mpc", size=2, horizon=3, seed=1))
    contexts = family.sample_contexts(2, np.random.default_rng(4))
    x, y, _ = solve_family(family, contexts, 1e-10)
    starter = _perfect_starter(family, contexts, x, y)
    for i in range(2):
        result = starter.solve_scs(contexts[i])
        assert result["info"]["status"] == "solved" and result["info"]["iter"] == 0
        np.testing.assert_allclose(result["y_osqp"], y[i], atol=1e-6 * (1 + np.abs(y[i]).max()))
    assert starter.solve_scs(contexts[0], eps_abs=1e-9, eps_rel=1e-9)["info"]["status"] == "solved"
    with pytest.raises(ValueError, match="contexts contain NaN or inf"):
        starter.solve_scs(np.array([0.0, np.nan]))
    with pytest.raises(ValueError, match="a context has 2 entries"):
        starter.solve_scs(np.zeros(3))


def test_the_bench_gives_scs_rows_beside_osqps_and_starts_both_from_the_prediction(tmp_path):
    """A starter that knows the bench's own contexts exactly: its rows stop osqp at its first check (25) and scs at
    once (0) while the cold rows iterate, so the bench hands the prediction to both solvers."""
    family = make_family(ParametricQPSettings(kind="portfolio", size=8, seed=2))
    contexts = np.concatenate([family.sequence(3, np.random.default_rng(BENCH_SEED + i)) for i in range(2)])
    x, y, _ = solve_family(family, contexts, 1e-10)
    starter = _perfect_starter(family, contexts, x, y)
    result = bench_warm_start([], contexts=3, sequences=2, root=tmp_path, name="b", starters=[("lookup", starter)],
                              solvers=("osqp", "scs"))
    record = json.loads((tmp_path / "b" / "bench.json").read_text())
    scs_rows = {k.rsplit(" @ ", 1)[0] for k in record["methods"] if k.startswith("scs: ")}
    assert scs_rows == {"scs: cold (x = y = 0)", "scs: previous solution", "scs: learned [1]",
                        "scs: learned [1] + last error"}
    for eps in (1e-3, 1e-5):
        methods = {k.rsplit(" @ ", 1)[0]: m for k, m in record["methods"].items() if k.endswith(f"@ {eps:g}")}
        assert all(m["solved"] == m["contexts"] == 6 for m in methods.values())
        assert methods["scs: cold (x = y = 0)"]["solver"] == "scs"
        assert methods["scs: learned [1]"]["median_iterations"] == 0 < methods["scs: cold (x = y = 0)"]["median_iterations"]
        assert methods["learned [1]"]["median_iterations"] == 25 < methods["cold (x = y = 0)"]["median_iterations"]
    assert " scs " in result["table"] and record["solvers"] == ["osqp", "scs"]
    with pytest.raises(ValueError, match="--solvers=gurobi: choose from osqp, scs"):
        bench_warm_start([], root=tmp_path, starters=[("lookup", starter)], solvers=("gurobi",))


def test_a_family_without_a_finite_bound_is_a_named_error_for_scs():
    free = ParametricQPFamily("free", np.eye(2), np.eye(2), np.zeros(2), -np.inf * np.ones(2), np.inf * np.ones(2),
                              np.eye(2), np.zeros((2, 2)), np.zeros((2, 2)), np.zeros(2), np.ones(2))
    with pytest.raises(QPValidationError, match="family 'free': no row has a finite bound"):
        SCSForm(free)


def _biased_starter(family, contexts, seed: int = 0) -> WarmStarter:
    """An exact lookup of ``contexts`` shifted by one constant (x, y) offset: a model with a steady bias."""
    x, y, _ = solve_family(family, contexts, 1e-10)
    rng = np.random.default_rng(seed)
    return _perfect_starter(family, contexts, x + 0.1 * rng.standard_normal(family.n),
                            y + 0.1 * rng.standard_normal(family.m))


def test_feedback_cancels_a_steady_error_of_the_model_for_osqp_and_scs():
    """start = prediction + (last solution - last prediction): a constant bias cancels from the second context on,
    so osqp stops at its first check (25) and scs at once (0), while the uncorrected start iterates; the first
    context, a failed solve's successor and a change of settings start from the prediction alone."""
    family = make_family(ParametricQPSettings(kind="portfolio", size=8, seed=2))
    contexts = family.sequence(4, np.random.default_rng(5))
    plain, corrected = _biased_starter(family, contexts), _biased_starter(family, contexts)
    osqp_plain = [plain.solve(c).info.iter for c in contexts]
    osqp_fed = [corrected.solve(c, feedback=True).info.iter for c in contexts]
    assert min(osqp_plain) > 25 and osqp_fed[0] == osqp_plain[0] and osqp_fed[1:] == [25, 25, 25]
    scs_plain = [plain.solve_scs(c)["info"]["iter"] for c in contexts]
    scs_fed = [corrected.solve_scs(c, feedback=True)["info"]["iter"] for c in contexts]
    assert min(scs_plain) > 0 and scs_fed[0] == scs_plain[0] and scs_fed[1:] == [0, 0, 0]
    # new settings: a new solver, nothing to correct by yet
    assert corrected.solve(contexts[0], feedback=True, eps_abs=1e-5, eps_rel=1e-5).info.iter > 25
    assert corrected.solve(contexts[1], feedback=True, eps_abs=1e-5, eps_rel=1e-5).info.iter == 25
    # a solve that stops short of 'solved' leaves no error to correct by
    assert corrected.solve(contexts[2], feedback=True, eps_abs=1e-5, eps_rel=1e-5, max_iter=1).info.status != "solved"
    assert corrected.solve(contexts[3], feedback=True, eps_abs=1e-5, eps_rel=1e-5, max_iter=1).info.iter == 1
    assert corrected._last["osqp"] is None


def test_the_bench_corrects_each_learned_start_by_its_last_error(tmp_path):
    """The '+ last error' rows hand osqp and scs the corrected start: with a steadily biased model they stop at the
    first check (osqp) and at once (scs) on every context but each sequence's first."""
    family = make_family(ParametricQPSettings(kind="portfolio", size=8, seed=2))
    contexts = np.concatenate([family.sequence(4, np.random.default_rng(BENCH_SEED + i)) for i in range(2)])
    starter = _biased_starter(family, contexts)
    bench_warm_start([], contexts=4, sequences=2, root=tmp_path, name="b", starters=[("biased", starter)],
                     solvers=("osqp", "scs"))
    methods = json.loads((tmp_path / "b" / "bench.json").read_text())["methods"]
    for eps in ("0.001", "1e-05"):
        learned, fed = methods[f"learned [1] @ {eps}"], methods[f"learned [1] + last error @ {eps}"]
        assert fed["median_iterations"] == 25 < learned["median_iterations"]
        assert fed["forward_ms_batched"] == learned["forward_ms_batched"]  # the same model, the same forward pass
        assert methods[f"scs: learned [1] + last error @ {eps}"]["median_iterations"] == 0 \
            < methods[f"scs: learned [1] @ {eps}"]["median_iterations"]
        assert fed["solved"] == fed["contexts"] == 8
