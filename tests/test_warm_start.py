"""Warm starts for the real osqp: parametric families, the one-step env, the regression agent, the deployable
starter and the bench against cold osqp."""

from __future__ import annotations

import json
import subprocess
import sys

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env
from tb_steps import scalar_steps

import envs  # noqa: F401  (registers the env ids)
from agents.cli import main
from agents.qp.bench_warm_start import bench_warm_start, run_osqp
from agents.registry import config_from_dict
from agents.workflows import resume, train
from learned_optimizers.qp.admm import OSQPBatch, OSQPSettings
from learned_optimizers.qp.parametric import (
    ParametricQPFamily,
    ParametricQPSettings,
    QPWarmStartProblem,
    make_family,
    solve_family,
)
from learned_optimizers.qp.problems import QPValidationError
from learned_optimizers.qp.unrolled import UnrolledADMM
from learned_optimizers.qp.warm_start import WarmStarter, WarmStartNet

TINY = {"family": "qp_warm_start", "kind": "mpc", "size": 2, "horizon": 4, "seed": 3, "eps": 1e-5}


def tiny_config(steps: int = 60, **agent):
    return config_from_dict({"device": "cpu", "seed": 1, "env": "amortize/QP-WarmStart-v0", "problem": TINY,
                             "agent": {"kind": "warm_start_regression", "hidden_sizes": [32], "dataset_size": 128,
                                       "batch_size": 32, **agent},
                             "train": {"total_steps": steps, "checkpoint_every": 20, "eval_every": 20, "log_every": 10},
                             "eval": {"seed": 1000003}})


@pytest.mark.parametrize("kind", ["mpc", "portfolio", "lasso"])
def test_each_family_is_affine_in_its_context_and_osqp_solves_it(kind):
    family = make_family(ParametricQPSettings(kind=kind, size=4, horizon=3))
    c = family.sample_contexts(3, np.random.default_rng(0))
    q, l, u = family.data(c)
    q2, l2, u2 = family.data(0.5 * (c[0] + c[1]))
    finite = np.isfinite(l2[0])
    assert np.allclose(q2[0], 0.5 * (q[0] + q[1])) and np.allclose(l2[0][finite], 0.5 * (l[0] + l[1])[finite])
    _, _, statuses = solve_family(family, c, 1e-6)
    assert statuses == ["solved"] * 3
    seq = family.sequence(50, np.random.default_rng(1))
    lo, hi = family.context_mean - family.context_scale, family.context_mean + family.context_scale
    assert ((seq >= lo - 1e-12) & (seq <= hi + 1e-12)).all() and np.abs(np.diff(seq, axis=0)).max() > 0


def test_a_users_family_from_a_file_and_its_errors(tmp_path):
    family = make_family(ParametricQPSettings(kind="portfolio", size=5))
    family.save(tmp_path / "mine.npz")
    loaded = ParametricQPFamily.from_file(tmp_path / "mine.npz")
    c = family.sample_contexts(2, np.random.default_rng(0))
    assert all(np.array_equal(a, b) for a, b in zip(family.data(c), loaded.data(c)))
    np.savez(tmp_path / "partial.npz", P=np.eye(2))
    with pytest.raises(QPValidationError, match="partial.npz: missing A, q0"):
        ParametricQPFamily.from_file(tmp_path / "partial.npz")
    arrays = dict(np.load(tmp_path / "mine.npz"))
    arrays["Gq"][0, 0] = np.nan
    np.savez(tmp_path / "nan.npz", **arrays)
    with pytest.raises(QPValidationError, match="family 'nan': Gq contains NaN or inf"):
        ParametricQPFamily.from_file(tmp_path / "nan.npz")
    arrays = dict(np.load(tmp_path / "mine.npz"))
    arrays["l0"][0], arrays["u0"][0] = 2.0, 1.0
    np.savez(tmp_path / "crossed.npz", **arrays)
    with pytest.raises(QPValidationError, match="l > u at row 0"):
        ParametricQPFamily.from_file(tmp_path / "crossed.npz")
    (tmp_path / "junk.npz").write_text("not a zip")
    with pytest.raises(QPValidationError, match="junk.npz: not a readable .npz family file"):
        ParametricQPFamily.from_file(tmp_path / "junk.npz")


