"""Fixed-point core, maps and env: Anderson against a float64 reference, neutral actions, contracts."""

from dataclasses import replace

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env

import envs  # noqa: F401  (registers the ids)
from envs.fixed_point import DIVERGED_PENALTY, FixedPointVectorEnv
from learned_optimizers.common.features import compress
from learned_optimizers.common.settings import SettingsError
from learned_optimizers.families import make_map
from learned_optimizers.fixed_point import core as fp
from learned_optimizers.fixed_point.anderson import History, anderson_coefficients
from learned_optimizers.fixed_point.maps import DEQSettings, ISTASettings, soft_threshold
from learned_optimizers.fixed_point.neural_fp import FixedPointAccelerator


def numpy_deq(fp_map):
    W, U, b = (p.numpy() for p in fp_map.parameters_on(torch.zeros(1, dtype=torch.float64)))
    return lambda y, x: np.tanh(W @ y + U @ x + b)


def reference_anderson(g, x, y0, steps, memory, lam, beta):
    """Textbook type-II AA for one instance, float64 numpy: alpha = (H + lam I)^-1 1 / 1'(H + lam I)^-1 1."""
    ys, fs, out = [y0], [g(y0, x)], [y0]
    y = (1 - beta) * y0 + beta * fs[0] if steps else y0
    for _ in range(steps):
        ys.append(y)
        fs.append(g(y, x))
        out.append(y)
        X, F = np.array(ys[-memory:]), np.array(fs[-memory:])
        G = F - X
        H = G @ G.T
        H = H / np.mean(np.diag(H)) + lam * np.eye(len(G))
        w = np.linalg.solve(H, np.ones(len(G)))
        alpha = w / w.sum()
        y = beta * alpha @ F + (1 - beta) * alpha @ X
    return np.array(out)


@pytest.mark.parametrize("beta", [1.0, 0.7])
def test_anderson_matches_float64_reference(beta):
    fp_map = make_map("deq", dim=12, context_dim=4, memory=4, beta=beta)
    settings = fp_map.settings
    x = fp_map.sample_contexts(3, torch.Generator().manual_seed(0)).double()
    ratios, iterates = fp.rollout(fp_map, x, settings, 12)
    ours = torch.stack(iterates, 1).numpy()
    g = numpy_deq(fp_map)
    for i in range(3):
        ref = reference_anderson(g, x[i].numpy(), np.zeros(12), 12, 4, settings.regularization, beta)
        np.testing.assert_allclose(ours[i], ref, rtol=1e-9, atol=1e-11)
    assert ratios[:, -1].max() < 1e-3 * ratios[:, 0].min()  # and it does accelerate


def test_anderson_singular_system_falls_back_to_plain_step():
    y = torch.ones(2, 3, dtype=torch.float64)
    h = History.empty(2, 3, 3, y)
    for _ in range(3):  # identical pairs: a rank-one Gram matrix
        h = h.push(y, 2 * y)
    h.F[1] = float("nan")
    alpha, failed = anderson_coefficients(h, regularization=0.0)
    assert failed.tolist() == [True, True]
    torch.testing.assert_close(alpha, torch.tensor([[0.0, 0, 1], [0, 0, 1]], dtype=torch.float64))


def test_zero_action_is_plain_iteration_and_anderson_exactly():
    for mode in ("neural_fp", "hyper_aa"):
        env = FixedPointVectorEnv(4, "deq", dim=10, context_dim=3, mode=mode, max_steps=30)
        env.reset(seed=1)
        x, y = env.contexts.clone(), env.state.y.clone()
        classical = fp.solve(env.map, x, env.task, 8)  # no policy: the classical method of the mode
        ratios = [env.state.ratio.float()]
        for _ in range(8):
            _, _, _, _, info = env.step(torch.zeros(4, env.single_action_space.shape[0]))
            ratios.append(info["residual_ratio"])
        torch.testing.assert_close(torch.stack(ratios, 1), classical.ratios.float(), rtol=0, atol=0)
    plain = FixedPointVectorEnv(2, "deq", dim=10, context_dim=3, mode="neural_fp")
    plain.reset(seed=2)
    y = plain.state.y
    for _ in range(3):
        y = plain.map.g(y, plain.contexts)
        plain.step(np.zeros((2, 10), dtype=np.float32))
    torch.testing.assert_close(plain.state.y, y, rtol=0, atol=0)


def test_untrained_accelerator_is_the_classical_method():
    fp_map = make_map("ista", atoms=16, signal_dim=8, sparsity=2, mode="hyper_aa")
    x = fp_map.sample_contexts(5, torch.Generator().manual_seed(3)).double()
    model = FixedPointAccelerator.for_settings(fp_map, hidden_sizes=(8,))
    torch.testing.assert_close(model.solve(x, 10).ratios, fp.solve(fp_map, x, fp_map.settings, 10).ratios)


