"""Learning to optimize: task families, the classical optimizers, the shared core, the env and the coordinatewise update."""

import math

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env

import envs  # noqa: F401  (registers the env ids)
from envs.l2o import DIVERGED_PENALTY, LearnToOptimizeVectorEnv
from learned_optimizers.common.settings import SettingsError
from learned_optimizers.l2o import core as l2o
from learned_optimizers.l2o.classical import (
    AdamMoments,
    first_order_trace,
    lbfgs_trace,
    tune_learning_rate,
    value_and_grad,
)
from learned_optimizers.l2o.coordinatewise import CoordinatewiseUpdate
from learned_optimizers.l2o.tasks import TRAINING_TASK_FAMILIES, make_tasks


def quadratic(dim=6, condition=10.0, n=8, seed=0, **kw):
    tasks = make_tasks("quadratic", dim=dim, condition=condition, **kw)
    gen = torch.Generator().manual_seed(seed)
    x = tasks.sample_contexts(n, gen).double()
    return tasks, x, tasks.initial_iterate(x, gen).double()


@pytest.mark.parametrize("method,lr,steps", [("gd", 1.0, 400), ("momentum", 0.1, 400), ("adam", 0.05, 2000)])
def test_first_order_methods_reach_the_known_optimum_of_a_quadratic(method, lr, steps):
    tasks, x, phi0 = quadratic()
    trace = first_order_trace(tasks.objective, x, phi0, method, lr, steps)
    assert torch.allclose(trace.phi, tasks.optimum(x), atol=1e-4)
    assert trace.values[:, -1].max() < 1e-8 < trace.values[:, 0].min()


def test_lbfgs_reaches_the_optimum_and_counts_evaluations():
    tasks, x, phi0 = quadratic(dim=6, condition=100.0, n=4)
    trace = lbfgs_trace(tasks.objective, x, phi0, 30)
    assert torch.allclose(trace.phi, tasks.optimum(x), atol=1e-6)
    assert trace.values.shape == (4, 31) and torch.all(trace.values[:, 1:] <= trace.values[:, :-1] + 1e-12)
    assert torch.all(trace.evaluations >= 7)  # at least one objective+gradient evaluation per iteration


def test_our_adam_is_torch_adam_and_learning_rates_may_differ_per_task():
    tasks, x, phi0 = quadratic(n=3)
    rates = torch.tensor([0.3, 0.03, 0.1], dtype=torch.float64)
    ours = first_order_trace(tasks.objective, x, phi0, "adam", rates, 25)
    for i in range(3):
        p = phi0[i: i + 1].clone().requires_grad_(True)
        opt = torch.optim.Adam([p], lr=float(rates[i]))
        for _ in range(25):
            opt.zero_grad()
            tasks.objective(p, x[i: i + 1]).sum().backward()
            opt.step()
        torch.testing.assert_close(ours.phi[i], p.detach()[0], rtol=1e-10, atol=1e-12)


def test_momentum_is_torch_sgd_with_momentum():
    tasks, x, phi0 = quadratic(n=2)
    ours = first_order_trace(tasks.objective, x, phi0, "momentum", 0.05, 30)
    p = phi0.clone().requires_grad_(True)
    opt = torch.optim.SGD([p], lr=0.05, momentum=0.9)
    for _ in range(30):
        opt.zero_grad()
        tasks.objective(p, x).sum().backward()
        opt.step()
    torch.testing.assert_close(ours.phi, p.detach(), rtol=1e-10, atol=1e-12)


def test_sweep_picks_its_best_rate_and_marks_divergent_rates():
    tasks, x, phi0 = quadratic(condition=10.0)
    sweep = tune_learning_rate(tasks.objective, x, phi0, "gd", 50, grid=(0.01, 0.1, 1.0, 3.0))
    assert sweep.best == 1.0  # 1 / L for eigenvalues in [0.1, 1]
    assert sweep.scores[3.0] > 1e10  # above 2 / L gradient descent diverges
    overflow = tune_learning_rate(tasks.objective, x.float(), phi0.float(), "gd", 200, grid=(1.0, 3.0))
    assert overflow.scores[3.0] == math.inf and overflow.best == 1.0  # NaN/inf on any task rules a rate out
    assert sweep.scores[0.01] > sweep.scores[0.1] > sweep.scores[1.0]
    with pytest.raises(ValueError, match="learning rate must be a number or one per task"):
        first_order_trace(tasks.objective, x, phi0, "gd", torch.ones(3), 5)
    with pytest.raises(ValueError, match="method='newton'; allowed: gd, momentum, adam"):
        first_order_trace(tasks.objective, x, phi0, "newton", 0.1, 5)


