"""Same seed, same numbers: two tiny runs of every agent family from one config end at bit-identical weights."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from stable_baselines3.common.save_util import load_from_zip_file

from agents.registry import config_from_dict, load_config
from agents.workflows import train

ROOT = Path(__file__).resolve().parents[1]
SMALL_EVAL = {"contexts": 32, "episodes": 2, "timing_repeats": 2}
SPHERE = {"device": "cpu", "seed": 4, "eval": SMALL_EVAL, "solver": {"restarts": 4, "steps": 30},
          "train": {"total_steps": 40, "checkpoint_every": 20, "eval_every": 20, "log_every": 10}}
RLQP = {
    "seed": 3, "device": "cpu", "env": "amortize/QP-RLQP-v0",
    "problem": {"family": "qp", "mix": ["random:5", "portfolio:5"], "eps": 1e-4, "interval": 25, "max_steps": 20},
    "agent": {"kind": "rlqp_td3", "hidden_sizes": [16, 16], "num_envs": 4, "batch_size": 64, "buffer_size": 5000,
              "rows_per_problem": 8, "learning_starts": 2, "gradient_steps": 2, "eval_problems_per_size": 1},
    "train": {"total_steps": 6, "checkpoint_every": 3, "log_every": 2, "eval_every": 6},
}
FIXED_POINT = ["device=cpu", "problem.dim=8", "problem.context_dim=3", "problem.max_steps=8",
               "agent.hidden_sizes=[16]", "agent.batch_size=16", "eval.contexts=32", "train.total_steps=12",
               "train.log_every=4", "train.eval_every=6", "train.checkpoint_every=6"]
L2O = ["device=cpu", "problem.dim=4", "problem.samples=16", "problem.horizon=10", "problem.history=5",
       "agent.hidden_sizes=[8]", "agent.batch_size=16", "eval.contexts=32", "train.total_steps=10",
       "train.log_every=5", "train.eval_every=5", "train.checkpoint_every=5"]


def sb3_weights(path: Path) -> dict[str, torch.Tensor]:
    _, params, _ = load_from_zip_file(path, load_data=False, device="cpu")
    return params["policy"]


CASES = {
    "sphere objective": (lambda: config_from_dict({**SPHERE, "agent": {"kind": "objective", "hidden_sizes": [16],
                                                                        "batch_size": 32}}),
                         "model.pt", lambda p: torch.load(p)["state_dict"]),
    "sphere SAC (SB3)": (lambda: config_from_dict({**SPHERE, "agent": {"kind": "sac", "learning_starts": 16,
                                                                        "batch_size": 16, "n_envs": 2, "net_arch": [16],
                                                                        "buffer_size": 256}}),
                         "model.zip", sb3_weights),
    "fixed point (NeuralFP)": (lambda: load_config(ROOT / "configs" / "fp_deq_neuralfp.yaml", overrides=FIXED_POINT),
                               "accelerator.pt", lambda p: torch.load(p)["state_dict"]),
    "learning to optimize": (lambda: load_config(ROOT / "configs" / "l2o_logreg_objective.yaml", overrides=L2O),
                             "optimizer.pt", lambda p: torch.load(p)["state_dict"]),
    "RLQP (row TD3)": (lambda: config_from_dict(RLQP), "policy.pt", lambda p: torch.load(p)["state_dict"]),
}


@pytest.mark.parametrize("case", list(CASES))
def test_one_seed_gives_bit_identical_weights(tmp_path, case):
    make_config, product, read = CASES[case]
    weights = [read(train(make_config(), name=f"run{i}", root=tmp_path).path / product) for i in range(2)]
    assert weights[0].keys() == weights[1].keys() and weights[0]
    different = [k for k in weights[0] if not torch.equal(weights[0][k], weights[1][k])]
    assert different == [], f"{case}: {different} differ between two runs of one seed"
    # the comparison can see a difference: another seed ends elsewhere
    other = make_config()
    other.seed += 1
    moved = read(train(other, name="other-seed", root=tmp_path).path / product)
    assert any(not torch.equal(weights[0][k], moved[k]) for k in moved), f"{case}: the seed changes nothing"
