"""RLQP: the OSQP MDP, the deployable solver with its safeguard, the TD3 trainer and the benchmark."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
import osqp
import pytest
import torch
import yaml
from gymnasium.utils.env_checker import check_env

import envs  # noqa: F401  (registers the env ids)
from agents.common.statistics import shifted_geometric_mean
from envs.qp import QPVectorEnv
from learned_optimizers.common.settings import SettingsError
from learned_optimizers.qp.admm import OSQPBatch, OSQPSettings
from learned_optimizers.qp.mix import HELDOUT_SEED_BASE, QPMix, QPMixSettings
from learned_optimizers.qp.problems import QPBatch, generate
from learned_optimizers.qp.rlqp import (
    SHIPPED_POLICY,
    RhoPolicy,
    RLQPSettings,
    RLQPSolver,
    constraint_features,
    policy_rows,
)

SMALL_MIX = ("random:5,8", "portfolio:5")
#: what the shipped policy must at least achieve on the small held-out set of the test below (measured 1.56)
RATIO_FLOOR = 1.3


class HeuristicScalarPolicy(torch.nn.Module):
    """OSQP's adaptive-rho rule written as a scalar policy over the env's global features."""

    variant = "scalar"

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        f = features.double() * 8.0  # undo the feature scaling: log10 prim, log10 dual, log10 rho
        log_prim, log_dual, log_rho = f[:, 0], f[:, 1], f[:, 2]
        estimate = (log_rho + 0.5 * (log_prim - log_dual)).clamp(-6, 6)
        move = (estimate - log_rho).abs() > np.log10(5.0)
        return torch.where(move, estimate, log_rho)


class ConstantPolicy(torch.nn.Module):
    variant = "vector"

    def __init__(self, log_rho: float) -> None:
        super().__init__()
        self.log_rho = log_rho

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return torch.full(features.shape[:-1], self.log_rho)


def reference(qp, settings):
    s = osqp.OSQP()
    s.setup(**qp.osqp_data(), **settings.osqp_kwargs())
    return s.solve(raise_error=False)


# ------------------------------------------------------------------ environment
@pytest.mark.parametrize("env_id", ["amortize/QP-RLQP-v0", "amortize/QP-RLQP-Scalar-v0"])
def test_env_passes_gymnasium_checker(env_id):
    env = gym.make(env_id, mix=SMALL_MIX, interval=50, max_steps=4)
    check_env(env.unwrapped, skip_render_check=True)


def test_vector_env_rewards_autoreset_and_invalid_actions():
    env = QPVectorEnv(4, mix=SMALL_MIX, eps=1e-3, interval=25, max_steps=50)
    obs, _ = env.reset(seed=3)
    assert obs["features"].shape == (4, env.m_max, 7) and obs["mask"].dtype == torch.bool
    first = list(env.batch.names)
    names_before = list(first)
    seen_done = False
    for _ in range(60):
        actions = torch.full((4, env.m_max), -1.0)
        actions[0, 0] = float("nan")  # slot 0 sends an invalid action every step: never raises
        obs, rewards, terminated, truncated, info = env.step(actions)
        assert bool(info["invalid_action"][0]) and bool(terminated[0])
        assert rewards[0] == -1.0
        solved = info["solved"] & terminated
        assert torch.all(rewards[solved] == 0.0)  # 0 on the step that solves it
        assert torch.all(rewards[~terminated] == -1.0)  # -1 while unsolved
        done = terminated | truncated
        for i in range(1, 4):
            if bool(done[i]):
                seen_done = True
            elif env.batch.names[i] != names_before[i]:
                pytest.fail("a running problem was replaced")
        names_before = list(env.batch.names)
        assert bool(env.batch.running.all())  # finished problems were replaced by fresh ones
    assert seen_done and env.batch.names != first


def test_vector_env_reset_is_seeded():
    a = QPVectorEnv(3, mix=SMALL_MIX, interval=50)
    b = QPVectorEnv(3, mix=SMALL_MIX, interval=50)
    oa, _ = a.reset(seed=11)
    ob, _ = b.reset(seed=11)
    assert a.batch.names == b.batch.names
    torch.testing.assert_close(oa["features"], ob["features"])


def test_mix_settings_errors_name_the_field():
    with pytest.raises(SettingsError, match=r"mix\[0\].*unknown QP class 'randm'"):
        QPMixSettings(mix=("randm:10",))
    with pytest.raises(SettingsError, match=r"mix\[1\].*'class:n1,n2"):
        QPMixSettings(mix=("random:10", "lasso"))
    with pytest.raises(SettingsError, match="interval"):
        QPMixSettings(interval=30)
    with pytest.raises(SettingsError, match=r"mix\[1\]='huber:2': huber stays out of training"):
        QPMixSettings(mix=("random:10", "huber:2"))


def test_heldout_problems_never_share_training_seeds():
    mix = QPMix(QPMixSettings(mix=SMALL_MIX))
    train = mix.sample(np.random.default_rng(0), 200)
    held = mix.heldout(3)
    seeds = lambda qps: {int(q.name.rsplit("-s", 1)[1]) for q in qps}  # noqa: E731
    assert max(seeds(train)) < HELDOUT_SEED_BASE <= min(seeds(held))
    assert [q.name.split("-")[0] for q in train[:4]] == ["random", "portfolio", "random", "portfolio"]  # round-robin


# ------------------------------------------------------------------ deployable solver
def test_heuristic_as_a_policy_reproduces_the_heuristic_iterations():
    settings = OSQPSettings(eps_abs=1e-5, eps_rel=1e-5)
    sizes = {"random": (6, 12), "portfolio": (6, 12), "svm": (1, 2)}  # svm n=2 already has 202 variables
    qps = [generate(c, n, 40 + i) for c, ns in sizes.items() for n in ns for i in range(2)]
    heuristic = OSQPBatch(qps, settings).solve()
    learned = RLQPSolver(HeuristicScalarPolicy(), RLQPSettings(osqp=settings, interval=50)).solve(qps)
    np.testing.assert_array_equal(learned.iterations.numpy(), heuristic.iterations.numpy())
    assert learned.status_labels() == heuristic.status_labels()
    assert heuristic.rho_updates.sum() > 0  # the rule did change rho on these problems


def test_deployable_solver_needs_neither_sb3_nor_gymnasium(tmp_path):
    path = tmp_path / "policy.pt"
    torch.manual_seed(0)
    RhoPolicy().save(path, mix=list(SMALL_MIX), eps=1e-3, interval=50)
    code = f"""
