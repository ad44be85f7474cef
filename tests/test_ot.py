"""Meta OT: our batched log-domain Sinkhorn against POT, the dual objective, the families and their checks, the
one-step env and Sinkhorn as a fixed-point map, training, the deployable model and ``amortize bench ot``."""

from __future__ import annotations

import json
import subprocess
import sys

import gymnasium as gym
import numpy as np
import ot
import pytest
import torch
from gymnasium.utils.env_checker import check_env

import envs  # noqa: F401  (registers the env ids)
from agents.ot.bench import bench_ot
from agents.registry import config_from_dict
from agents.workflows import evaluate, train
from learned_optimizers.common.fixed_point_map import FixedPointTaskSettings
from learned_optimizers.families import make_map, make_problem
from learned_optimizers.fixed_point import core as fp
from learned_optimizers.ot import sinkhorn as sk
from learned_optimizers.ot.measures import MeasureError, digit_images, digit_split
from learned_optimizers.ot.meta_ot import MetaOT
from learned_optimizers.ot.problem import centred


def _pairs(family: str, n: int, seed: int = 0, heldout: bool = True, **settings):
    problem = make_problem(family, **settings)
    gen = torch.Generator().manual_seed(seed)
    x = problem.sample_heldout_contexts(n, gen) if heldout else problem.sample_contexts(n, gen)
    a, b = problem.pairs.split(x.double())
    return problem, x, a, b


def _pot(a, b, cost, eps, tol, u0=None):
    its, plans = [], []
    for i in range(a.shape[0]):
        warm = None if u0 is None else (u0[i].numpy(), np.zeros(b.shape[1]))
        plan, log = ot.sinkhorn(a[i].numpy(), b[i].numpy(), cost.numpy(), eps, method="sinkhorn_log", stopThr=tol,
                                numItermax=5000, log=True, warn=False, warmstart=warm)
        its.append(log["niter"] + 1)
        plans.append(plan)
    return np.asarray(its), np.stack(plans)


@pytest.mark.parametrize("family,grid", [("ot-digits", 8), ("ot-gaussians", 10)])
@pytest.mark.parametrize("tol", [1e-3, 1e-6])
def test_our_sinkhorn_reproduces_pots_iterations_and_plans(family, grid, tol):
    problem, _, a, b = _pairs(family, 12, grid=grid)
    cost, eps = problem.pairs.cost_on(a), problem.settings.epsilon
    result = sk.sinkhorn(a, b, cost, eps, tol=tol, max_iterations=5000)
    its, plans = _pot(a, b, cost, eps, tol)
    assert (result.iterations.numpy() == its).all() and its.min() > 1
    assert np.abs(sk.plan(result, cost).numpy() - plans).max() < 1e-6
    assert result.converged.all()


def test_a_warm_start_matches_pots_warmstart_and_the_fallback_path_matches_too():
    problem, _, a, b = _pairs("ot-gaussians", 6, grid=8)
    cost, eps = problem.pairs.cost_on(a), problem.settings.epsilon
    u0 = sk.sinkhorn(a, b, cost, eps, tol=1e-2).u + 0.3 * torch.randn(a.shape, generator=torch.Generator().manual_seed(1),
                                                                         dtype=torch.float64)
    result = sk.sinkhorn(a, b, cost, eps, tol=1e-6, u0=u0)
    its, plans = _pot(a, b, cost, eps, 1e-6, u0)
    assert (result.iterations.numpy() == its).all()
    # a tiny epsilon makes the matrix-product LSE unsafe: the exact logsumexp rows take over, POT's counts still hold
    small = 1e-3
    fallback = sk.sinkhorn(a[:3], b[:3], cost, small, tol=1e-3, max_iterations=3000)
    spread = fallback.u.max(1).values - fallback.u.min(1).values
    assert (spread > 600).any()  # beyond the matrix product's safe range: those rows took the exact path
    its_small, plans_small = _pot(a[:3], b[:3], cost, small, 1e-3)
    assert (fallback.iterations.numpy() == its_small).all() and fallback.converged.all()
    assert np.abs(sk.plan(fallback, cost).numpy() - plans_small).max() < 1e-6
    # one cost per pair (B, n, m) gives the same answer as the shared one
    per_pair = sk.sinkhorn(a, b, cost.expand(a.shape[0], -1, -1).clone(), eps, tol=1e-6, u0=u0)
    assert (per_pair.iterations == result.iterations).all() and torch.allclose(per_pair.u, result.u)