@pytest.mark.filterwarnings("ignore:.*infinity.*")
@pytest.mark.parametrize("mode", ["neural_fp", "hyper_aa"])
@pytest.mark.parametrize("family", ["deq", "ista"])
def test_fixed_point_env_passes_check_env(family, mode):
    env = gym.make("amortize/FixedPoint-v0", family=family, mode=mode)
    check_env(env.unwrapped, skip_render_check=True)


def test_nan_map_ends_the_episode_with_a_status():
    env = FixedPointVectorEnv(3, "deq", dim=6, context_dim=2)
    env.reset(seed=0)
    real_g = env.map.g

    def broken(y, x):
        out = real_g(y, x).clone()
        out[0] = float("nan")
        return out

    env.map.g = broken
    _, reward, terminated, truncated, info = env.step(torch.zeros(3, env.single_action_space.shape[0]))
    assert info["status"].tolist()[0] == fp.FixedPointStatus.DIVERGED
    assert terminated.tolist() == [True, False, False] and not truncated.any()
    assert reward[0] == -DIVERGED_PENALTY and torch.isfinite(reward).all()
    assert info["status"][1] == fp.FixedPointStatus.RUNNING
    single = gym.make("amortize/FixedPoint-v0", family="deq", dim=6, context_dim=2).unwrapped
    single.reset(seed=0)
    _, r, term, _, inf = single.step(np.full(single.action_space.shape, np.nan, dtype=np.float32))
    assert term and inf["status"] == "diverged" and r == -DIVERGED_PENALTY


def test_episode_ends_at_tolerance_or_after_max_steps():
    env = FixedPointVectorEnv(4, "deq", dim=8, context_dim=2, max_steps=5, tol=1e-3, mode="hyper_aa")
    env.reset(seed=0)
    for k in range(5):
        _, _, terminated, truncated, info = env.step(torch.zeros(4, 6))
        done = terminated | truncated
        if k < 4:
            assert torch.equal(terminated, info["residual_ratio"] <= 1e-3)
    assert done.all()
    assert torch.equal(truncated, info["residual_ratio"] > 1e-3)


def test_ista_fixed_point_solves_the_lasso():
    """KKT of min 0.5||Dy - x||^2 + lam ||y||_1 at AA's converged fixed point, checked in numpy."""
    fp_map = make_map("ista", atoms=20, signal_dim=10, sparsity=3, lam=0.05)
    x = fp_map.sample_contexts(4, torch.Generator().manual_seed(0)).double()
    y = fp.converged_solution(fp_map, x, fp_map.settings).numpy()
    D = fp_map.parameters_on(x)[0].numpy()
    for yi, xi in zip(y, x.numpy()):
        grad = D.T @ (xi - D @ yi)  # = lam * sign(y) on the support, |.| <= lam elsewhere
        support = np.abs(yi) > 1e-10
        assert support.any()
        np.testing.assert_allclose(grad[support], 0.05 * np.sign(yi[support]), atol=1e-7)
        assert np.all(np.abs(grad[~support]) <= 0.05 + 1e-7)


def test_soft_threshold_closed_form():
    v = torch.tensor([-2.0, -0.5, 0.0, 0.3, 1.5])
    torch.testing.assert_close(soft_threshold(v, 0.5), torch.tensor([-1.5, 0.0, 0.0, 0.0, 1.0]))


def test_deq_map_is_a_contraction_with_the_chosen_norm():
    fp_map = make_map("deq", dim=32, spectral_norm=0.9)
    W = fp_map.parameters_on(torch.zeros(1, dtype=torch.float64))[0]
    assert torch.linalg.matrix_norm(W, ord=2).item() == pytest.approx(0.9, rel=1e-9)
    assert torch.linalg.eigvals(W).abs().max().item() == pytest.approx(0.9, rel=1e-9)  # radius = norm


def test_safeguard_replaces_bad_steps_and_counts_their_evaluations():
    fp_map = make_map("deq", dim=8, context_dim=2, mode="neural_fp")
    x = fp_map.sample_contexts(6, torch.Generator().manual_seed(0)).double()
    wild = lambda obs: torch.full((obs.shape[0], 8), 50.0)  # noqa: E731
    unguarded = fp.solve(fp_map, x, fp_map.settings, 6, policy=wild)
    guarded = fp.solve(fp_map, x, fp_map.settings, 6, policy=wild, safeguard=1.0)
    plain = fp.solve(fp_map, x, fp_map.settings, 6)
    assert (guarded.safeguard_steps == 6).all()
    torch.testing.assert_close(guarded.ratios, plain.ratios)  # every step replaced by the plain step
    assert guarded.evaluations[:, -1].tolist() == [12] * 6  # and the rejected evaluations are counted
    assert (unguarded.ratios[:, -1] > plain.ratios[:, -1]).all()


