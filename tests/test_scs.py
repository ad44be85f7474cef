"""The batched torch SCS against closed forms and against the real ``scs`` package."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
import scs
import torch

from learned_optimizers.conic.cones import ConeError, ConeSpec, project_soc
from learned_optimizers.conic.programs import ConeProgram, ConeProgramBatch, ConeProgramError, make_cone_family
from learned_optimizers.conic.scs import SCS_PACKAGE_AS_THIS_CORE, SCSSettings, SCSStatus, SCSWork, solve_cone_programs
from learned_optimizers.families import make_map

# scs 3.3 rescales rows adaptively by default; our solver implements the classic scalar scale
SAME_SETTINGS = SCS_PACKAGE_AS_THIS_CORE


def _real(program: ConeProgram, **settings):
    data, cone = program.to_scs()
    return scs.SCS(data, cone, verbose=False, **SAME_SETTINGS, **settings).solve()


# ---------------------------------------------------------------- cones
def test_soc_projection_matches_closed_form_cases():
    gen = torch.Generator().manual_seed(0)
    v = torch.randn(2000, 6, generator=gen, dtype=torch.float64) * 2
    p = project_soc(v)
    t, z = v[:, 0], v[:, 1:]
    nz = z.norm(dim=1)
    inside, polar = nz <= t, nz <= -t
    assert torch.equal(p[inside], v[inside])
    assert torch.all(p[polar] == 0)
    edge = ~inside & ~polar
    alpha = (nz[edge] + t[edge]) / 2
    assert torch.allclose(p[edge, 0], alpha)
    assert torch.allclose(p[edge, 1:], z[edge] * (alpha / nz[edge]).unsqueeze(1))
    # a projection: in the cone, idempotent, and v - P(v) is in the polar cone and orthogonal to P(v)
    assert torch.all(p[:, 1:].norm(dim=1) <= p[:, 0] + 1e-12)
    assert torch.allclose(project_soc(p), p)
    r = v - p
    assert torch.all(r[:, 1:].norm(dim=1) <= -r[:, 0] + 1e-12)
    assert torch.allclose((r * p).sum(1), torch.zeros(2000, dtype=torch.float64), atol=1e-10)


def test_cone_projection_and_dual_by_blocks():
    cone = ConeSpec(z=2, l=3, q=(3, 1, 3))
    v = torch.randn(5, cone.dim, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    p = cone.project(v)
    assert torch.all(p[:, :2] == 0)
    assert torch.equal(p[:, 2:5], v[:, 2:5].clamp(min=0))
    assert torch.allclose(p[:, 5:8], project_soc(v[:, 5:8]))
    assert torch.equal(p[:, 8], v[:, 8].clamp(min=0))  # a size-1 SOC is a half-line
    assert torch.allclose(p[:, 9:12], project_soc(v[:, 9:12]))
    d = cone.project_dual(v)
    assert torch.equal(d[:, :2], v[:, :2])  # the zero cone's dual is free
    # Moreau: P_K*(v) lies in K* (orthant and second-order cones are self-dual) and is orthogonal to P_K(-v)
    assert torch.all(d[:, 2:5] >= 0) and torch.all(d[:, 8] >= 0)
    for lo, hi in ((5, 8), (9, 12)):
        assert torch.all(d[:, lo + 1:hi].norm(dim=1) <= d[:, lo] + 1e-12)
    assert torch.allclose((d * cone.project(-v)).sum(1), torch.zeros(5, dtype=torch.float64), atol=1e-12)


@pytest.mark.parametrize("cone, field", [
    ({"l": -1}, "cone l=-1"), ({"q": [3, 0]}, "cone q[1]=0"), ({"s": [3]}, "cone 's'"),
    ({"ep": 1}, "cone 'ep'"), ({"zz": 2}, "cone key 'zz'"), ({"z": 1.5}, "cone z=1.5"), ({"z": 0, "l": 0}, "every size"),
    ("l", "cone must be a dict"),
])
def test_bad_cone_specifications_name_the_field(cone, field):
    with pytest.raises(ConeError, match=re.escape(field)):
        ConeSpec.from_dict(cone)


def test_bad_programs_name_the_field():
    A = np.ones((3, 2))
    with pytest.raises(ConeProgramError, match="cone .* has 4 rows but A has 3"):
        ConeProgram(A, np.ones(3), np.ones(2), {"l": 4})
    with pytest.raises(ConeProgramError, match="b has 2 entries"):
        ConeProgram(A, np.ones(2), np.ones(2), {"l": 3})
    with pytest.raises(ConeProgramError, match="c contains NaN"):
        ConeProgram(A, np.ones(3), np.array([1.0, np.nan]), {"l": 3})
    with pytest.raises(ConeProgramError, match="not positive semidefinite"):
        ConeProgram(A, np.ones(3), np.ones(2), {"l": 3}, P=np.diag([1.0, -1.0]))
    with pytest.raises(ConeProgramError, match="not symmetric"):
        ConeProgram(A, np.ones(3), np.ones(2), {"l": 3}, P=np.array([[1.0, 1.0], [0.0, 1.0]]))
    t = lambda a: torch.as_tensor(a, dtype=torch.float64).unsqueeze(0)  # noqa: E731
    with pytest.raises(ConeProgramError, match="P is not symmetric"):
        ConeProgramBatch(t(A), t(np.ones(3)), t(np.ones(2)), ConeSpec(l=3), t(np.array([[1.0, 1.0], [0.0, 1.0]])))
    with pytest.raises(ConeProgramError, match="b contains NaN"):
        ConeProgramBatch(t(A), t(np.array([1.0, np.nan, 1.0])), t(np.ones(2)), ConeSpec(l=3))
    # a batch skips the eigenvalue check; the factorization names P instead of crashing
    indefinite = ConeProgramBatch(t(A), t(np.ones(3)), t(np.ones(2)), ConeSpec(l=3), t(-10 * np.eye(2)))
    with pytest.raises(ValueError, match="P is not positive semidefinite in programs \\[0\\]"):
        solve_cone_programs(indefinite)


# ---------------------------------------------------------------- the iteration against scs
@pytest.mark.parametrize("family", ["lasso", "huber", "socp"])
def test_solver_reproduces_scs_solutions_and_iterations(family):
    fam = make_cone_family(family, **({"features": 20, "samples": 40} if family == "lasso" else
                                      {"features": 8, "samples": 30} if family == "huber" else {}))
    batch = fam.programs(fam.sample_contexts(6, torch.Generator().manual_seed(3)).double())
    ours = solve_cone_programs(batch)
    for i in range(len(batch)):
        real = _real(batch.program(i))
        assert ours.labels()[i] == real["info"]["status"] == "solved"
        assert abs(int(ours.iterations[i]) - real["info"]["iter"]) <= 0.1 * real["info"]["iter"]
        for key in ("x", "y", "s"):
            ref = real[key]
            got = getattr(ours, key)[i].numpy()
            assert np.linalg.norm(got - ref) <= 1e-4 * max(1.0, np.linalg.norm(ref)), key
        assert float(ours.pobj[i]) == pytest.approx(real["info"]["pobj"], rel=1e-6, abs=1e-8)


def test_iterates_match_scs_log_step_by_step(tmp_path):
    """Residuals, tau and scale at every iteration equal scs's own CSV log (no normalization shortcut)."""
    import csv

    fam = make_cone_family("socp", variables=10, zero=2, nonnegative=6, soc_count=2, soc_size=4)
    program = fam.programs(fam.sample_contexts(1, torch.Generator().manual_seed(7)).double()).program(0)
    log = tmp_path / "log.csv"
    _real(program, eps_abs=1e-9, eps_rel=1e-9, max_iters=60, log_csv_filename=str(log))
    rows = list(csv.DictReader(open(log)))
    work = SCSWork(ConeProgramBatch.stack([program]), SCSSettings(adaptive_scale=False))
    v = work.cold_start()
    first_ours = None
    for i in range(60):
        out = work.step(v, first=i == 0)
        res = work.residuals(out.u, out.rsk)
        if first_ours is None and int(work.check(res, eps_abs=1e-3, eps_rel=1e-3)) == SCSStatus.SOLVED:
            first_ours = i
        for ours, key in ((res.res_pri, "res_pri"), (res.res_dual, "res_dual"), (res.gap, "gap"), (res.tau, "tau")):
            assert float(ours) == pytest.approx(float(rows[i][key]), rel=1e-7, abs=1e-12), (i, key)
        v = out.v
    # the benchmark reads scs's log with the same stopping test
    from agents.fixed_point.bench_scs import _criteria_from_log

    assert first_ours is not None and _criteria_from_log(log, 1e-3) == first_ours


