"""Learning-to-optimize agents end to end on tiny budgets: configs, the unrolled objective, SB3 with the
coordinatewise policy, resume, eval and the benchmark."""

import json
from pathlib import Path

import pytest
import torch
from tb_steps import scalar_steps

from agents.cli import main
from agents.common.config import ConfigError
from agents.l2o.agent import heldout_tasks
from agents.l2o.policies import CoordinatewiseTD3Policy
from agents.registry import load_config
from learned_optimizers.l2o import core as l2o
from learned_optimizers.l2o.classical import first_order_trace, value_and_grad
from learned_optimizers.l2o.coordinatewise import CoordinatewiseUpdate

ROOT = Path(__file__).resolve().parents[1]
CONFIG = str(ROOT / "configs" / "l2o_logreg_objective.yaml")
SMALL = ["device=cpu", "problem.dim=4", "problem.samples=32", "problem.horizon=20", "problem.history=5",
         "agent.hidden_sizes=[16]", "agent.batch_size=32", "eval.contexts=64", "train.log_every=5",
         "train.eval_every=10", "train.checkpoint_every=10"]


def train(tmp_path, name, steps, *extra):
    code = main(["train", CONFIG, *SMALL, f"train.total_steps={steps}", "--name", name, "--root", str(tmp_path), *extra])
    assert code == 0
    return tmp_path / name


def heldout_log_ratio(model: CoordinatewiseUpdate | None, tasks) -> float:
    x, phi0 = heldout_tasks(tasks, 5, 128, torch.device("cpu"))
    trace = model.solve(x, phi0, 20) if model is not None else l2o.solve(tasks, x, phi0, 20)
    return torch.log10(trace.values / trace.values[:, :1]).mean().item()


def test_config_pairs_training_tasks_with_their_env_and_agents():
    with pytest.raises(ConfigError, match="go with env=amortize/LearnToOptimize-v0"):
        load_config(CONFIG, ["env=amortize/FixedPoint-v0"])
    with pytest.raises(ConfigError, match="agent.kind='sac' cannot train on amortize/LearnToOptimize-v0; allowed: l2o_objective, td3, ddpg"):
        load_config(CONFIG, ["agent={kind: sac}"])
    with pytest.raises(ConfigError, match="needs env=amortize/LearnToOptimize-v0"):
        load_config(ROOT / "configs" / "sphere_objective.yaml", ["agent={kind: l2o_objective}"])
    with pytest.raises(ConfigError, match="agent.loss='sum' is not allowed"):
        load_config(CONFIG, ["agent.loss=sum"])
    with pytest.raises(ConfigError, match="problem.history=0 is out of range"):
        load_config(CONFIG, ["problem.history=0"])
    for path in sorted((ROOT / "configs").glob("l2o_*.yaml")):
        assert load_config(path).env == "amortize/LearnToOptimize-v0"


def test_objective_agent_learns_logs_and_resumes_bit_for_bit(tmp_path):
    run = train(tmp_path, "obj", 40, "agent.truncation=10")
    model = CoordinatewiseUpdate.load(run / "optimizer.pt")
    assert heldout_log_ratio(model, model.tasks) < heldout_log_ratio(None, model.tasks) - 0.05  # 12% lower objectives (geometric mean)
    # truncation 10 of a 20-step horizon: two gradient steps per episode, evaluations every 10 steps
    assert scalar_steps(run, "eval/median_steps_to_target") == [[10, 20, 30, 40]]
    assert scalar_steps(run, "objective_vs_step/learned/median") == [list(range(41))]
    assert [p for p in (run / "tb").iterdir() if p.is_dir()] == []  # one TensorBoard run per run directory
    first = train(tmp_path, "resumed", 20, "agent.truncation=10")
    assert main(["train", "--resume", str(first), "train.total_steps=40"]) == 0
    a = torch.load(run / "optimizer.pt", weights_only=False)["state_dict"]
    b = torch.load(first / "optimizer.pt", weights_only=False)["state_dict"]
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0)