import sys
from learned_optimizers.qp.rlqp import RhoPolicy, RLQPSolver
from learned_optimizers.qp.problems import generate
qp = generate("random", 10, 5)
result = RLQPSolver(RhoPolicy.load({str(path)!r})).solve([qp])
assert "stable_baselines3" not in sys.modules and "gymnasium" not in sys.modules, "RL code was imported"
print(result.status_labels()[0], float(result.objective[0]))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    ref = reference(generate("random", 10, 5), OSQPSettings())
    assert out[0] == ref.info.status == "solved"
    assert abs(float(out[1]) - ref.info.obj_val) <= 1e-2 * max(1.0, abs(ref.info.obj_val))


def test_safeguard_rescues_a_nonsense_policy():
    settings = OSQPSettings(eps_abs=1e-5, eps_rel=1e-5)
    qps = [generate("random", 10, 70 + i) for i in range(3)] + [generate("portfolio", 10, 70)]
    result = RLQPSolver(ConstantPolicy(6.0), RLQPSettings(osqp=settings, interval=50)).solve(qps)
    assert bool(result.fell_back.all())
    for i, qp in enumerate(qps):
        ref = reference(qp, settings)
        assert ref.info.status == "solved" and result.status_labels()[i] == "solved", qp.name
        assert abs(float(result.objective[i]) - ref.info.obj_val) <= 1e-3 * max(1.0, abs(ref.info.obj_val))
        # the fallback restarts OSQP from its own start: osqp's run, shifted by the iterations the policy spent
        assert int(result.fell_back_at[i]) % 50 == 0 and int(result.fell_back_at[i]) > 0
        assert int(result.iterations[i]) == int(result.fell_back_at[i]) + ref.info.iter, qp.name