def _infeasible_and_unbounded() -> tuple[ConeProgram, ConeProgram]:
    rng = np.random.default_rng(3)
    m, n = 8, 4
    A = rng.standard_normal((m, n))
    y = rng.random(m) + 0.1
    A -= np.outer(y, y @ A) / (y @ y)  # A'y = 0 with y > 0 ...
    b = rng.standard_normal(m)
    b -= y * (b @ y + 1) / (y @ y)  # ... and b'y = -1: no x, s >= 0 with Ax + s = b
    infeasible = ConeProgram(A, b, rng.standard_normal(n), {"l": m}, name="infeasible")
    A2 = rng.standard_normal((m, n))
    d = rng.standard_normal(n)
    d /= np.linalg.norm(d)
    A2 -= np.outer(A2 @ d, d)  # A d = 0 and c'd = -1: the objective decreases along d forever
    unbounded = ConeProgram(A2, A2 @ rng.standard_normal(n) + rng.random(m), -d, {"l": m}, name="unbounded")
    return infeasible, unbounded


def test_infeasible_and_unbounded_are_certified_like_scs():
    infeasible, unbounded = _infeasible_and_unbounded()
    for program, label in ((infeasible, "infeasible"), (unbounded, "unbounded")):
        ours = solve_cone_programs(ConeProgramBatch.stack([program]))
        real = _real(program)
        assert ours.labels()[0] == real["info"]["status"] == label
        assert int(ours.iterations[0]) == real["info"]["iter"]
    ours = solve_cone_programs(ConeProgramBatch.stack([infeasible]))
    y = ours.y[0].numpy()
    assert infeasible.b @ y == pytest.approx(-1.0)  # the certificate: A'y = 0, b'y < 0, y in K*
    assert np.abs(infeasible.A.T @ y).max() < 1e-6 and y.min() >= 0
    ours = solve_cone_programs(ConeProgramBatch.stack([unbounded]))
    assert unbounded.c @ ours.x[0].numpy() == pytest.approx(-1.0)
    assert math.isinf(float(ours.pobj[0])) and float(ours.pobj[0]) < 0