def test_sb3_td3_with_the_coordinatewise_policy_then_eval_and_benchmark(tmp_path, capsys):
    obj = train(tmp_path, "obj", 10)
    td3 = train(tmp_path, "td3", 96, "agent={kind: td3, learning_starts: 32, batch_size: 16, net_arch: [16], n_envs: 4}",
                "train.eval_every=48", "train.checkpoint_every=48")
    assert scalar_steps(td3, "eval/median_steps_to_target")
    from stable_baselines3 import TD3

    model = TD3.load(td3 / "model.zip")
    assert isinstance(model.policy, CoordinatewiseTD3Policy)
    # the actor is one network per coordinate: it runs on 3x the coordinates and commutes with permutations
    obs = torch.randn(2, 15, l2o.features_per_coordinate(load_config(CONFIG, SMALL).problem))
    perm = torch.randperm(15)
    with torch.no_grad():
        torch.testing.assert_close(model.policy.actor(obs[:, perm]), model.policy.actor(obs)[:, perm])
        # exported as the same deployable network the objective agent trains: same actions, in env units
        exported = CoordinatewiseUpdate.load(td3 / "optimizer.pt")
        bound = exported.tasks.settings.max_correction
        torch.testing.assert_close(exported.act(obs), bound * model.policy.actor(obs))
    assert [s for steps in scalar_steps(td3, "objective_vs_step/learned/median") for s in steps] == list(range(41))

    assert main(["eval", str(obj), "--episodes", "2"]) == 0
    result = json.loads((obj / "eval.json").read_text())
    assert result["gymnasium"]["episodes"] == 2 and result["heldout"]["tasks"] == 64
    # eval's held-out figure is the saved optimizer against tuned Adam, recomputed here from the two solvers
    saved = CoordinatewiseUpdate.load(obj / "optimizer.pt")
    x64, p64 = heldout_tasks(saved.tasks, 1_000_003, 64, torch.device("cpu"))
    adam_target = first_order_trace(saved.tasks.objective, x64, p64, "adam", saved.learning_rate, 20).values[:, 20]
    expected = saved.solve(x64, p64, 20).steps_to(adam_target).median().item()
    assert result["heldout"]["learned"]["median_steps_to_target"] == pytest.approx(expected)
    assert main(["gap", str(obj)]) == 2
    assert "bench l2o" in capsys.readouterr().err

    code = main(["bench", "l2o", "--family", "logreg", "--checkpoint", str(obj), "--checkpoint", str(td3), "--tasks", "16",
                 "--name", "b", "--root", str(tmp_path)])
    assert code == 0
    out = capsys.readouterr().out
    summary = json.loads((tmp_path / "b" / "bench.json").read_text())
    labels = list(summary["methods"])
    assert labels[-3:] == ["L-BFGS (scipy)", "obj (l2o_objective)", "td3 (td3)"] and labels[0].startswith("gd (lr ")
    adam_label = next(k for k in labels if k.startswith("adam"))
    assert summary["methods"][adam_label]["adam_over_method_median_steps"] == 1
    # the rows are independent solves of the same held-out tasks: Adam's from the sweep's rate, the learned
    # one from the saved optimizer file
    run_config = load_config(obj / "config.yaml")
    model = CoordinatewiseUpdate.load(obj / "optimizer.pt")
    x, phi0 = heldout_tasks(model.tasks, 1_000_003, 16, torch.device("cpu"))
    rate = summary["tuned_learning_rates"]["adam"]["best"]
    adam = first_order_trace(model.tasks.objective, x, phi0, "adam", rate, 40)
    learned = model.solve(x, phi0, 40)
    steps = learned.steps_to(adam.values[:, 20])
    row = summary["methods"]["obj (l2o_objective)"]
    assert row["median_steps_to_target"] == pytest.approx(steps.median().item())
    assert row["median_ms_per_task_to_target"] == pytest.approx(row["ms_per_step_batch"] / 16 * row["median_steps_to_target"])
    assert max(len(line) for line in summary["table"].splitlines()) <= 120
    assert row["median_objective_at_10"] == pytest.approx(learned.values[:, 10].median().item(), rel=1e-9)
    assert summary["methods"][adam_label]["median_objective_at_10"] == pytest.approx(adam.values[:, 10].median().item(), rel=1e-9)
    # L-BFGS's row is scipy's own result: minimize stopped after 10 iterations gives the step-10 value
    from scipy.optimize import minimize

    def fun(p, i):
        value, grad = value_and_grad(model.tasks.objective, torch.from_numpy(p).unsqueeze(0), x[i: i + 1])
        return float(value[0]), grad[0].numpy()

    scipy_10 = [minimize(fun, phi0[i].numpy(), args=(i,), jac=True, method="L-BFGS-B",
                         options={"maxiter": 10, "ftol": 0.0, "gtol": 0.0}).fun for i in range(16)]
    assert summary["methods"]["L-BFGS (scipy)"]["median_objective_at_10"] == pytest.approx(torch.tensor(scipy_10).median().item(), rel=1e-6)
    assert run_config.problem.horizon == summary["horizon"] == 20
    scenarios = [(g["method"], g["scenario"]) for g in summary["generalization"]]
    assert scenarios[:3] == [("obj (l2o_objective)", "40 steps (2x trained)"), ("obj (l2o_objective)", "4x size"),
                             ("obj (l2o_objective)", "unseen family robust")]
    assert summary["generalization"][1]["size"] == 4 * 4 + 1  # 16 features and a bias, trained on 4
    # the 4x row: the same optimizer on larger tasks, on that family's own tuned Adam rate, against Adam there
    big = model.tasks.scaled(4)
    xb, pb = heldout_tasks(big, 1_000_003, 16, torch.device("cpu"))
    big_rate = l2o.tuned_learning_rate(big).best
    big_target = first_order_trace(big.objective, xb, pb, "adam", big_rate, 40).values[:, 20]
    big_steps = \
        l2o.solve(big, xb, pb, 40, model.act, big_rate).steps_to(big_target)
    g = summary["generalization"][1]
    assert g["adam_learning_rate"] == big_rate
    assert g["learned"]["median_steps_to_target"] == pytest.approx(big_steps.median().item())
    assert "Generalization" in out and (tmp_path / "b" / "plots" / "objective_logreg.png").stat().st_size > 10_000


def test_benchmark_refuses_other_families_and_mixed_tasks(tmp_path, capsys):
    a = train(tmp_path, "a", 2)
    b = train(tmp_path, "b", 2, "problem.samples=40")
    assert main(["bench", "l2o", "--checkpoint", str(a), "--checkpoint", str(b), "--root", str(tmp_path)]) == 2
    assert "different task distributions" in capsys.readouterr().err
    assert main(["bench", "l2o", "--family", "robust", "--checkpoint", str(a), "--root", str(tmp_path)]) == 2
    assert "trained on family 'logreg'" in capsys.readouterr().err
    assert main(["bench", "l2o", "--family", "svm", "--root", str(tmp_path)]) == 2
    assert "allowed: logreg, robust, mlp, quadratic" in capsys.readouterr().err
