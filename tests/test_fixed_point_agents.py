"""Fixed-point agents end to end on tiny budgets: configs, the three losses, resume, the benchmark."""

import json
from pathlib import Path

import pytest
import torch
from tb_steps import scalar_steps

from agents.cli import main
from agents.common.config import ConfigError
from agents.registry import load_config
from learned_optimizers.families import make_map
from learned_optimizers.fixed_point import core as fp
from learned_optimizers.fixed_point.neural_fp import FixedPointAccelerator

ROOT = Path(__file__).resolve().parents[1]
NEURALFP = str(ROOT / "configs" / "fp_deq_neuralfp.yaml")
SMALL = ["device=cpu", "problem.dim=8", "problem.context_dim=3", "problem.max_steps=8", "agent.hidden_sizes=[32]",
         "agent.batch_size=32", "eval.contexts=64", "train.log_every=5", "train.eval_every=10", "train.checkpoint_every=10"]


def train(tmp_path, name, steps, *extra, config=NEURALFP):
    code = main(["train", config, *SMALL, f"train.total_steps={steps}", "--name", name, "--root", str(tmp_path), *extra])
    assert code == 0
    return tmp_path / name


def heldout_log_ratio(model: FixedPointAccelerator) -> float:
    x = model.map.sample_contexts(128, torch.Generator().manual_seed(5)).double()
    trace = model.solve(x, model.task.max_steps)
    return torch.log10(trace.ratios.clamp(min=1e-30)).mean().item()


def test_config_pairs_fixed_point_families_with_their_env_and_agents():
    with pytest.raises(ConfigError, match="FixedPoint-v0"):
        load_config(NEURALFP, ["env=amortize/Sphere-v0"])
    with pytest.raises(ConfigError, match="agent.kind='ppo' cannot train"):
        load_config(NEURALFP, ["agent={kind: ppo}"])
    with pytest.raises(ConfigError, match="problem.mode='newton' is not allowed"):
        load_config(NEURALFP, ["problem.mode=newton"])
    with pytest.raises(ConfigError, match="needs env=amortize/FixedPoint-v0"):
        load_config(ROOT / "configs" / "sphere_objective.yaml", ["agent={kind: fp_objective}"])
    for path in sorted((ROOT / "configs").glob("fp_*.yaml")):
        assert load_config(path).env == "amortize/FixedPoint-v0"


def test_objective_agent_learns_and_logs(tmp_path):
    run = train(tmp_path, "neuralfp", 60, "agent.learning_rate=3e-3")
    model = FixedPointAccelerator.load(run / "accelerator.pt")
    untrained = FixedPointAccelerator(model.family, model.map_settings, (32,))
    assert heldout_log_ratio(model) < heldout_log_ratio(untrained) - 0.3  # at least 2x lower residuals on average
    assert scalar_steps(run, "eval/median_evaluations_to_0.0001") == [[10, 20, 30, 40, 50, 60]]
    assert scalar_steps(run, "eval_anderson/median_ratio_at_K") == [[10, 20, 30, 40, 50, 60]]
    # residual-vs-iteration curves: median and quartiles over 2K iterations, learned and Anderson
    for method in ("learned", "anderson"):
        for q in ("q25", "median", "q75"):
            assert scalar_steps(run, f"residual_vs_iteration/{method}/{q}") == [list(range(17))]
    # one TensorBoard run per run directory: no folders of events beside the run's own
    assert [p for p in (run / "tb").iterdir() if p.is_dir()] == []


def test_resume_is_bit_for_bit(tmp_path):
    straight = train(tmp_path, "straight", 20)
    first = train(tmp_path, "resumed", 10)
    assert main(["train", "--resume", str(first), "train.total_steps=20"]) == 0
    a = torch.load(straight / "accelerator.pt", weights_only=False)["state_dict"]
    b = torch.load(first / "accelerator.pt", weights_only=False)["state_dict"]
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0)
    assert scalar_steps(first, "train/loss") == [[5, 10], [15, 20]]