def test_the_budget_and_the_trace_of_violations():
    problem, _, a, b = _pairs("ot-digits", 4, grid=8)
    cost, eps = problem.pairs.cost_on(a), problem.settings.epsilon
    capped = sk.sinkhorn(a, b, cost, eps, tol=1e-9, max_iterations=25)
    assert (capped.iterations == 25).all() and (capped.status == sk.SinkhornStatus.MAX_ITERATIONS).all()
    full = sk.sinkhorn(a, b, cost, eps, tol=1e-6)
    its_3 = full.iterations_to(1e-3)
    assert (sk.sinkhorn(a, b, cost, eps, tol=1e-3).iterations.double() == its_3).all()
    assert torch.isinf(full.iterations_to(1e-12)).all()


def test_the_dual_objective_gradient_matches_finite_differences_and_peaks_at_sinkhorns_solution():
    problem, _, a, b = _pairs("ot-gaussians", 2, grid=3, epsilon=0.1)
    kernel = problem.pairs.kernel_on(a)
    f = torch.randn(a.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(0), requires_grad=True)
    assert torch.autograd.gradcheck(lambda f: sk.dual_objective(f, a, b, kernel), (f,), eps=1e-6, atol=1e-7)
    # at Sinkhorn's solution the gradient a - P 1 vanishes, and the value is the largest around it
    best = sk.sinkhorn(a, b, kernel, 0.1, tol=1e-12, max_iterations=20_000).f.requires_grad_(True)
    value = sk.dual_objective(best, a, b, kernel)
    (grad,) = torch.autograd.grad(value.sum(), best)
    assert grad.abs().max() < 1e-10
    for _ in range(5):
        other = best.detach() + 0.05 * torch.randn(a.shape, dtype=torch.float64)
        assert (sk.dual_objective(other, a, b, kernel) < value.detach() + 1e-12).all()
    assert torch.allclose(sk.dual_objective(best.detach() + 3.0, a, b, kernel), value.detach())  # f + c


def test_bad_measures_and_contexts_give_named_errors():
    problem, x, a, b = _pairs("ot-digits", 2, grid=4)
    cost = problem.pairs.cost_on(a)
    nan, neg, heavy = a.clone(), a.clone(), a.clone()
    nan[0, 1] = float("nan")
    neg[1, 0], neg[1, 1] = -0.01, neg[1, 1] + 0.01
    heavy[0] *= 1.5
    for bad, words in ((nan, "NaN"), (neg, "negative"), (heavy, "sums to")):
        with pytest.raises(MeasureError, match=f"a: .*{words}"):
            sk.sinkhorn(bad, b, cost, 0.01)
    with pytest.raises(MeasureError, match="cost: must be"):
        sk.sinkhorn(a[:, :8] / a[:, :8].sum(1, keepdim=True), b, cost, 0.01)
    with pytest.raises(ValueError, match="epsilon"):
        sk.sinkhorn(a, b, cost, -1.0)
    with pytest.raises(MeasureError, match="16 grid points, shape"):
        problem.check_contexts(x[:, :20])
    wrong_mass = x.clone()
    wrong_mass[0, :16] *= 2
    with pytest.raises(MeasureError, match="b|a"):
        problem.check_contexts(wrong_mass)
    env = gym.make_vec("amortize/OT-Potential-v0", num_envs=2, vectorization_mode="vector_entry_point", grid=4)
    with pytest.raises(MeasureError, match="negative"):
        env.reset(options={"contexts": torch.cat([neg.float(), b.float()], 1)})


def test_heldout_digit_pairs_use_images_training_never_sees():
    problem, x, _, _ = _pairs("ot-digits", 200, grid=8)
    images = digit_images(8)
    train_idx, held_idx = digit_split(images.shape[0], problem.settings.heldout_fraction)
    assert set(train_idx.tolist()).isdisjoint(held_idx.tolist())
    measures = x.reshape(-1, 64).double()

    def origin(pool):  # the image each measure was made from, if in ``pool``
        p = images[pool] / images[pool].sum(1, keepdim=True)
        mixed = (1 - problem.settings.uniform_weight) * p + problem.settings.uniform_weight / 64
        return (torch.cdist(measures, mixed).min(1).values < 1e-6)

    assert origin(held_idx).all() and not origin(train_idx).any()
    measures = problem.sample_contexts(100, torch.Generator().manual_seed(0)).reshape(-1, 64).double()
    assert origin(train_idx).all() and not origin(held_idx).any()
    with pytest.raises(MeasureError, match="heldout_fraction=0.9999: holds out all"):
        make_problem("ot-digits", grid=8, heldout_fraction=0.9999).sample_contexts(2, torch.Generator())


