"""Control: SB3 agents on MuJoCo / classic-control envs, the max-Q problem, the gap and the semi-amortized policy.

No long training here: the shipped Humanoid configs are built (not trained),
a tiny SAC on Pendulum checks train -> resume -> eval -> gap, and the max-Q
solver is checked on synthetic concave Q functions with known maximizers.
"""

import json

import gymnasium as gym

import numpy as np
import pytest
import torch
from stable_baselines3 import DDPG, SAC, TD3
from stable_baselines3.common.noise import NormalActionNoise
from tb_steps import scalar_steps

from agents.common.config import ConfigError
from agents.common.sb3_files import complete_checkpoints, read_manifest, restore_checkpoint
from agents.control.agent import ControlAgent, critic_q, zero_actions
from agents.control.gap import gap_curve
from agents.registry import SCHEMA, config_from_dict, load_config, make_agent
from agents.workflows import evaluate, gap, resume, start_run
from learned_optimizers.common.problem import ActionBox
from learned_optimizers.control.max_q import informative_states, maximize_q, normalized_value, semi_amortized_actions
from learned_optimizers.control.problem import MaxQSettings


# ---------------------------------------------------------------- configs -> SB3
@pytest.mark.parametrize("kind, cls", [("sac", SAC), ("td3", TD3), ("ddpg", DDPG)])
def test_shipped_humanoid_configs_build_the_zoo_algorithms(tmp_path, kind, cls):
    cfg = load_config(f"configs/humanoid_{kind}.yaml", ["agent.buffer_size=1000", "device=cpu"])
    assert cfg.env == "Humanoid-v5" and cfg.train.total_steps == 2_000_000 and cfg.agent.learning_starts == 10_000
    agent = make_agent(cfg, start_run(cfg, kind, tmp_path))
    assert isinstance(agent, ControlAgent)
    env = agent.make_env()
    try:
        model = agent.build_model(env)
        assert type(model) is cls
        assert model.batch_size == 256 and model.learning_starts == 10_000
        assert model.observation_space.shape == (348,) and model.action_space.shape == (17,)
        assert float(model.action_space.high[0]) == pytest.approx(0.4)
        # float32 observations in the buffer: half of SB3's float64 default
        assert model.replay_buffer.observations.dtype == np.float32
        layers = [m.out_features for m in model.actor.modules() if isinstance(m, torch.nn.Linear)]
        if kind == "sac":
            assert model.learning_rate == pytest.approx(3e-4) and layers[:2] == [256, 256]
            assert model.action_noise is None
        else:
            assert model.learning_rate == pytest.approx(1e-3) and layers[:2] == [400, 300]
            assert isinstance(model.action_noise, NormalActionNoise)
            assert np.allclose(model.action_noise._sigma, 0.1)
        n_critics = sum(1 for _ in model.critic.q_networks)
        assert n_critics == (1 if kind == "ddpg" else 2)
    finally:
        env.close()


def test_short_cpu_config_is_a_sac_run_on_humanoid():
    cfg = load_config("configs/humanoid_sac_cpu.yaml")
    assert (cfg.agent.kind, cfg.env, cfg.device) == ("sac", "Humanoid-v5", "cpu")
    assert cfg.train.total_steps <= 100_000


@pytest.mark.parametrize("change, message", [
    ({"problem": {"family": "sphere"}}, "problem.family='sphere' and env='Humanoid-v5'"),
    ({"agent": {"kind": "ppo"}}, "cannot train on Humanoid-v5; allowed: sac, td3, ddpg"),
    ({"agent": {"kind": "sac", "vec_env": "threads"}}, "agent.vec_env"),
    ({"env": "Humanoid-v4"}, "env"),
])
def test_control_config_errors_name_the_field(change, message):
    raw = {"env": "Humanoid-v5", "problem": {"family": "max_q"}, "agent": {"kind": "sac"}, **change}
    with pytest.raises(ConfigError, match=message):
        config_from_dict(raw)