@pytest.mark.parametrize("family", list(TRAINING_TASK_FAMILIES))
def test_families_are_batched_seeded_and_differentiable(family):
    tasks = make_tasks(family)
    a = tasks.sample_contexts(5, torch.Generator().manual_seed(3))
    b = tasks.sample_contexts(5, torch.Generator().manual_seed(3))
    c = tasks.sample_contexts(5, torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and not torch.equal(a, c) and a.shape == (5, tasks.context_dim)
    phi = tasks.initial_iterate(a, torch.Generator().manual_seed(0))
    value, grad = value_and_grad(tasks.objective, phi, a)
    assert value.shape == (5,) and torch.isfinite(value).all() and grad.shape == phi.shape
    # the batch is independent tasks: one row's value does not depend on the others
    torch.testing.assert_close(tasks.objective(phi[2:3], a[2:3]), value[2:3])
    # central differences of one coordinate agree with autograd (float64)
    e = torch.zeros_like(phi, dtype=torch.float64)
    e[:, 0] = 1e-6
    fd = (tasks.objective(phi.double() + e, a.double()) - tasks.objective(phi.double() - e, a.double())) / 2e-6
    torch.testing.assert_close(fd, value_and_grad(tasks.objective, phi.double(), a.double())[1][:, 0], rtol=1e-4, atol=1e-7)
    assert tasks.scaled(4).solution_dim > 3 * tasks.solution_dim


def test_settings_errors_name_the_field():
    with pytest.raises(SettingsError, match="dim=0 is out of range"):
        make_tasks("logreg", dim=0)
    with pytest.raises(SettingsError, match="outliers=1.5 is out of range"):
        make_tasks("robust", outliers=1.5)
    with pytest.raises(ValueError, match="family='svm'; allowed: logreg, robust, mlp, quadratic"):
        make_tasks("svm")


def test_zero_action_is_tuned_adam_through_the_core_and_the_env():
    tasks = make_tasks("logreg", horizon=30)
    env = LearnToOptimizeVectorEnv(4, "logreg", horizon=30)
    env.reset(seed=7)
    x, phi0 = env.contexts.clone(), env.state.phi.clone()
    values = [env.state.value]
    for _ in range(30):
        _, reward, terminated, truncated, info = env.step(np.zeros((4, tasks.solution_dim), np.float32))
        values.append(info["objective"])
    assert truncated.all() and not terminated.any() and (info["status"] == int(l2o.L2OStatus.MAX_STEPS)).all()
    adam = first_order_trace(tasks.objective, x, phi0, "adam", l2o.tuned_learning_rate(tasks).best, 30)
    torch.testing.assert_close(torch.stack(values, 1), adam.values, rtol=1e-5, atol=1e-7)
    # reward: minus the objective relative to the start
    torch.testing.assert_close(reward, -(adam.values[:, -1] / adam.values[:, 0]).float(), rtol=1e-5, atol=1e-7)


def test_coordinatewise_update_is_permutation_equivariant_along_the_whole_trajectory():
    tasks, x, phi0 = quadratic(dim=5, n=3)
    torch.manual_seed(0)
    model = CoordinatewiseUpdate.for_tasks(tasks, hidden_sizes=(16,)).double()
    torch.nn.init.normal_(model.net[-1].weight, std=0.5)  # a non-trivial update, not Adam
    perm = torch.tensor([3, 0, 4, 1, 2])
    A, c = tasks.unpack(x)
    x_perm = torch.cat([A[:, perm][:, :, perm].flatten(1), c[:, perm]], 1)
    a = model.solve(x, phi0, 20)
    b = model.solve(x_perm, phi0[:, perm], 20)
    torch.testing.assert_close(b.phi, a.phi[:, perm], rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(b.values, a.values, rtol=1e-9, atol=1e-12)
    assert not torch.allclose(a.values, l2o.solve(tasks, x, phi0, 20).values)  # it is not plain Adam
    # one update serves any size: 4x the coordinates
    bigger = tasks.scaled(4)
    xb = bigger.sample_contexts(2, torch.Generator().manual_seed(1)).double()
    assert model.solve(xb, torch.zeros(2, 20, dtype=torch.float64), 5, tasks=bigger).values.shape == (2, 6)


@pytest.mark.parametrize("family", ["logreg", "robust", "mlp"])
def test_check_env(family):
    env = gym.make("amortize/LearnToOptimize-v0", family=family, horizon=12).unwrapped
    check_env(env, skip_render_check=True)
    obs, _ = env.reset(seed=0)
    assert obs.shape == (env.vec.tasks.solution_dim, l2o.features_per_coordinate(env.vec.task))


def test_nan_objective_ends_that_episode_with_a_status_and_the_batch_runs_on():
    env = LearnToOptimizeVectorEnv(3, "logreg", horizon=10)
    env.reset(seed=1)
    objective = env.tasks.objective
    calls = {"n": 0}

    def poisoned(phi, x):
        calls["n"] += 1
        value = objective(phi, x)
        if calls["n"] == 2 and value.shape[0] == 3:  # the second step's evaluation turns NaN for task 1
            value = value.clone()
            value[1] = math.nan
        return value

    env.tasks.objective = poisoned
    zero = np.zeros((3, env.tasks.solution_dim), np.float32)
    env.step(zero)
    obs, reward, terminated, truncated, info = env.step(zero)
    assert terminated.tolist() == [False, True, False] and not truncated.any()
    assert int(info["status"][1]) == int(l2o.L2OStatus.DIVERGED) and reward[1] == -DIVERGED_PENALTY
    assert torch.isfinite(obs).all() and int(env.state.steps[1]) == 0 and int(env.state.steps[0]) == 2  # task 1 restarted
    # a NaN action is an invalid action: the same status
    bad = zero.copy()
    bad[2, 0] = np.nan
    _, _, terminated, _, info = env.step(bad)
    assert terminated.tolist() == [False, False, True] and bool(info["invalid_action"][2])


def test_blowup_counts_as_divergence():
    env = LearnToOptimizeVectorEnv(2, "logreg", horizon=50, learning_rate=1e4, blowup=10.0)
    env.reset(seed=0)
    status = []
    for _ in range(10):
        _, _, terminated, _, info = env.step(np.zeros((2, env.tasks.solution_dim), np.float32))
        status.append(info["status"])
        if terminated.all():
            break
    assert any((s == int(l2o.L2OStatus.DIVERGED)).any() for s in status)


def test_reset_options_are_checked():
    env = LearnToOptimizeVectorEnv(2, "logreg")
    with pytest.raises(ValueError, match=r"initial_parameters'\] must have shape \(2, 9\)"):
        env.reset(options={"initial_parameters": np.zeros((2, 4))})
    with pytest.raises(ValueError, match="contain NaN"):
        env.reset(options={"initial_parameters": np.full((2, 9), np.nan)})
    with pytest.raises(ValueError, match="contexts must have shape"):
        env.reset(options={"contexts": np.zeros((2, 5))})
    obs, info = env.reset(options={"initial_parameters": np.ones((2, 9))})
    assert torch.all(env.state.phi == 1.0)
    with pytest.raises(ValueError, match="actions must have shape"):
        env.step(np.zeros((2, 3), np.float32))


def test_adam_moments_track_a_step_count_per_task():
    m = AdamMoments.zeros_like(torch.zeros(2, 3)).update(torch.ones(2, 3))
    fresh = AdamMoments.zeros_like(torch.zeros(2, 3)).update(torch.full((2, 3), 2.0))
    mixed = m.update(torch.ones(2, 3)).where(torch.tensor([False, True]), fresh)
    assert mixed.t.tolist() == [2, 1]
    torch.testing.assert_close(mixed.direction(), torch.ones(2, 3), rtol=1e-6, atol=1e-6)


def test_saved_update_loads_and_solves_the_same(tmp_path):
    tasks, x, phi0 = quadratic(n=2)
    torch.manual_seed(0)
    model = CoordinatewiseUpdate.for_tasks(tasks, hidden_sizes=(8,))
    torch.nn.init.normal_(model.net[-1].weight, std=0.3)
    model.save(tmp_path / "opt.pt")
    loaded = CoordinatewiseUpdate.load(tmp_path / "opt.pt")
    torch.testing.assert_close(loaded.solve(x, phi0, 10).values, model.solve(x, phi0, 10).values)
    (tmp_path / "bad.pt").write_bytes(b"not a model")
    with pytest.raises(ValueError, match="is not a learned optimizer file"):
        CoordinatewiseUpdate.load(tmp_path / "bad.pt")


def test_step_scale_action_is_a_per_coordinate_learning_rate():
    tasks, x, phi0 = quadratic(n=3, action="step_scale", max_correction=2.0)
    double = CoordinatewiseUpdate.for_tasks(tasks, hidden_sizes=(4,)).double()
    torch.nn.init.constant_(double.net[-1].bias, math.atanh(math.log(2.0) / 2.0))  # a = log 2 everywhere
    ours = l2o.solve(tasks, x, phi0, 15, double.act, lr=0.05)
    adam = first_order_trace(tasks.objective, x, phi0, "adam", 0.1, 15)
    torch.testing.assert_close(ours.values, adam.values, rtol=1e-9, atol=1e-12)
    with pytest.raises(SettingsError, match="action='newton' is not allowed"):
        make_tasks("logreg", action="newton")


@pytest.mark.parametrize("family", ["quadratic", "robust"])
def test_second_order_meta_gradient_matches_finite_differences(family):
    tasks = make_tasks(family, **({"dim": 3} if family == "quadratic" else {"dim": 2, "samples": 10}))
    gen = torch.Generator().manual_seed(2)
    x = tasks.sample_contexts(2, gen).double()
    phi0 = tasks.initial_iterate(x, gen).double()
    torch.manual_seed(0)
    model = CoordinatewiseUpdate.for_tasks(tasks, hidden_sizes=(4,)).double()
    torch.nn.init.normal_(model.net[-1].weight, std=0.3)
    with torch.no_grad():  # read only Adam's direction and the gradients: the features second order differentiates
        H = tasks.settings.history
        model.net[0].weight[:, 1 + H:] = 0.0
    bias = model.net[-1].bias

    def final_log_value(second_order: bool) -> torch.Tensor:
        state = l2o.start(tasks, x, phi0, keep_graph=True, second_order=second_order)
        ratios, _ = l2o.unroll(tasks, x, state, 4, model.act, 0.05)
        return torch.log(ratios[:, -1]).sum()

    (exact,) = torch.autograd.grad(final_log_value(True), bias)
    (first,) = torch.autograd.grad(final_log_value(False), bias)
    with torch.no_grad():
        h = 1e-6
        bias += h
        up = l2o.solve(tasks, x, phi0, 4, model.act, 0.05).values[:, -1]
        bias -= 2 * h
        down = l2o.solve(tasks, x, phi0, 4, model.act, 0.05).values[:, -1]
        bias += h
    fd = (torch.log(up).sum() - torch.log(down).sum()) / (2 * h)
    torch.testing.assert_close(exact, fd.reshape(1), rtol=1e-5, atol=1e-9)
    assert (first - fd).abs().item() > 100 * (exact - fd).abs().item()  # the first-order approximation drops terms


def test_a_saved_update_with_other_weights_or_a_pickle_is_refused(tmp_path):
    tasks, _, _ = quadratic(n=1)
    CoordinatewiseUpdate.for_tasks(tasks, hidden_sizes=(8,)).save(tmp_path / "opt.pt")
    blob = torch.load(tmp_path / "opt.pt", weights_only=True)
    blob["hidden_sizes"] = (9,)
    torch.save(blob, tmp_path / "resized.pt")
    with pytest.raises(ValueError, match="weights do not fit its settings"):
        CoordinatewiseUpdate.load(tmp_path / "resized.pt")
    torch.save({"family": "quadratic", "payload": object()}, tmp_path / "pickle.pt")
    with pytest.raises(ValueError, match="refused as a learned optimizer file: it holds a Python object"):  # the weights-only loader runs no pickled code
        CoordinatewiseUpdate.load(tmp_path / "pickle.pt")
    del blob["learning_rate"]
    torch.save(blob, tmp_path / "partial.pt")
    with pytest.raises(ValueError, match="it has no 'learning_rate'"):
        CoordinatewiseUpdate.load(tmp_path / "partial.pt")


def test_malformed_tasks_get_a_clear_error():
    tasks, x, phi0 = quadratic(n=2)
    model = CoordinatewiseUpdate.for_tasks(tasks, hidden_sizes=(4,))
    with pytest.raises(ValueError, match=r"quadratic: contexts must have shape \(n, 42\)"):
        model.solve(x[:, :10], phi0, 3)
    bad = x.clone()
    bad[1, 0] = math.nan
    with pytest.raises(ValueError, match="contexts contain NaN or inf"):
        l2o.solve(tasks, bad, phi0, 3, lr=0.1)
    with pytest.raises(ValueError, match=r"parameters must have shape \(2, 6\)"):
        l2o.solve(tasks, x, phi0[:, :3], 3, lr=0.1)
    with pytest.raises(ValueError, match="every learning rate of the sweep"):
        tune_learning_rate(tasks.objective, x, torch.full_like(phi0, math.nan), "adam", 3, grid=(0.1,))


def test_features_are_each_coordinates_history_in_order_against_asinh():
    """observe's (B, p, 3H + 3) view, built history-first, against the features written out one by one in float64
    with torch.asinh: Adam's direction, the H gradients over their RMS and the H moves (newest first), the H
    objective changes and the two progress features, for every task and coordinate."""
    tasks, x, phi0 = quadratic(dim=5, n=3, history=4)
    iteration = l2o.L2OIteration(tasks, 0.05, feature_dtype=torch.float32)
    states = list(l2o.iterate(iteration, x, 6, lambda obs: 0.3 * torch.sin(obs.sum(-1)), phi0))
    state, H = states[-1], 4
    assert state.grads.dtype == torch.float32 and state.grads.shape == (H, 3, 5)  # history first, in the features' dtype
    features = iteration.observe(state)
    assert features.shape == (3, 5, 3 * H + 3) and features.dtype == torch.float32
    grads = torch.stack([s.grad for s in states[::-1][:H]], 2)  # (B, p, H), newest first
    moves = torch.stack([(b.phi - a.phi) / 0.05 for a, b in zip(states[::-1][1:H + 1], states[::-1][:H])], 2)
    changes = torch.stack([(b.value - a.value) / a.value.abs() for a, b in zip(states[::-1][1:H + 1], states[::-1][:H])], 1)
    rms = state.adam.rms().unsqueeze(2)
    expected = torch.cat([torch.asinh(state.adam.direction()).unsqueeze(2), torch.asinh(grads / rms), torch.asinh(moves),
                          l2o._signed_log(changes).unsqueeze(1).expand(3, 5, H),
                          (torch.log10(state.value / state.initial_value) / 8).view(3, 1, 1).expand(3, 5, 1),
                          torch.full((3, 5, 1), 6 / tasks.settings.horizon, dtype=torch.float64)], 2)
    torch.testing.assert_close(features.double(), expected.clamp(-16, 16), rtol=1e-5, atol=1e-6)


def test_the_shipped_update_reaches_adams_value_in_fewer_steps_and_unknown_names_are_listed():
    """The logreg update shipped in the package (not the zero-initialized one, which is Adam): on held-out tasks
    it reaches tuned Adam's step-100 objective in a fraction of Adam's steps."""
    update = CoordinatewiseUpdate.shipped("logreg")
    gen = torch.Generator().manual_seed(1_000_003)
    x = update.tasks.sample_contexts(64, gen).double()
    phi0 = update.tasks.initial_iterate(x, gen).double()
    adam = l2o.solve(update.tasks, x, phi0, 100, lr=update.learning_rate)
    steps = update.solve(x, phi0, 100).steps_to(adam.values[:, 100])
    assert steps.median() < 50 and torch.isfinite(steps).double().mean() > 0.75
    with pytest.raises(ValueError, match="no shipped learned optimizer 'quadratic'; shipped: logreg"):
        CoordinatewiseUpdate.shipped("quadratic")