def test_the_envs_pass_gymnasiums_checker_and_the_reward_is_the_dual():
    env = gym.make("amortize/OT-Potential-v0", family="ot-gaussians", grid=5)
    check_env(env.unwrapped)
    obs, _ = env.reset(seed=0)
    problem = make_problem("ot-gaussians", grid=5)
    x = torch.as_tensor(obs).unsqueeze(0)
    best = problem.reference_solutions(x)
    _, reward, terminated, _, info = env.step(best[0].numpy())
    assert terminated and reward == pytest.approx(-float(problem.objective(best, x)), rel=1e-5)
    env.reset(seed=0)
    _, zero_reward, _, _, _ = env.step(np.zeros(25, dtype=np.float32))
    assert zero_reward < reward
    fp_env = gym.make("amortize/FixedPoint-v0", family="sinkhorn-digits", grid=4)
    check_env(fp_env.unwrapped)


def test_sinkhorn_as_a_fixed_point_map_is_our_sinkhorn():
    fp_map = make_map("sinkhorn-gaussians", grid=6)
    x = fp_map.sample_heldout_contexts(5, torch.Generator().manual_seed(2)).double()
    trace = fp.solve(fp_map, x, fp_map.settings, 30)  # neural_fp mode, no policy: the plain iteration
    a, b = fp_map.pairs.split(x)
    cost = fp_map.pairs.cost_on(a)
    ours = sk.sinkhorn(a, b, cost, fp_map.pairs.epsilon, tol=1e-300, max_iterations=30)
    assert torch.allclose(trace.y, ours.f, atol=1e-10)
    stopped = sk.sinkhorn(a, b, cost, fp_map.pairs.epsilon, tol=1e-4, max_iterations=500)
    before = sk.sinkhorn(a, b, cost, fp_map.pairs.epsilon, tol=1e-300, max_iterations=int(stopped.iterations.min()) - 1)
    # the map's own stopping test from the iterate before the last step is POT's test after it
    assert fp_map.termination(before.f, x, 1e-4)[int(stopped.iterations.argmin())]
    assert isinstance(fp_map.settings, FixedPointTaskSettings) and fp_map.settings.mode == "neural_fp"


def _tiny_config(kind: str, steps: int, **agent):
    return config_from_dict({
        "device": "cpu", "seed": 0, "env": "amortize/OT-Potential-v0",
        "problem": {"family": "ot-gaussians", "grid": 6, "epsilon": 0.02},
        "agent": {"kind": kind, "hidden_sizes": [128], "batch_size": 64, "learning_rate": 1e-3, **agent},
        "train": {"total_steps": steps, "checkpoint_every": steps, "eval_every": steps, "log_every": 50},
        "eval": {"contexts": 64, "seed": 1000003, "episodes": 2, "timing_repeats": 2}})


def test_objective_training_cuts_sinkhorn_iterations_and_the_model_deploys(tmp_path):
    run = train(_tiny_config("objective", 400), name="ot-tiny", root=tmp_path)
    meta = MetaOT.load(run.path / "model.pt")
    problem, x, a, b = _pairs("ot-gaussians", 64, seed=5, grid=6, epsilon=0.02)
    zero = sk.sinkhorn(a, b, problem.pairs.cost_on(a), 0.02, tol=1e-6)
    learned = meta.solve(a, b, tol=1e-6)
    assert learned.converged.all()
    # after one iteration (POT's first check) the learned start's violation is a fraction of the zero start's
    first_zero, first_learned = zero.errors_at_checks[:, 0].median(), learned.errors_at_checks[:, 0].median()
    assert first_learned < 0.5 * first_zero, (first_learned, first_zero)
    assert learned.iterations.double().mean() < zero.iterations.double().mean()
    assert torch.allclose(meta.predict(a, b), meta.potentials(x), atol=1e-6)
    # the real POT from the learned start needs fewer iterations too, and reaches the same plan
    u, v = meta.pot_warmstart(a[0], b[0])
    _, log_zero = ot.sinkhorn(a[0].numpy(), b[0].numpy(), problem.pairs.cost_on(a).numpy(), 0.02,
                              method="sinkhorn_log", stopThr=1e-6, log=True)
    _, log_warm = ot.sinkhorn(a[0].numpy(), b[0].numpy(), problem.pairs.cost_on(a).numpy(), 0.02,
                              method="sinkhorn_log", stopThr=1e-6, log=True, warmstart=(u, v))
    assert log_warm["niter"] < log_zero["niter"]
    with pytest.raises(MeasureError, match="36 points"):
        meta.predict(a[:, :30], b)
    with pytest.raises(ValueError, match="not of an OT family"):
        sphere = train(config_from_dict({"device": "cpu", "problem": {"family": "sphere"},
                                         "agent": {"kind": "objective", "hidden_sizes": [8]},
                                         "train": {"total_steps": 2, "eval_every": 2, "checkpoint_every": 2},
                                         "eval": {"contexts": 4, "episodes": 1, "timing_repeats": 1},
                                         "solver": {"restarts": 1, "steps": 2}}), name="sphere", root=tmp_path)
        MetaOT.load(sphere.path / "model.pt")