def test_the_one_step_env_passes_gymnasiums_checker_and_rewards_a_better_start():
    env = gym.make("amortize/QP-WarmStart-v0", **{k: v for k, v in TINY.items() if k != "family"})
    check_env(env.unwrapped, skip_render_check=True)
    problem = QPWarmStartProblem(ParametricQPSettings(**{k: v for k, v in TINY.items() if k != "family"}))
    x = problem.sample_contexts(4, torch.Generator().manual_seed(0))
    xs, ys, _ = solve_family(problem.qp_family, x.double().numpy(), 1e-8)
    perfect = torch.as_tensor(np.concatenate([xs, ys], axis=1), dtype=torch.float32)
    assert torch.all(problem.objective(perfect, x) == 0.25)  # stopped at the first check: 25 iterations
    assert torch.all(problem.objective(torch.zeros_like(perfect), x) > 0.25)
    with pytest.raises(ValueError, match="contexts contain NaN"):
        problem.objective(perfect, torch.full_like(x, float("nan")))


def _zero_starter(family: ParametricQPFamily) -> WarmStarter:
    net = WarmStartNet(family.context_dim, family.n + family.m, (8,))
    torch.nn.init.zeros_(net.net[-1].weight)
    torch.nn.init.zeros_(net.net[-1].bias)
    d, k = family.context_dim, family.n + family.m
    stats = {"context_mean": np.zeros(d), "context_std": np.ones(d), "out_mean": np.zeros(k), "out_std": np.ones(k)}
    return WarmStarter(family, {"kind": "mpc"}, net, stats, 1e-5)


def test_a_perfect_start_stops_osqp_at_its_first_check_and_a_zero_one_is_cold_osqp():
    family = make_family(ParametricQPSettings(kind="mpc", size=3, horizon=5))
    seq = family.sequence(12, np.random.default_rng(5))
    xs, ys, _ = solve_family(family, seq, 1e-9)
    perfect = run_osqp(family, seq, 1e-5, lambda t, c: (xs[t], ys[t]))
    assert perfect["iterations"] == [25] * len(seq) and perfect["statuses"] == ["solved"] * len(seq)
    cold = run_osqp(family, seq, 1e-5, lambda t, c: (np.zeros(family.n), np.zeros(family.m)))
    starter = _zero_starter(family)
    assert np.all(starter.predict(seq)[0] == 0) and np.all(starter.predict(seq)[1] == 0)
    zero = [starter.solve(c, eps_abs=1e-5, eps_rel=1e-5).info.iter for c in seq]
    assert zero == cold["iterations"]
    assert cold["iterations"][0] > 25


def test_bad_contexts_name_the_family_and_the_shape():
    starter = _zero_starter(make_family(ParametricQPSettings(kind="mpc", size=3, horizon=5)))
    with pytest.raises(ValueError, match="a context has 3 entries; got an array of shape \\(4,\\)"):
        starter.predict(np.zeros(4))
    with pytest.raises(ValueError, match="contexts contain NaN or inf"):
        starter.solve(np.array([0.0, np.nan, 0.0]))