def test_subprocess_envs_are_for_control_envs_only():
    with pytest.raises(ConfigError, match="agent.vec_env='subproc' applies to control envs only"):
        config_from_dict({"agent": {"kind": "sac", "vec_env": "subproc"}})


def test_subprocess_vec_env_steps(tmp_path):
    cfg = pendulum_config(100, agent={"n_envs": 2, "vec_env": "subproc"})
    env = make_agent(cfg, start_run(cfg, "sub", tmp_path)).make_env()
    try:
        env.seed(0)
        obs = env.reset()
        obs2, reward, done, _ = env.step(np.zeros((2, 1), dtype=np.float32))
        assert obs.shape == obs2.shape == (2, 3) and obs.dtype == np.float32 and reward.shape == (2,)
    finally:
        env.close()


# ---------------------------------------------------------------- train, resume, eval, gap
def pendulum_config(steps: int, agent: dict | None = None, **train):
    return config_from_dict({
        "device": "cpu", "seed": 5, "env": "Pendulum-v1",
        "problem": {"family": "max_q", "gap_iterations": 120, "gap_record_every": 2, "gap_states": 150},
        "agent": {"kind": "sac", "learning_starts": 100, "net_arch": [32, 32], "buffer_size": 5000, "batch_size": 64, **(agent or {})},
        "train": {"total_steps": steps, "checkpoint_every": 200, "log_every": 100, "eval_every": 200, **train},
        "eval": {"episodes": 2, "training_episodes": 1, "timing_repeats": 3},
    })


@pytest.fixture(scope="module")
def trained_pendulum(tmp_path_factory):
    """A tiny SAC trained to 400 steps, then resumed to 600 (three 200-step episodes in all)."""
    cfg = pendulum_config(400, keep_snapshots=True)
    run = start_run(cfg, "pendulum-sac", tmp_path_factory.mktemp("runs"))
    make_agent(cfg, run).train()
    buffer_before = read_manifest(complete_checkpoints(run.checkpoints)[-1])["step"]
    resume(run.path, ["train.total_steps=600"])
    return run, buffer_before


def test_resume_continues_the_step_counter_and_reloads_the_buffer(trained_pendulum):
    run, steps_before = trained_pendulum
    assert steps_before == 400
    (latest,) = complete_checkpoints(run.checkpoints)
    agent = make_agent(run.load_config(SCHEMA), run)
    model = agent.build_model(agent.make_env())
    assert restore_checkpoint(model, latest) == 600
    assert model.num_timesteps == 600
    # 600 transitions: the resumed run added 200 to the 400 it reloaded (a fresh buffer would hold 200)
    assert model.replay_buffer.size() == 600
    assert model.replay_buffer.observations.dtype == np.float32
    # one complete checkpoint directory, no temporary leftovers
    assert [p.name for p in run.checkpoints.iterdir()] == ["sb3-000000000600"]
    assert sorted(p.name for p in latest.iterdir()) == ["manifest.json", "model.zip", "replay_buffer.npz"]
    # the episodic-return curve continues: one writer per process, the second one's steps after the first's
    per_process = scalar_steps(run.path, "charts/episodic_return")
    assert len(per_process) == 2 and max(per_process[0]) <= 400 < min(per_process[1]), per_process
    assert scalar_steps(run.path, "charts/SPS") and scalar_steps(run.path, "eval/mean_return")
    assert [s for steps in scalar_steps(run.path, "train/critic_loss") for s in steps if s > 400]  # SB3's losses, on our schedule


