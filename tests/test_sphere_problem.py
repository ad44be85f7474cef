"""The sphere family and its solver, checked against float64 numpy and scipy."""

import numpy as np
import pytest
import torch
from scipy.optimize import minimize
from scipy.special import logsumexp

from learned_optimizers.common.multistart import MultistartAdamSettings, multistart_adam
from learned_optimizers.common.settings import SettingsError
from learned_optimizers.families import make_problem
from learned_optimizers.sphere.problem import SphereSettings


def reference_objective(y: np.ndarray, x: np.ndarray, m: int, gamma: float) -> float:
    """Direct float64 transcription of the tutorial's formula, one context at a time."""
    z = x[: 3 * m].reshape(m, 3)
    alpha = x[3 * m :]
    p = y / np.linalg.norm(y)
    costs = 0.5 * np.arccos(np.clip(z @ p, -1.0, 1.0)) ** 2 + alpha
    if gamma == 0:
        return float(costs.min())
    return float(-gamma * logsumexp(-costs / gamma))


@pytest.mark.parametrize("gamma", [0.0, 0.1, 0.5])
def test_objective_matches_float64_reference(gamma, gen):
    problem = make_problem("sphere", n_components=5, gamma=gamma, beta=0.3)
    x = problem.sample_contexts(64, gen).double()
    y = torch.randn(64, 3, generator=gen, dtype=torch.float64) * 3
    ours = problem.objective(y, x).numpy()
    ref = np.array([reference_objective(y[i].numpy(), x[i].numpy(), 5, gamma) for i in range(64)])
    np.testing.assert_allclose(ours, ref, rtol=1e-9, atol=1e-9)


def test_contexts_follow_the_distribution(gen):
    problem = make_problem("sphere", n_components=3, beta=0.25)
    x = problem.sample_contexts(20000, gen)
    z, alpha = problem.split_context(x)
    torch.testing.assert_close(z.norm(dim=-1), torch.ones(20000, 3))
    assert abs(alpha.std().item() - 0.25) < 0.01
    assert z.mean(dim=(0, 1)).abs().max() < 0.02  # uniform on S^2 has mean 0


def test_gradient_is_finite_at_a_component_centre(gen):
    problem = make_problem("sphere")
    x = problem.sample_contexts(4, gen)
    z, _ = problem.split_context(x)
    y = z[:, 0].clone().requires_grad_(True)  # exactly where arccos has an infinite slope
    problem.objective(y, x).sum().backward()
    assert torch.isfinite(y.grad).all()


def test_objective_is_invariant_to_scale(gen):
    problem = make_problem("sphere")
    x = problem.sample_contexts(8, gen)
    y = torch.randn(8, 3, generator=gen)
    torch.testing.assert_close(problem.objective(y, x), problem.objective(7.5 * y, x))


def _scipy_best(problem, x: np.ndarray, starts: int = 24, seed: int = 0) -> float:
    """Independent solver: Nelder-Mead in (lon, lat) from many starts, float64."""
    m, gamma = problem.m, problem.settings.gamma
    rng = np.random.default_rng(seed)

    def f(angles):
        lon, lat = angles
        y = np.array([np.cos(lat) * np.cos(lon), np.cos(lat) * np.sin(lon), np.sin(lat)])
        return reference_objective(y, x, m, gamma)

    best = np.inf
    for _ in range(starts):
        a0 = [rng.uniform(-np.pi, np.pi), rng.uniform(-np.pi / 2, np.pi / 2)]
        best = min(best, minimize(f, a0, method="Nelder-Mead", options={"xatol": 1e-9, "fatol": 1e-12}).fun)
    return best


def test_multistart_adam_finds_the_scipy_optimum(gen):
    problem = make_problem("sphere")
    x = problem.sample_contexts(12, gen)
    result = multistart_adam(problem, x, MultistartAdamSettings(restarts=8, steps=300))
    for i in range(12):
        ref = _scipy_best(problem, x[i].double().numpy(), seed=i)
        assert result.value[i].item() <= ref + 1e-4, (i, result.value[i].item(), ref)
    # the reported value is the objective at the reported solution
    torch.testing.assert_close(problem.objective(result.solution, x), result.value, atol=1e-5, rtol=0)
    assert torch.allclose(result.solution.norm(dim=1), torch.ones(12))


def test_solver_trace_is_monotone(gen):
    problem = make_problem("sphere")
    x = problem.sample_contexts(32, gen)
    trace = multistart_adam(problem, x, MultistartAdamSettings(restarts=2, steps=50, record_every=5)).trace
    means = [v.mean().item() for _, _, v in trace]
    assert [it for it, _, _ in trace] == list(range(0, 51, 5))
    assert all(b <= a + 1e-7 for a, b in zip(means, means[1:]))


@pytest.mark.parametrize(
    "kwargs, field",
    [({"n_components": 0}, "n_components"), ({"gamma": -0.1}, "gamma"), ({"beta": float("nan")}, "beta")],
)
def test_bad_settings_name_the_field(kwargs, field):
    with pytest.raises(SettingsError, match=field):
        SphereSettings(**kwargs)


def test_malformed_contexts_are_rejected(gen):
    problem = make_problem("sphere")
    with pytest.raises(ValueError, match="shape"):
        problem.check_contexts(torch.zeros(3, 5))
    x = problem.sample_contexts(2, gen)
    x[0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        multistart_adam(problem, x)


def test_unknown_family_lists_the_allowed_ones():
    with pytest.raises(ValueError, match="allowed: deq, ista, logreg, max_q, mlp, ot-digits, ot-gaussians, qp, qp_warm_start, quadratic, robust, scs-huber, scs-lasso, scs-socp, sinkhorn-digits, sinkhorn-gaussians, sphere"):
        make_problem("sphere2")
