"""The three amortization losses train, on budgets of seconds."""


import numpy as np
import pytest
import torch
from tb_steps import scalar_steps

from agents.common.heldout import cached_heldout
from agents.common.runs import RunDir
from agents.common.sb3_files import complete_checkpoints, read_manifest, restore_checkpoint
from agents.common.vec_adapter import SB3VecEnvAdapter
from agents.registry import config_from_dict, make_agent
from agents.workflows import evaluate, resume, start_run
from learned_optimizers.amortized import AmortizedModel

SMALL_EVAL = {"contexts": 128, "episodes": 3, "timing_repeats": 2}
SMALL_SOLVER = {"restarts": 8, "steps": 150}


def config(agent: dict, steps: int, **train) -> "RunConfig":  # noqa: F821
    return config_from_dict({
        "device": "cpu", "seed": 3, "agent": agent, "eval": SMALL_EVAL, "solver": SMALL_SOLVER,
        "train": {"total_steps": steps, "log_every": 10, "eval_every": steps, "checkpoint_every": steps, **train},
    })


def heldout_gap_of(model: AmortizedModel, run: RunDir, cfg) -> float:
    held = cached_heldout(model.problem, cfg, run, torch.device("cpu"), 128)
    with torch.no_grad():
        return (model.problem.objective(model.predict(held.contexts), held.contexts) - held.value).mean().item()


@pytest.mark.parametrize("kind, extra", [("objective", {}), ("regression", {"dataset_size": 2048})])
def test_gradient_amortizers_close_most_of_the_gap(tmp_path, kind, extra):
    cfg = config({"kind": kind, "hidden_sizes": [64, 64], "learning_rate": 2e-3, "batch_size": 128, **extra}, 800)
    run = start_run(cfg, kind, tmp_path)
    agent = make_agent(cfg, run)
    torch.manual_seed(cfg.seed)
    untrained = AmortizedModel(agent.problem, (64, 64))
    before = heldout_gap_of(untrained, run, cfg)
    agent.train()
    after = heldout_gap_of(AmortizedModel.load(run.path / "model.pt"), run, cfg)
    assert before > 0.3, before  # an untrained net is far from the optimum
    assert after < 0.25 * before, (before, after)


def test_sb3_sac_runs_end_to_end_and_resumes(tmp_path):
    agent = {"kind": "sac", "learning_starts": 64, "batch_size": 64, "n_envs": 4, "net_arch": [32, 32], "buffer_size": 5000}
    cfg = config(agent, 200, log_every=40, eval_every=100, checkpoint_every=100)
    run = start_run(cfg, "sac", tmp_path)
    make_agent(cfg, run).train()
    ckpts = run.path / "checkpoints"
    assert [p.name for p in complete_checkpoints(ckpts)] == ["sb3-000000000200"]
    assert (run.path / "model.zip").is_file() and (ckpts / "sb3-000000000200" / "replay_buffer.npz").is_file()

    resume(run.path, ["train.total_steps=400"])
    (latest,) = complete_checkpoints(ckpts)  # the older one is gone once the newer is complete
    assert read_manifest(latest)["step"] == 400
    trained = make_agent(cfg, run)
    model = trained.build_model(trained.make_env())
    assert restore_checkpoint(model, latest) == 400
    assert model.num_timesteps == 400 and model.replay_buffer.size() * 4 == 400  # no transition lost or doubled

    steps = scalar_steps(run.path, "eval/objective_gap")
    assert steps == [[100, 200], [300, 400]]  # the second process continues the step counter

    result = evaluate(run.path, episodes=3)
    assert result["gymnasium"]["episodes"] == 3
    assert np.isfinite(result["vs_solver"]["gap_mean"])


@pytest.mark.parametrize("agent", [
    {"kind": "td3", "learning_starts": 32, "batch_size": 32, "n_envs": 2, "net_arch": [16]},
    {"kind": "ppo", "n_steps": 16, "batch_size": 32, "n_envs": 4, "n_epochs": 2, "net_arch": [16]},
])
def test_other_sb3_algorithms_train(tmp_path, agent):
    cfg = config(agent, 64)
    run = start_run(cfg, agent["kind"], tmp_path)
    make_agent(cfg, run).train()
    predict = make_agent(cfg, run).load_predictor()
    x = torch.randn(5, 16)
    y = predict(x)
    assert y.shape == (5, 3) and torch.allclose(y.norm(dim=1), torch.ones(5), atol=1e-5)


def test_adapter_converts_same_step_autoreset():
    import gymnasium as gym

    env = gym.make_vec("amortize/Sphere-v0", num_envs=3, vectorization_mode="vector_entry_point")
    venv = SB3VecEnvAdapter(env)
    venv.seed(5)
    obs = venv.reset()
    assert obs.dtype == np.float32 and obs.shape == (3, 16)
    venv.step_async(np.zeros((3, 3), dtype=np.float32) + 0.5)
    obs2, rewards, dones, infos = venv.step_wait()
    assert dones.all() and rewards.shape == (3,)
    for i in range(3):
        np.testing.assert_array_equal(infos[i]["terminal_observation"], obs[i])
        assert infos[i]["objective"] == pytest.approx(-rewards[i], abs=1e-6)
    assert not np.allclose(obs2, obs)


def test_adapter_converts_next_step_autoreset():
    """Gymnasium's default (next-step) mode: the adapter resets finished envs at once."""
    import gymnasium as gym
    from gymnasium.vector import AutoresetMode, SyncVectorEnv

    env = SyncVectorEnv([lambda: gym.make("amortize/Sphere-v0") for _ in range(2)], autoreset_mode=AutoresetMode.NEXT_STEP)
    venv = SB3VecEnvAdapter(env)
    venv.seed(1)
    obs = venv.reset()
    for _ in range(3):
        venv.step_async(np.full((2, 3), 0.3, dtype=np.float32))
        new_obs, rewards, dones, infos = venv.step_wait()
        assert dones.all()
        np.testing.assert_array_equal(np.stack([i["terminal_observation"] for i in infos]), obs)
        assert (rewards != 0).all()  # never the reward-0 autoreset step
        assert not np.allclose(new_obs, obs)
        obs = new_obs


def test_cosine_learning_rate_is_a_function_of_the_step():
    from agents.common.amortizers import set_learning_rate

    cfg = config({"kind": "objective", "hidden_sizes": [16], "lr_schedule": "cosine", "learning_rate": 0.01}, 40)
    opt = torch.optim.Adam([torch.zeros(1, requires_grad=True)], lr=1.0)
    for step, expected in ((0, 0.01), (20, 0.005), (40, 0.0)):
        set_learning_rate(opt, cfg.agent, step, 40)
        assert opt.param_groups[0]["lr"] == pytest.approx(expected, abs=1e-12)
    constant = config({"kind": "objective", "hidden_sizes": [16]}, 40)
    set_learning_rate(opt, constant.agent, 30, 40)
    assert opt.param_groups[0]["lr"] == constant.agent.learning_rate
    with pytest.raises(Exception, match="lr_schedule"):
        config({"kind": "objective", "lr_schedule": "linear"}, 40)