def test_safeguard_can_continue_from_the_policy_iterate_instead():
    settings = OSQPSettings(eps_abs=1e-5, eps_rel=1e-5)
    qps = [generate("random", 10, 70 + i) for i in range(3)]
    result = RLQPSolver(ConstantPolicy(6.0), RLQPSettings(osqp=settings, interval=50, safeguard_restart=False)).solve(qps)
    assert bool(result.fell_back.all()) and result.status_labels() == ["solved"] * 3


def test_policy_file_round_trip_and_bad_file(tmp_path):
    torch.manual_seed(1)
    policy = RhoPolicy(hidden_sizes=(8, 8))
    policy.save(tmp_path / "p.pt", interval=50)
    back = RhoPolicy.load(tmp_path / "p.pt")
    x = torch.randn(5, 3, 7)
    torch.testing.assert_close(policy(x), back(x))
    assert back.metadata == {"interval": 50} and float(back(x).detach().abs().max()) <= 6.0
    torch.save({"weights": 1}, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match="not an RLQP policy file: it has no 'state_dict'"):
        RhoPolicy.load(tmp_path / "bad.pt")
    (tmp_path / "text.pt").write_text("not a checkpoint")
    with pytest.raises(ValueError, match="not an RLQP policy file: torch cannot read it"):
        RhoPolicy.load(tmp_path / "text.pt")
    torch.save(torch.zeros(3), tmp_path / "tensor.pt")
    with pytest.raises(ValueError, match="holds a Tensor"):
        RhoPolicy.load(tmp_path / "tensor.pt")


def test_rlqp_settings_interval_must_align_with_checks():
    with pytest.raises(ValueError, match="multiple of osqp.check_termination"):
        RLQPSettings(interval=60)


def test_step_api_replace_puts_problems_into_slots():
    settings = OSQPSettings(adaptive_rho=False)
    qps = [generate("random", 6, i) for i in range(3)]
    live = OSQPBatch(QPBatch.from_qps(qps, n=6, m=60), settings)
    live.advance(50)
    newcomer = OSQPBatch(QPBatch.from_qps([generate("random", 5, 9)], n=6, m=60), settings)
    newcomer.advance(50)
    live.replace(torch.tensor([1]), newcomer)
    alone = OSQPBatch([generate("random", 5, 9)], settings)
    alone.advance(50)
    torch.testing.assert_close(live.state()["x"][1, :5], alone.state()["x"][0])
    live.advance(100)
    alone.advance(100)
    torch.testing.assert_close(live.state()["x"][1, :5], alone.state()["x"][0])
    assert int(live.iterations[1]) == int(alone.iterations[0])


def test_shipped_policy_beats_real_osqp_on_held_out_problems():
    """The policy in the package, on held-out problems of its training classes, against the real osqp."""
    policy = RhoPolicy.load(SHIPPED_POLICY)
    config = yaml.safe_load((Path(__file__).resolve().parents[1] / "configs" / "rlqp_cpu.yaml").read_text())
    assert policy.metadata["mix"] == config["problem"]["mix"] and policy.metadata["eps"] == config["problem"]["eps"]
    assert SHIPPED_POLICY.stat().st_size < 300_000
    eps = policy.metadata["eps"]
    settings = OSQPSettings(eps_abs=eps, eps_rel=eps)
    qps = [generate(c, n, HELDOUT_SEED_BASE + i) for c, n in (("random", 10), ("portfolio", 20), ("lasso", 2),
                                                                  ("control", 2)) for i in range(3)]
    result = RLQPSolver(policy, RLQPSettings(osqp=settings, interval=policy.metadata["interval"])).solve(qps)
    ref_iters = []
    for i, qp in enumerate(qps):
        ref = reference(qp, settings)
        assert ref.info.status == "solved" and result.status_labels()[i] == "solved", qp.name
        assert abs(float(result.objective[i]) - ref.info.obj_val) <= 1e-4 * max(1.0, abs(ref.info.obj_val))
        ref_iters.append(ref.info.iter)
    ratio = shifted_geometric_mean(ref_iters) / shifted_geometric_mean(result.iterations.tolist())
    assert ratio >= RATIO_FLOOR, f"osqp/RLQP iterations {ratio:.2f}"