def test_eval_runs_seeded_episodes_and_the_semi_amortized_policy(trained_pendulum):
    run, _ = trained_pendulum
    result = evaluate(run.path, episodes=3, semi_amortized=[0, 5])
    saved = json.loads((run.path / "eval.json").read_text())
    assert set(saved["variants"]) == {"policy", "semi_amortized_k5"}
    policy = saved["variants"]["policy"]
    assert policy["episodes"] == 3 and len(policy["returns"]) == 3 and policy["length_mean"] == 200
    assert policy["return_mean"] == pytest.approx(np.mean(policy["returns"]))
    assert policy["return_std"] == pytest.approx(np.std(policy["returns"], ddof=1))
    # an independent rollout with SB3's own predict in a plain Gymnasium env, same seed: the same first return
    import gymnasium as gym

    model = SAC.load(run.path / "model.zip")
    env = gym.make("Pendulum-v1")
    obs, _ = env.reset(seed=saved["seed"])
    total, done = 0.0, False
    while not done:
        action, _ = model.predict(obs.astype(np.float32), deterministic=True)
        obs, reward, terminated, truncated, _ = env.step(action)
        total, done = total + float(reward), terminated or truncated
    assert policy["returns"][0] == pytest.approx(total, rel=1e-4)
    # deterministic and seeded: the same episodes again give the same returns
    again = evaluate(run.path, episodes=3)
    assert again["variants"]["policy"]["returns"] == pytest.approx(policy["returns"])
    alone = evaluate(run.path, episodes=1)  # episode 0 alone: the same return as beside two others
    assert alone["variants"]["policy"]["returns"][0] == policy["returns"][0]
    assert result["variants"]["semi_amortized_k5"]["returns"] != pytest.approx(policy["returns"])


def test_eval_refuses_control_flags_on_other_runs(tmp_path):
    cfg = config_from_dict({"device": "cpu", "agent": {"kind": "objective"}})
    run = start_run(cfg, "sphere", tmp_path)
    with pytest.raises(ValueError, match="--semi-amortized applies to control runs only"):
        evaluate(run.path, semi_amortized=[3])


def test_gap_on_a_trained_run_writes_json_and_plot(trained_pendulum):
    run, _ = trained_pendulum
    result = gap(run.path)
    saved = json.loads((run.path / "gap.json").read_text())
    assert saved["states"] == 150 and 0 < saved["informative_states"] <= 150
    curve = saved["curve"]
    assert curve[0]["iteration"] == 0 and curve[0]["value_mean_unclamped"] == pytest.approx(-1.0)
    assert curve[-1]["iteration"] == 120
    assert all(b["seconds"] >= a["seconds"] for a, b in zip(curve, curve[1:]))
    assert saved["policy_seconds"] > 0
    hit = next((p for p in curve if p["value_mean"] >= saved["reach_level"]), None)
    assert saved["iterations_to_policy"] == (hit["iteration"] if hit else None)
    assert saved["speedup"] == (pytest.approx(hit["seconds"] / saved["policy_seconds"]) if hit else None)
    # the normalization's anchors are the run's own critic at the zero action and at the actor's action
    assert saved["q_mean"]["zero_action"] < saved["q_mean"]["policy"]
    assert (run.plots / "gap.png").stat().st_size > 10_000 and result["plot"].endswith("gap.png")
    assert scalar_steps(run.tensorboard / "gap", "gap/adam_value_mean", subdir=False)


def test_gap_states_come_from_several_seeded_episodes():
    from agents.control.gap import episode_states

    zero = lambda obs: torch.zeros(obs.shape[0], 1)  # noqa: E731
    states, episodes = episode_states("Pendulum-v1", zero, 11, 450, torch.device("cpu"))
    assert states.shape == (450, 3) and episodes == 3  # 200-step episodes: 200 + 200 + 50
    env = gym.make("Pendulum-v1")
    for k in range(3):  # each episode starts at its own seed's reset state
        first, _ = env.reset(seed=11 + k)
        assert torch.allclose(states[200 * k], torch.as_tensor(first))