def test_the_deployable_starter_imports_neither_gymnasium_nor_sb3():
    code = ("import sys; from learned_optimizers.qp.warm_start import WarmStarter; "
            "bad = [m for m in ('gymnasium', 'stable_baselines3') if m in sys.modules]; assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_train_resume_eval_and_bench_a_warm_start_run(tmp_path, capsys):
    run = train(tiny_config(40), name="ws", root=tmp_path)
    starter = WarmStarter.load(run.path / "warm_start.pt")
    assert (run.path / "labels.pt").is_file() and (run.path / "best" / "warm_start.pt").is_file()
    resume(run.path, ["train.total_steps=60"])
    assert WarmStarter.load(run.path / "warm_start.pt").metadata["step"] == 60
    c = starter.family.sample_contexts(3, np.random.default_rng(9))
    x, y = starter.predict(c)
    assert x.shape == (3, starter.family.n) and y.shape == (3, starter.family.m)
    assert main(["eval", str(run.path), "--episodes", "5"]) == 0
    assert "previous solution" in capsys.readouterr().out
    assert main(["bench", "warm-start", "--checkpoint", str(run.path), "--contexts", "3", "--sequences", "2",
                 "--root", str(tmp_path), "--name", "b"]) == 0
    record = json.loads((tmp_path / "b" / "bench.json").read_text())
    osqp_rows = {k.rsplit(" @ ", 1)[0] for k in record["methods"] if not k.startswith("core, ")}
    assert osqp_rows == {"cold (x = y = 0)", "previous solution", "learned [1]", "learned [1] + last error"}
    core_rows = {k.rsplit(" @ ", 1)[0] for k in record["methods"] if k.startswith("core, ")}
    assert core_rows == {f"core, {rho} rho, {start}" for rho in ("osqp's", "RLQP") for start in ("cold", "learned [1]")}
    # our core with osqp's rho from zero takes osqp's own iterations on the first context (no rho carried yet)
    assert record["methods"]["core, osqp's rho, cold @ 0.001"]["solved"] == 6
    # two sequences of three contexts, pooled; each learned row also gives its speed-up on each sequence
    assert record["sequences"] == 2 and "x cold (b) per sequence" in record["table"]
    assert all(len(record["methods"][f"learned [1] @ {eps:g}"]["speedup_over_cold_batched_per_sequence"]) == 2
               for eps in (1e-3, 1e-5))
    with pytest.raises(ValueError, match="--sequences=0"):
        bench_warm_start([str(run.path)], sequences=0, root=tmp_path)
    assert record["checkpoints"] == {"learned [1]": str(run.path)}
    assert max(len(line) for line in record["table"].splitlines()) <= 120
    for key, m in record["methods"].items():
        assert m["solved"] == m["contexts"] == 6, key
        assert m.get("solved_by_cold_but_not_here", 0) == 0
    with pytest.raises(ValueError, match="give at least one --checkpoint"):
        bench_warm_start([], root=tmp_path)


@pytest.mark.parametrize("kind", ["mpc", "portfolio"])
def test_the_shipped_starters_load_small_and_start_osqp_closer_than_zero(kind):
    starter = WarmStarter.shipped(kind)
    from learned_optimizers.qp.warm_start import SHIPPED
    assert (SHIPPED / f"warm_start_{kind}.pt").stat().st_size < 2_000_000
    seq = starter.family.sequence(20, np.random.default_rng(1_000_003))
    x, y = starter.predict(seq)
    cold = run_osqp(starter.family, seq, 1e-3, lambda t, c: (np.zeros(starter.family.n), np.zeros(starter.family.m)))
    learned = run_osqp(starter.family, seq, 1e-3, lambda t, c: (x[t], y[t]))
    assert learned["statuses"] == cold["statuses"] == ["solved"] * len(seq)
    assert np.median(learned["iterations"]) < np.median(cold["iterations"])
    with pytest.raises(FileNotFoundError, match="no shipped warm starter for family 'lasso'; shipped: mpc, portfolio"):
        WarmStarter.shipped("lasso")


def test_a_users_family_file_trains_and_deploys(tmp_path):
    family = make_family(ParametricQPSettings(kind="portfolio", size=6, seed=4))
    family.save(tmp_path / "mine.npz")
    config = tiny_config(20)
    config.problem = ParametricQPSettings(path=str(tmp_path / "mine.npz"))
    run = train(config, name="mine", root=tmp_path)
    starter = WarmStarter.load(run.path / "warm_start.pt")
    assert starter.family.name == "mine" and starter.family.context_dim == family.context_dim
    c = family.sample_contexts(2, np.random.default_rng(0))
    assert starter.solve(c[0]).info.status == "solved"
    with pytest.raises(QPValidationError, match="no family file there"):
        make_family(ParametricQPSettings(path=str(tmp_path / "absent.npz")))


@pytest.mark.parametrize("kind", ["mpc", "portfolio"])
def test_the_unrolled_admm_loss_gradient_matches_finite_differences(kind):
    """The objective-based loss (log residual after k ADMM steps from the start) differentiated through the
    unrolled solver equals central differences in the start, on a tiny family."""
    family = make_family(ParametricQPSettings(kind=kind, size=2, horizon=3, seed=1))
    unrolled = UnrolledADMM(family)
    c = torch.as_tensor(family.sample_contexts(3, np.random.default_rng(2)))
    gen = torch.Generator().manual_seed(0)
    x = (0.1 * torch.randn(3, family.n, generator=gen, dtype=torch.float64)).requires_grad_()
    y = (0.1 * torch.randn(3, family.m, generator=gen, dtype=torch.float64)).requires_grad_()
    loss = unrolled.run(c, x, y, 4).log_loss()
    gx, gy = torch.autograd.grad(loss, (x, y))
    h = 1e-6
    for grad, which in ((gx, 0), (gy, 1)):
        for i in range(3):
            for j in (0, grad.shape[1] - 1):
                start = [x.detach().clone(), y.detach().clone()]
                start[which][i, j] += h
                up = unrolled.run(c, *start, 4).log_loss()
                start[which][i, j] -= 2 * h
                down = unrolled.run(c, *start, 4).log_loss()
                assert float(grad[i, j]) == pytest.approx(float(up - down) / (2 * h), rel=1e-4, abs=1e-7)


def test_the_unrolled_admm_residuals_vanish_at_the_solution():
    family = make_family(ParametricQPSettings(kind="portfolio", size=6))
    contexts = family.sample_contexts(4, np.random.default_rng(3))
    xs, ys, statuses = solve_family(family, contexts, 1e-9)
    unrolled = UnrolledADMM(family)
    c = torch.as_tensor(contexts)
    exact = unrolled.run(c, torch.as_tensor(xs), torch.as_tensor(ys), 5)
    zero = unrolled.run(c, torch.zeros(4, family.n, dtype=torch.float64), torch.zeros(4, family.m, dtype=torch.float64), 5)
    assert statuses == ["solved"] * 4
    assert float((exact.primal + exact.dual).max()) < 1e-6 < float((zero.primal + zero.dual).min())
    with pytest.raises(ValueError, match="steps=0"):
        unrolled.run(c, torch.as_tensor(xs), torch.as_tensor(ys), 0)
    with pytest.raises(ValueError, match=f"y must be \\(4, {family.m}\\), one row per context"):
        unrolled.run(c, torch.as_tensor(xs), torch.as_tensor(ys[:, :-1]), 5)
    bad = c.clone()
    bad[1, 0] = float("nan")
    with pytest.raises(ValueError, match="contexts contain NaN or inf"):
        unrolled.run(bad, torch.as_tensor(xs), torch.as_tensor(ys), 5)


def test_the_objective_kind_regresses_then_lowers_the_unrolled_residual(tmp_path):
    """warm_start_objective: the first half of the steps fit the labels, the rest descend the log residual of k
    ADMM steps unrolled from the prediction; the model it ends with leaves a lower residual than where the
    objective phase began."""
    config = tiny_config(80, kind="warm_start_objective", unroll_steps=3, learning_rate=3e-3)
    run = train(config, name="wso", root=tmp_path)
    regression = [s for steps in scalar_steps(run.path, "train/regression_loss") for s in steps]
    residual = [s for steps in scalar_steps(run.path, "train/admm_log_residual") for s in steps]
    assert regression and residual and max(regression) < min(residual) and min(residual) >= 40
    baseline = train(tiny_config(80), name="wsr", root=tmp_path)  # the same steps, all regression

    def unrolled_loss(path) -> float:
        starter = WarmStarter.load(path / "warm_start.pt")
        contexts = starter.family.sample_contexts(64, np.random.default_rng(11))
        x, y = starter.predict(contexts)
        residuals = UnrolledADMM(starter.family).run(torch.as_tensor(contexts), torch.as_tensor(x), torch.as_tensor(y), 3)
        return float(residuals.log_loss())

    assert unrolled_loss(run.path) < unrolled_loss(baseline.path)


def test_the_unrolled_admm_takes_the_cores_iterates():
    """On the context the scaling was computed for, k unrolled steps from a start end where our core (which
    reproduces osqp) ends after k iterations at the same fixed rho, from the same warm start."""
    family = make_family(ParametricQPSettings(kind="mpc", size=3, horizon=4, seed=2))
    unrolled = UnrolledADMM(family, rho=0.3)
    context = family.context_mean[None, :]
    gen = torch.Generator().manual_seed(1)
    x0 = torch.randn(1, family.n, generator=gen, dtype=torch.float64)
    y0 = torch.randn(1, family.m, generator=gen, dtype=torch.float64)
    core = OSQPBatch([family.qp(family.context_mean)], OSQPSettings(rho=0.3, adaptive_rho=False))
    core.warm_start(x0, y0)
    core.advance(7, check_termination=False)
    state = core.state()
    q, _, _ = family.data(context)
    A, P = torch.as_tensor(family.A.toarray()), torch.as_tensor(family.P.toarray())
    primal = (state["x"] @ A.T - state["z"]).norm(dim=1) / family.m ** 0.5
    dual = (state["x"] @ P + torch.as_tensor(q) + state["y"] @ A).norm(dim=1) / family.n ** 0.5
    ours = unrolled.run(context, x0, y0, 7)
    assert float(primal) > 1e-6 and float(dual) > 1e-6  # not converged: the comparison means something
    torch.testing.assert_close(ours.primal, primal, rtol=1e-8, atol=1e-12)
    torch.testing.assert_close(ours.dual, dual, rtol=1e-8, atol=1e-12)


def test_sb3_on_the_one_step_env_trains_exports_a_starter_and_benches(tmp_path, capsys):
    """The third way: SAC on QP-WarmStart-v0. Its actor, exported as a WarmStarter (no SB3 needed to load it),
    predicts exactly SB3's deterministic action; eval and the bench take the run like a regression run."""
    from agents.common.sb3 import deterministic_actions
    from agents.registry import make_agent

    config = config_from_dict({"device": "cpu", "seed": 2, "env": "amortize/QP-WarmStart-v0", "problem": TINY,
                               "agent": {"kind": "sac", "net_arch": [16, 16], "n_envs": 4, "batch_size": 16,
                                         "learning_starts": 8},
                               "train": {"total_steps": 32, "checkpoint_every": 16, "eval_every": 16, "log_every": 8},
                               "eval": {"seed": 1000003}})
    run = train(config, name="sac", root=tmp_path)
    starter = WarmStarter.load(run.path / "warm_start.pt")
    assert starter.squash and starter.metadata["agent"] == "sac" and starter.metadata["step"] == 32
    assert scalar_steps(run.path, "eval/osqp_iterations_cold_over_learned") == [[16, 32]]
    agent = make_agent(config, run)
    model = agent.load_model()
    contexts = starter.family.sample_contexts(5, np.random.default_rng(3))
    sb3 = deterministic_actions(model, torch.as_tensor(contexts, dtype=torch.float32)).double().numpy()
    x, y = starter.predict(contexts)
    np.testing.assert_allclose(np.concatenate([x, y], axis=1), sb3, rtol=1e-5, atol=1e-5)
    low, high = model.action_space.low, model.action_space.high
    assert np.all(np.concatenate([x, y], axis=1) >= low - 1e-5) and np.all(np.concatenate([x, y], axis=1) <= high + 1e-5)
    assert main(["eval", str(run.path), "--episodes", "3"]) == 0
    assert "previous solution" in capsys.readouterr().out
    assert main(["bench", "warm-start", "--checkpoint", str(run.path), "--contexts", "3", "--sequences", "1",
                 "--root", str(tmp_path), "--name", "b"]) == 0
    record = json.loads((tmp_path / "b" / "bench.json").read_text())
    assert record["methods"]["learned [1] @ 1e-05"]["contexts"] == 3