def test_regression_labels_are_sinkhorns_converged_potentials(tmp_path):
    config = _tiny_config("regression", 20, dataset_size=32)
    run = train(config, name="ot-reg", root=tmp_path)
    blob = torch.load(run.checkpoints / "regression_dataset.pt", weights_only=True)
    x, y = blob["contexts"], blob["solution"]
    problem = make_problem("ot-gaussians", grid=6, epsilon=0.02)
    a, b = problem.pairs.split(x.double())
    exact = centred(sk.sinkhorn(a, b, problem.pairs.cost_on(a), 0.02, tol=1e-9, max_iterations=20_000).f)
    assert torch.allclose(y.double(), exact, atol=1e-5)


def test_the_deployable_path_imports_neither_gymnasium_nor_sb3():
    code = ("import sys; from learned_optimizers.ot.meta_ot import MetaOT; from learned_optimizers.ot import sinkhorn;"
            "bad = [m for m in ('gymnasium', 'stable_baselines3', 'agents', 'envs') if m in sys.modules];"
            "print(bad); sys.exit(1 if bad else 0)")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).returncode == 0


def test_bench_ot_compares_pot_and_ours_on_the_same_pairs(tmp_path):
    run = train(_tiny_config("objective", 100), name="ot-bench-run", root=tmp_path)
    summary = bench_ot(family="gaussians", checkpoints=[str(run.path)], contexts=12, repeats=1, root=tmp_path,
                       name="bench-ot", device="cpu")
    methods = {(m["solver"], m["label"]): m for m in summary["methods"]}
    assert set(s for s, _ in methods) == {"POT", "ours"} and len(methods) == 4
    pot_zero, ours_zero = methods[("POT", "zero")], methods[("ours", "zero")]
    for key in ("median_iterations_0.001", "median_iterations_1e-06", "converged_1e-06"):
        assert pot_zero[key] == ours_zero[key]
    assert max(len(line) for line in summary["table"].splitlines()) <= 120
    result = evaluate(run.path, episodes=2)  # amortize eval: episodes, the dual gap, our Sinkhorn from both starts
    starts = {r["label"]: r for r in result["sinkhorn"]["starts"]}
    assert set(starts) == {"zero start", "objective"} and result["vs_solver"]["gap_mean"] >= -1e-6
    assert starts["zero start"]["converged_1e-06"] == result["sinkhorn"]["pairs"]
    saved = json.loads((tmp_path / "bench-ot" / "bench.json").read_text())
    assert saved["pairs"] == 12 and (tmp_path / "bench-ot" / "plots" / "ot_gaussians.png").stat().st_size > 10_000
    with pytest.raises(ValueError, match="allowed: digits, gaussians"):
        bench_ot(family="mnist", root=tmp_path)


def test_the_shipped_digits_model_starts_sinkhorn_closer_on_heldout_pairs():
    meta = MetaOT.shipped("digits")
    assert meta.problem.family == "ot-digits" and meta.size == 256 and meta.epsilon == 0.01
    x = meta.problem.sample_heldout_contexts(64, torch.Generator().manual_seed(1_000_003))
    a, b = meta.problem.pairs.split(x.double())
    zero = sk.sinkhorn(a, b, meta.problem.pairs.kernel_on(a), meta.epsilon, tol=1e-3)
    learned = meta.solve(a, b, tol=1e-3)
    assert zero.iterations.double().median() >= 2.5 * learned.iterations.double().median()
    # POT from the shipped model's start: the same iterations as ours from it
    its, _ = _pot(a[:6], b[:6], meta.cost, meta.epsilon, 1e-3, u0=meta.predict(a[:6], b[:6]) / meta.epsilon)
    assert (its == learned.iterations[:6].numpy()).all()
    with pytest.raises(ValueError, match="shipped: digits"):
        MetaOT.shipped("mnist")