def test_gap_across_training_measures_every_snapshot_as_gap_measures_the_final_model(trained_pendulum):
    run, _ = trained_pendulum
    final = gap(run.path)
    across = gap(run.path, across_training=True)
    saved = json.loads((run.path / "gap-training.json").read_text())
    assert [p["step"] for p in saved["snapshots"]] == [200, 400, 600]
    last = saved["snapshots"][-1]  # the last snapshot holds the final model's weights: the same figures
    assert "skipped" not in last  # the final model beats the zero action (the gap test above says so)
    assert last["iterations_to_policy"] == final["iterations_to_policy"]
    assert last["final_value_median_unclamped"] == pytest.approx(final["final_value_median_unclamped"], rel=1e-5)
    assert last["q_mean"] == pytest.approx(final["q_mean"], rel=1e-5)
    assert (run.plots / "gap-training.png").stat().st_size > 10_000 and across["report"].count("\n") >= 4
    with pytest.raises(ValueError, match="takes no --checkpoint"):
        gap(run.path, across_training=True, checkpoint="best")


def test_gap_across_training_needs_snapshots_and_a_control_run(tmp_path):
    cfg = pendulum_config(100, agent={"learning_starts": 50})
    run = start_run(cfg, "no-snapshots", tmp_path)
    make_agent(cfg, run).train()
    with pytest.raises(FileNotFoundError, match="no model snapshots: train with train.keep_snapshots: true"):
        gap(run.path, across_training=True)
    sphere = start_run(config_from_dict({"device": "cpu", "agent": {"kind": "objective"}}), "sphere", tmp_path)
    with pytest.raises(ValueError, match="--across-training applies to control runs only"):
        gap(sphere.path, across_training=True)


def test_gap_uses_min_of_the_twin_critics(trained_pendulum):
    run, _ = trained_pendulum
    model = SAC.load(run.path / "model.zip")
    states = torch.randn(7, 3)
    actions = torch.rand(7, 1) * 4 - 2
    q1, q2 = model.critic(states, actions / 2.0)  # SB3 criticizes actions rescaled to [-1, 1]
    assert torch.allclose(critic_q(model)(states, actions), torch.minimum(q1, q2).squeeze(1))


# ---------------------------------------------------------------- the max-Q solver on synthetic Q
def concave_q(target: torch.Tensor, weights: torch.Tensor):
    """Q(x, u) = -sum_j w_j (u_j - a_j(x))^2 with a(x) = target: maximizer a(x) where it lies in the box."""
    return lambda states, actions: -((actions - target) ** 2 * weights).sum(dim=1)


def test_action_box_maps_and_checks_bounds():
    box = ActionBox.from_bounds([-0.4, 0.0], [0.4, 2.0])
    u = torch.tensor([[0.3, 1.9], [-0.39, 0.01]])
    assert torch.allclose(box.to_box(box.to_unconstrained(u)), u, atol=1e-6)
    assert torch.equal(zero_actions(box, 2), torch.tensor([[0.0, 0.0], [0.0, 0.0]]))
    assert torch.allclose(box.to_unit(torch.tensor([[-0.4, 2.0], [0.2, 1.0]])), torch.tensor([[-1.0, 1.0], [0.5, 0.0]]))
    assert torch.allclose(box.from_unit(box.to_unit(u)), u)
    assert torch.equal(zero_actions(ActionBox.from_bounds([0.5], [1.0]), 1), torch.tensor([[0.5]]))
    with pytest.raises(ValueError, match="finite low < high"):
        ActionBox.from_bounds([1.0], [1.0])
    with pytest.raises(ValueError, match="finite low < high"):
        ActionBox.from_bounds([-np.inf], [1.0])