def test_regression_agent_and_sb3_agent_then_benchmark(tmp_path, capsys):
    reg = train(tmp_path, "hyperaa", 20, "agent={kind: fp_regression, dataset_size: 256, hidden_sizes: [32], batch_size: 32}",
                "problem.mode=hyper_aa")
    data = torch.load(reg / "checkpoints" / "fixed_point_dataset.pt")
    fp_map = make_map("deq", dim=8, context_dim=3)
    check = fp.solve(fp_map, data["contexts"][:16].double(), fp_map.settings, 0, y0=data["solution"][:16].double())
    assert check.ratios[:, 0].max() < 1e-6  # the labels are fixed points
    sb3 = train(tmp_path, "td3", 64, "agent={kind: td3, learning_starts: 16, batch_size: 16, net_arch: [16], n_envs: 4}",
                "problem.mode=hyper_aa", "train.eval_every=32", "train.checkpoint_every=32")
    assert scalar_steps(sb3, "eval/median_ratio_at_K")
    assert (sb3 / "model.zip").is_file()
    capsys.readouterr()
    code = main(["bench", "fixed-point", "--family", "deq", "--checkpoint", str(reg), "--checkpoint", str(sb3),
                 "--contexts", "32", "--safeguard", "1.0", "--name", "b", "--root", str(tmp_path)])
    assert code == 0
    out = capsys.readouterr().out
    summary = json.loads((tmp_path / "b" / "bench.json").read_text())
    assert set(summary["methods"]) == {"plain iteration", "anderson (M=5)", "hyperaa (fp_regression, hyper_aa)",
                                       "td3 (td3, hyper_aa)"}
    aa = summary["methods"]["anderson (M=5)"]
    assert aa["worse_than_aa_at_K"] == 0 and aa["aa_over_method_median_0.0001"] == 1
    assert summary["methods"]["plain iteration"]["median_evaluations_to_0.0001"] > aa["median_evaluations_to_0.0001"]
    # the learned rows are the saved accelerator's own solve on the same held-out contexts, loaded independently
    model = FixedPointAccelerator.load(reg / "accelerator.pt")
    x = model.map.sample_contexts(32, torch.Generator().manual_seed(1_000_003)).double()
    trace = model.solve(x, 2 * 8, safeguard=1.0)
    row = summary["methods"]["hyperaa (fp_regression, hyper_aa)"]
    assert row["median_ratio_at_K"] == pytest.approx(trace.ratios[:, 8].median().item(), rel=1e-12)
    assert row["median_ratio_at_2K"] == pytest.approx(trace.ratios[:, 16].median().item(), rel=1e-12)
    assert row["median_ratio_at_K"] != aa["median_ratio_at_K"]
    for r in summary["methods"].values():  # the clock to tolerance: one step's seconds times the median evaluations
        expected = r["ms_per_solve_K_steps"] / summary["K"] * r["median_evaluations_to_0.0001"]
        assert r["median_ms_per_problem_to_0.0001"] == pytest.approx(expected, rel=1e-9)
    assert max(len(line) for line in summary["table"].splitlines()) <= 120
    assert "anderson (M=5)" in out and (tmp_path / "b" / "plots" / "residual_deq.png").stat().st_size > 10_000


def test_benchmark_refuses_runs_on_other_maps_or_families(tmp_path, capsys):
    a = train(tmp_path, "a", 2)
    b = train(tmp_path, "b", 2, "problem.spectral_norm=0.9")
    assert main(["bench", "fixed-point", "--checkpoint", str(a), "--checkpoint", str(b), "--root", str(tmp_path)]) == 2
    assert "different maps" in capsys.readouterr().err
    assert main(["bench", "fixed-point", "--family", "ista", "--checkpoint", str(a), "--root", str(tmp_path)]) == 2
    assert "trained on family 'deq'" in capsys.readouterr().err
    assert main(["bench", "fixed-point", "--family", "scs-sdp", "--root", str(tmp_path)]) == 2
    assert "allowed: deq, ista" in capsys.readouterr().err
    assert main(["gap", str(a)]) == 2
    assert "bench fixed-point" in capsys.readouterr().err
    assert main(["eval", str(a), "--episodes", "2"]) == 0
    result = json.loads((a / "eval.json").read_text())
    assert result["gymnasium"]["episodes"] == 2 and result["gymnasium"]["return_mean"] < 0
    assert 0 < result["heldout"]["anderson"]["median_ratio_at_K"] < 1 and result["heldout"]["contexts"] == 64