def test_bad_settings_name_the_field():
    with pytest.raises(SettingsError, match="mode"):
        DEQSettings(mode="newton")
    with pytest.raises(SettingsError, match="spectral_norm"):
        DEQSettings(spectral_norm=1.2)
    with pytest.raises(SettingsError, match="sparsity"):
        ISTASettings(atoms=4, sparsity=5)
    with pytest.raises(ValueError, match="allowed: deq, ista"):
        make_map("scs-sdp")
    env = FixedPointVectorEnv(2, "deq", dim=4, context_dim=2)
    with pytest.raises(ValueError, match="initial_iterates"):
        env.reset(options={"initial_iterates": torch.zeros(2, 5)})
    with pytest.raises(ValueError, match="initial_iterates.*NaN"):
        env.reset(options={"initial_iterates": torch.full((2, 4), float("nan"))})
    env.reset(seed=0)
    with pytest.raises(ValueError, match="shape"):
        env.step(torch.zeros(2, 3))
    with pytest.raises(ValueError, match="contexts"):
        env.reset(options={"contexts": torch.full((2, 2), float("nan"))})


def test_accelerator_save_load_roundtrip(tmp_path):
    fp_map = make_map("deq", dim=6, context_dim=2, mode="neural_fp")
    model = FixedPointAccelerator.for_settings(fp_map, hidden_sizes=(16,))
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.05)
    model.save(tmp_path / "acc.pt")
    loaded = FixedPointAccelerator.load(tmp_path / "acc.pt")
    x = fp_map.sample_contexts(4, torch.Generator().manual_seed(1))
    torch.testing.assert_close(loaded.solve(x, 5).ratios, model.solve(x, 5).ratios)
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="not a fixed-point accelerator"):
        FixedPointAccelerator.load(tmp_path / "junk.pt")


def test_replace_keeps_map_parameters():
    a = make_map("deq", dim=5, context_dim=2)
    settings = replace(a.settings, mode="neural_fp")
    b = make_map("deq", **{**settings.__dict__})
    for p, q in zip(a.parameters_on(torch.zeros(1)), b.parameters_on(torch.zeros(1))):
        torch.testing.assert_close(p, q)


def test_compressed_features_follow_asinh():
    """The observations' compression equals torch.asinh to the precision it runs in, relatively, over 60
    decades either side of 0 (no overflow), and is differentiable."""
    v = torch.logspace(-30, 30, 601, dtype=torch.float64)
    v = torch.cat([v, -v, torch.zeros(1, dtype=torch.float64)])
    exact = torch.asinh(v)
    for dtype, rtol in ((torch.float32, 1e-6), (torch.float64, 1e-14)):
        got = compress(v, dtype)
        assert got.dtype == dtype and torch.isfinite(got).all()
        assert ((got.double() - exact).abs() <= rtol * exact.abs()).all(), dtype
    assert compress(v.float()).dtype == torch.float32  # the input's precision unless told
    x = torch.tensor([-3.0, 0.5, 2.0], requires_grad=True)
    compress(x).sum().backward()
    assert torch.allclose(x.grad, 1 / torch.sqrt(1 + x.detach() ** 2), atol=1e-6)


def test_the_shipped_accelerator_beats_anderson_in_evaluations_and_stops_with_the_batch():
    """The shipped NeuralFP (configs/fp_deq_neuralfp.yaml, seed 0) on held-out DEQ contexts: every context to
    1e-4 in fewer map evaluations than Anderson, and ``stop_at`` ends the solve once the whole batch is there."""
    acc = FixedPointAccelerator.shipped("deq")
    assert acc.hidden_sizes == (128, 128) and acc.task.mode == "neural_fp"
    x = acc.map.sample_heldout_contexts(64, torch.Generator().manual_seed(5)).double()
    learned = acc.solve(x, 100, stop_at=1e-4)
    anderson = fp.solve(acc.map, x, replace(acc.map.settings, mode="hyper_aa"), 100, stop_at=1e-4)
    for trace in (learned, anderson):
        assert bool((trace.ratios[:, -1] <= 1e-4).all()) and not bool((trace.ratios[:, -2] <= 1e-4).all())
    assert learned.ratios.shape[1] < anderson.ratios.shape[1]
    assert learned.evaluations_to(1e-4).median() < 0.75 * anderson.evaluations_to(1e-4).median()
    with pytest.raises(ValueError, match="stop_at=0"):
        acc.solve(x, 10, stop_at=0)
    with pytest.raises(ValueError, match="shipped: deq"):
        FixedPointAccelerator.shipped("ista")