def test_adam_reaches_the_maximizer_of_a_known_concave_q():
    g = torch.Generator().manual_seed(0)
    n, d = 64, 5
    box = ActionBox.from_bounds([-0.4] * d, [0.4] * d)
    target = (torch.rand(n, d, generator=g) - 0.5) * 0.6  # inside the box
    target[:8, 0] = 0.9  # outside: the constrained maximizer sits on the bound
    weights = torch.rand(n, d, generator=g) * 10 + 0.1  # badly scaled coordinates
    q = concave_q(target, weights)
    states = torch.zeros(n, 1)
    u, trace = maximize_q(q, states, zero_actions(box, n), box, learning_rate=5e-2, iterations=800, record_every=100)
    expected = target.clamp(-0.4, 0.4)
    inside = torch.ones(n, d, dtype=torch.bool)
    inside[:8, 0] = False
    assert torch.allclose(u[inside], expected[inside], atol=1e-3)
    assert (expected[~inside] - u[~inside]).abs().max() < 2e-2  # tanh approaches the bound from inside
    assert bool(((u >= -0.4) & (u <= 0.4)).all())
    assert trace.iterations == [0, 100, 200, 300, 400, 500, 600, 700, 800]
    means = [float(v.mean()) for v in trace.values]
    assert means[-1] > means[0] and means[-1] == pytest.approx(float(q(states, u).mean()))


def test_per_state_problems_are_independent():
    """One batched Adam = one Adam per state: a state's answer does not depend on its batch mates."""
    g = torch.Generator().manual_seed(1)
    box = ActionBox.from_bounds([-1.0] * 3, [1.0] * 3)
    target, weights = torch.rand(10, 3, generator=g) - 0.5, torch.rand(10, 3, generator=g) + 0.5
    batched, _ = maximize_q(concave_q(target, weights), torch.zeros(10, 1), zero_actions(box, 10), box, 1e-2, 50)
    alone, _ = maximize_q(concave_q(target[3:4], weights[3:4]), torch.zeros(1, 1), zero_actions(box, 1), box, 1e-2, 50)
    assert torch.allclose(batched[3], alone[0], atol=1e-7)


def test_normalization_scores_zero_action_minus_one_and_policy_zero():
    g = torch.Generator().manual_seed(2)
    n, d = 200, 4
    box = ActionBox.from_bounds([-1.0] * d, [1.0] * d)
    target = (torch.rand(n, d, generator=g) - 0.5) * 1.2
    q = concave_q(target, torch.ones(n, d))
    pi = lambda s: 0.5 * target  # halfway from the zero action to the maximizer  # noqa: E731
    states = torch.zeros(n, 1)
    q0, qpi, qstar = q(states, zero_actions(box, n)), q(states, pi(states)), q(states, target)
    assert torch.allclose(normalized_value(q0, q0, qpi), -torch.ones(n))
    assert torch.allclose(normalized_value(qpi, q0, qpi), torch.zeros(n))
    # with Q = -|u - a|^2 and pi = a / 2: Q(0) = -|a|^2, Q(pi) = -|a|^2 / 4, so the maximizer scores 1/3
    assert torch.allclose(normalized_value(qstar, q0, qpi), torch.full((n,), 1 / 3), atol=1e-5)
    settings = MaxQSettings(gap_iterations=400, gap_learning_rate=2e-2, gap_record_every=10)
    result = gap_curve(q, pi, states, box, settings, timing_repeats=3)
    curve = result["curve"]
    assert curve[0]["value_mean"] == pytest.approx(-1.0) and curve[0]["value_std"] == pytest.approx(0.0, abs=1e-9)
    assert curve[-1]["value_mean"] == pytest.approx(0.0, abs=1e-4)  # clamped: at or above the policy
    assert curve[-1]["value_mean_unclamped"] == pytest.approx(1 / 3, abs=1e-3)  # Adam finds the true maximizer
    assert result["iterations_to_policy"] is not None and result["iterations_to_policy"] < 400
    hit = next(p for p in curve if p["value_mean"] >= -0.01)
    assert result["iterations_to_policy"] == hit["iteration"]
    assert result["speedup"] == pytest.approx(hit["seconds"] / result["policy_seconds"])
    assert result["q_mean"]["adam_final"] == pytest.approx(float(qstar.mean()), abs=1e-3)