def test_scalar_variant_trains_with_an_off_the_shelf_sb3_policy():
    """The scalar env reaches SB3 through the project's one VecEnv adapter; TD3's MlpPolicy acts on it."""
    from stable_baselines3 import TD3

    from agents.common.vec_adapter import SB3VecEnvAdapter

    venv = SB3VecEnvAdapter(QPVectorEnv(4, "scalar", "cpu", mix=SMALL_MIX, interval=25, max_steps=5))
    venv.seed(0)
    model = TD3("MlpPolicy", venv, learning_starts=8, batch_size=16, train_freq=1, gradient_steps=1, seed=0,
                policy_kwargs={"net_arch": [16, 16]})
    model.learn(total_timesteps=40)
    assert model.num_timesteps == 40 and model.replay_buffer.size() == 10  # 4 envs x 10 steps
    action, _ = model.predict(venv.reset(), deterministic=True)
    assert action.shape == (4, 1) and np.all(np.abs(action) <= 6.0)


def test_env_step_is_the_core_with_the_action_rho():
    """A step = set the action's rho, run K iterations of the OSQP core; the observation describes that iterate."""
    env = QPVectorEnv(3, mix=("random:6",), eps=1e-7, interval=25, max_steps=10)
    obs, _ = env.reset(seed=5)
    qps = [generate("random", 6, int(name.rsplit("-s", 1)[1])) for name in env.batch.names]
    core = OSQPBatch(QPBatch.from_qps(qps, n=env.n_max, m=env.m_max), env.osqp_settings)
    core.advance(25)  # reset's first K iterations at OSQP's rho
    torch.testing.assert_close(obs["features"], constraint_features(core).float())

    log_rho = torch.linspace(-2.0, 2.0, env.m_max).expand(3, -1).contiguous()
    _, _, terminated, _, info = env.step(log_rho)
    core.set_rho(10.0 ** log_rho.double())
    core.advance(25)
    assert info["iterations"].tolist() == core.iterations.tolist() == [50, 50, 50]
    final = info["final_obs"]["features"]
    torch.testing.assert_close(final, constraint_features(core).float())
    # the rho feature is the action on the rows a policy sets (loose rows stay at rho_min = 1e-6)
    rows = policy_rows(core)
    torch.testing.assert_close(final[..., 3][rows] * 8.0, log_rho[rows])
    assert torch.all(final[..., 3][~rows & core.con_mask] * 8.0 == -6.0)
    # a different action gives a different iterate: the action is not ignored
    other = QPVectorEnv(3, mix=("random:6",), eps=1e-7, interval=25, max_steps=10)
    other.reset(seed=5)
    _, _, _, _, info2 = other.step(torch.full((3, env.m_max), 3.0))
    assert not torch.allclose(info2["final_obs"]["features"], final)


def test_rlqp_in_chunks_gives_the_one_batch_results():
    solver = RLQPSolver(RhoPolicy.load(SHIPPED_POLICY))
    qps = [generate("random", n, seed) for n, seed in ((10, 0), (20, 1), (10, 2), (15, 3), (20, 4))]
    whole, chunks = solver.solve(qps, chunk=len(qps)), solver.solve(qps, chunk=2)
    assert chunks.x.shape == whole.x.shape
    assert torch.equal(chunks.status, whole.status) and torch.equal(chunks.iterations, whole.iterations)
    assert torch.equal(chunks.fell_back, whole.fell_back) and torch.equal(chunks.fell_back_at, whole.fell_back_at)
    assert torch.allclose(chunks.objective, whole.objective)