def test_max_iters_is_a_status_not_a_crash():
    fam = make_cone_family("huber", features=8, samples=30)
    batch = fam.programs(fam.sample_contexts(2, torch.Generator().manual_seed(0)).double())
    ours = solve_cone_programs(batch, SCSSettings(max_iters=10))
    assert set(ours.labels()) == {SCSStatus.SOLVED_INACCURATE.label}
    assert torch.all(ours.iterations == 10)


def test_a_batch_solved_in_chunks_is_the_batch_solved_at_once():
    """Chunks (a CPU's default for long lists) change nothing a program sees: the same statuses, iterations,
    scales and solutions, in the batch's order."""
    fam = make_cone_family("lasso", features=12, samples=24)
    batch = fam.programs(fam.sample_contexts(7, torch.Generator().manual_seed(5)).double())
    whole, chunked = solve_cone_programs(batch, chunk=7), solve_cone_programs(batch, chunk=3)
    assert whole.labels() == chunked.labels() == ["solved"] * 7
    for name in ("iterations", "scale", "scale_updates", "x", "y", "s"):
        assert torch.equal(getattr(whole, name), getattr(chunked, name)), name
    torch.testing.assert_close(chunked.pobj, whole.pobj, rtol=1e-12, atol=0)  # a batched reduction's last bits
    assert torch.equal(chunked.x[4], solve_cone_programs(batch.rows(4, 5)).x[0])
    for bad in (0, -1):
        with pytest.raises(ValueError, match=f"chunk={bad}: at least 1"):
            solve_cone_programs(batch, chunk=bad)


def test_scs_map_is_one_scs_step_and_terminates_like_scs():
    fp_map = make_map("scs-lasso", features=10, samples=20)
    x = fp_map.sample_contexts(3, torch.Generator().manual_seed(0)).double()
    work = fp_map.work(x, torch.float64)
    v = work.cold_start() * 2.0
    assert torch.allclose(fp_map.g(v, x), work.step(v).v)
    assert fp_map.g(v, x).shape == (3, fp_map.dim) and fp_map.context_dim == 20
    # plain iteration of the map reaches SCS's own test; before that it does not hold
    y = fp_map.initial_iterate(x)
    assert not bool(fp_map.termination(y, x, 1e-4).any())
    for _ in range(300):
        y = fp_map.g(y, x)
    assert bool(fp_map.termination(y, x, 1e-4).all())


def test_bench_compares_with_real_scs(tmp_path):
    from agents.fixed_point.bench import bench_fixed_point

    summary = bench_fixed_point(family="scs-lasso", contexts=3, root=tmp_path, name="b", device="cpu")
    part = summary["scs"]
    assert part["reproduction"]["same_status"] == 3 and part["reproduction"]["iterations_within_10pct"] == 3
    methods = part["methods"]
    assert {"scs (real, acceleration off)", "scs (real, acceleration on: its Anderson)",
            "SCS map, plain iteration (fixed scale)"} <= set(methods)
    for record in methods.values():
        assert record["reached_0.0001"] == 1.0 and 0 < record["sgm_iters_to_0.0001"] < part["budget"]
        assert record["solution_error"] < 1e-2  # x, y at eps 1e-4 agree with scs solved to 1e-9
    assert max(len(line) for line in summary["table"].splitlines()) <= 120, summary["table"]
    for r in methods.values():
        assert r["median_ms_per_problem_to_1e-4"] == pytest.approx(r["ms_per_iteration"] * r["median_iters_to_0.0001"])
    real_off, real_on = methods["scs (real, acceleration off)"], methods["scs (real, acceleration on: its Anderson)"]
    assert real_off["accepted_aa_steps_per_problem"] == 0 and real_on["accepted_aa_steps_per_problem"] > 0
    # checked every iteration, a method is never later than scs's own every-25 count
    assert real_on["sgm_iters_to_0.0001"] <= real_on["sgm_reported_iters_1e-4"]
    assert "reproduction" in summary["table"] and (tmp_path / "b" / "bench.json").is_file()