def test_states_where_the_policy_loses_to_the_zero_action_are_excluded():
    q0 = torch.tensor([-1.0, -1.0, -1.0])
    qpi = torch.tensor([0.0, -1.0, -2.0])
    assert informative_states(q0, qpi).tolist() == [True, False, False]
    box = ActionBox.from_bounds([-1.0], [1.0])
    q = lambda s, u: -(u[:, 0] ** 2)  # the zero action is optimal: no policy beats it  # noqa: E731
    with pytest.raises(ValueError, match="does not beat the zero action"):
        gap_curve(q, lambda s: torch.full((s.shape[0], 1), 0.5), torch.zeros(4, 1), box, MaxQSettings(), 2)


def test_semi_amortized_policy_improves_q():
    g = torch.Generator().manual_seed(3)
    n, d = 128, 6
    box = ActionBox.from_bounds([-0.4] * d, [0.4] * d)
    target = (torch.rand(n, d, generator=g) - 0.5) * 0.6
    q = concave_q(target, torch.rand(n, d, generator=g) + 0.5)
    states = torch.zeros(n, 1)
    policy = (target + 0.2 * torch.randn(n, d, generator=g)).clamp(-0.4, 0.4)
    policy[:10] = 0.4  # saturated actions on the bound must move too
    assert torch.equal(semi_amortized_actions(q, states, policy, box, 0, 1e-2), policy)
    before = q(states, policy)
    refined = {k: semi_amortized_actions(q, states, policy, box, k, 1e-2) for k in (5, 50)}
    assert bool((q(states, refined[5]) > before).all())
    assert bool((q(states, refined[50]) >= q(states, refined[5]) - 1e-6).all())
    assert bool((refined[50][:10] < 0.4 - 1e-3).any(dim=1).all())
    assert bool(((refined[50] >= -0.4) & (refined[50] <= 0.4)).all())


def test_maximize_q_rejects_bad_arguments():
    box = ActionBox.from_bounds([-1.0], [1.0])
    q = lambda s, u: -(u[:, 0] ** 2)  # noqa: E731
    with pytest.raises(ValueError, match="parameterization='sigmoid' is not allowed; allowed: tanh, clip"):
        maximize_q(q, torch.zeros(2, 1), torch.zeros(2, 1), box, 1e-2, 5, parameterization="sigmoid")
    with pytest.raises(ValueError, match="learning_rate must be > 0"):
        maximize_q(q, torch.zeros(2, 1), torch.zeros(2, 1), box, 0.0, 5)


def test_video_of_a_humanoid_episode_is_an_mp4(tmp_path):
    import imageio.v3 as iio

    from agents.control.evaluation import record_video

    zero = lambda states: torch.zeros(states.shape[0], 17)  # noqa: E731  (the humanoid falls within a second)
    path = record_video("Humanoid-v5", zero, seed=0, device=torch.device("cpu"), path=tmp_path / "videos" / "ep.mp4")
    frames = np.stack(list(iio.imiter(path)))
    assert path.suffix == ".mp4" and frames.ndim == 4 and frames.shape[-1] == 3
    assert 10 < frames.shape[0] <= 1001
    assert frames.std() > 5  # a rendered scene, not a blank frame


def test_any_registered_gymnasium_mujoco_task_is_a_control_env():
    from envs.control import CONTROL_ENV_IDS, make_control_env

    assert {"Swimmer-v5", "Reacher-v5", "InvertedPendulum-v5", "Humanoid-v5"} <= set(CONTROL_ENV_IDS)
    assert "Humanoid-v4" not in CONTROL_ENV_IDS
    cfg = config_from_dict({"device": "cpu", "env": "Swimmer-v5", "problem": {"family": "max_q"}, "agent": {"kind": "sac"}})
    env = make_control_env(cfg.env)
    obs, _ = env.reset(seed=0)
    assert obs.dtype == np.float32 and env.step(env.action_space.sample())[0].shape == obs.shape
    env.close()
