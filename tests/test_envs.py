"""Gymnasium contracts of the amortization envs, single and batched."""

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env
from gymnasium.vector import AutoresetMode

import envs  # noqa: F401  (registers the ids)
from learned_optimizers.families import make_problem


@pytest.mark.filterwarnings("ignore:.*infinity.*")
def test_sphere_env_passes_check_env():
    env = gym.make("amortize/Sphere-v0")
    check_env(env.unwrapped, skip_render_check=True)


def test_single_env_reward_is_minus_objective():
    env = gym.make("amortize/Sphere-v0", gamma=0.2)
    obs, _ = env.reset(seed=3)
    action = np.array([0.3, -0.5, 0.8], dtype=np.float32)
    obs2, reward, terminated, truncated, info = env.step(action)
    problem = make_problem("sphere", gamma=0.2)
    expected = problem.objective(torch.tensor(action).unsqueeze(0), torch.tensor(obs).unsqueeze(0)).item()
    assert reward == pytest.approx(-expected, abs=1e-6)
    assert terminated and not truncated and info["status"] == "ok"
    np.testing.assert_allclose(np.linalg.norm(info["solution"]), 1.0, rtol=1e-6)


def test_single_env_seeding_is_reproducible():
    a = gym.make("amortize/Sphere-v0").reset(seed=11)[0]
    b = gym.make("amortize/Sphere-v0").reset(seed=11)[0]
    c = gym.make("amortize/Sphere-v0").reset(seed=12)[0]
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)


def test_single_env_rejects_step_before_reset_and_bad_shapes():
    env = gym.make("amortize/Sphere-v0").unwrapped
    with pytest.raises(RuntimeError, match="reset"):
        env.step(np.zeros(3, dtype=np.float32))
    env.reset(seed=0)
    with pytest.raises(ValueError, match="shape"):
        env.step(np.zeros(4, dtype=np.float32))


def make_vec(n=6, **kw):
    return gym.make_vec("amortize/Sphere-v0", num_envs=n, vectorization_mode="vector_entry_point", **kw)


def test_vector_env_same_step_autoreset():
    env = make_vec(6)
    assert env.metadata["autoreset_mode"] == AutoresetMode.SAME_STEP
    obs, _ = env.reset(seed=0)
    assert isinstance(obs, torch.Tensor) and obs.shape == (6, 16)
    actions = torch.randn(6, 3)
    obs2, rewards, term, trunc, info = env.step(actions)
    torch.testing.assert_close(info["final_obs"], obs)
    torch.testing.assert_close(rewards, -env.problem.objective(actions, obs))
    assert term.all() and not trunc.any()
    assert not torch.allclose(obs2, obs)  # the next contexts are already there


def test_vector_env_matches_single_env_objective():
    env = make_vec(4)
    obs, _ = env.reset(seed=5)
    actions = torch.randn(4, 3)
    _, rewards, *_ = env.step(actions)
    single = gym.make("amortize/Sphere-v0").unwrapped
    for i in range(4):
        single._context = obs[i : i + 1].clone()
        _, r, *_ = single.step(actions[i].numpy())
        assert r == pytest.approx(rewards[i].item(), abs=1e-6)


def test_vector_env_reset_mask_and_given_contexts():
    env = make_vec(4)
    obs, _ = env.reset(seed=1)
    mask = np.array([True, False, True, False])
    obs2, _ = env.reset(options={"reset_mask": mask})
    torch.testing.assert_close(obs2[~torch.as_tensor(mask)], obs[~torch.as_tensor(mask)])
    assert not torch.allclose(obs2[0], obs[0])
    given = env.problem.sample_contexts(4, torch.Generator().manual_seed(9))
    obs3, _ = env.reset(options={"contexts": given})
    torch.testing.assert_close(obs3, given)
    with pytest.raises(ValueError, match="reset_mask"):
        env.reset(options={"reset_mask": np.ones(3, dtype=bool)})


def test_vector_env_objective_is_differentiable():
    env = make_vec(5)
    env.reset(seed=0)
    y = torch.randn(5, 3, requires_grad=True)
    env.objective(y).sum().backward()
    assert y.grad is not None and torch.isfinite(y.grad).all() and y.grad.abs().sum() > 0


def test_nan_action_ends_with_a_status_not_an_exception():
    env = make_vec(3)
    env.reset(seed=0)
    actions = torch.randn(3, 3)
    actions[1] = float("nan")
    _, rewards, term, _, info = env.step(actions)
    assert info["valid"].tolist() == [True, False, True]
    assert torch.isfinite(rewards).all() and rewards[1] < rewards[0] and rewards[1] < rewards[2]
    assert term.all()


def test_vector_env_seeding_is_reproducible():
    a, _ = make_vec(3).reset(seed=42)
    b, _ = make_vec(3).reset(seed=42)
    torch.testing.assert_close(a, b)


def test_gymnasiums_vector_wrappers_apply_through_torch_to_numpy():
    import gymnasium as gym
    from gymnasium.wrappers.vector import RecordEpisodeStatistics

    from envs.common.vector import TorchToNumpy

    venv = gym.make_vec("amortize/Sphere-v0", num_envs=4, vectorization_mode="vector_entry_point", device="cpu")
    wrapped = RecordEpisodeStatistics(TorchToNumpy(venv))
    obs, _ = wrapped.reset(seed=0)
    assert isinstance(obs, np.ndarray) and obs.shape == (4, venv.single_observation_space.shape[0])
    _, rewards, terminated, _, info = wrapped.step(wrapped.action_space.sample())
    assert isinstance(rewards, np.ndarray) and terminated.all()  # one-step episodes
    np.testing.assert_allclose(info["episode"]["r"], rewards, rtol=1e-6)
