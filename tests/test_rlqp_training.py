"""RLQP training from a config: a few TD3 steps, resume, the policy file, and the benchmark on it."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from agents.common.config import ConfigError
from agents.qp.bench_rlqp import bench_rlqp
from agents.registry import config_from_dict
from agents.workflows import eval_table, evaluate, gap, resume, train
from learned_optimizers.qp.rlqp import RhoPolicy

TINY = {
    "name": "rlqp-tiny",
    "seed": 3,
    "device": "cpu",
    "env": "amortize/QP-RLQP-v0",
    "problem": {"family": "qp", "mix": ["random:5", "portfolio:5"], "eps": 1e-4, "interval": 25, "max_steps": 20},
    "agent": {"kind": "rlqp_td3", "hidden_sizes": [16, 16], "num_envs": 4, "batch_size": 64, "buffer_size": 5000,
              "rows_per_problem": 8, "learning_starts": 2, "gradient_steps": 2, "eval_problems_per_size": 1},
    "train": {"total_steps": 6, "checkpoint_every": 3, "log_every": 2, "eval_every": 6},
}


def test_rlqp_config_checks_that_agent_problem_and_env_belong_together():
    config_from_dict(TINY)
    with pytest.raises(ConfigError, match="problem.family=.qp. and env=.amortize/Sphere-v0.: the qp families"):
        config_from_dict({**TINY, "env": "amortize/Sphere-v0"})
    with pytest.raises(ConfigError, match=r"problem: mix\[0\]=.cubic:3.: unknown QP class"):
        config_from_dict({**TINY, "problem": {**TINY["problem"], "mix": ["cubic:3"]}})


def test_train_resume_writes_a_policy_and_bench_reads_it(tmp_path):
    config = config_from_dict(TINY)
    run = train(config, root=tmp_path)
    state = torch.load(run.checkpoints / "latest.pt", weights_only=False)
    assert state["step"] == 6 and state["buffer"]["size"] > 0
    assert state["td3"]["updates"] == (6 - 2 + 1) * 2  # updates from learning_starts on
    actor, target = state["td3"]["actor"], state["td3"]["actor_target"]
    # the target starts as a copy of the actor: they differ only if gradient steps moved the actor
    assert any(not torch.equal(actor[k], target[k]) for k in actor)
    policy = RhoPolicy.load(run.path / "policy.pt")
    assert policy.metadata["interval"] == 25 and policy.metadata["mix"] == ["random:5", "portfolio:5"]
    acc = EventAccumulator(str(run.tensorboard))
    acc.Reload()
    assert {"rollout/episode_length", "rollout/admm_iterations", "train/critic_loss", "train/actor_loss", "time/sps",
            "eval/iteration_ratio_heuristic_over_rlqp"} <= set(acc.Tags()["scalars"])
    assert "rollout/log10_rho" in acc.Tags()["histograms"]
    assert all(np.isfinite(e.value) for e in acc.Scalars("train/critic_loss"))
    resume(run.path, ["train.total_steps=9"])
    state = torch.load(run.checkpoints / "latest.pt", weights_only=False)
    assert state["step"] == 9 and state["td3"]["updates"] == 10 + 3 * 2

    result = bench_rlqp(str(run.path / "policy.pt"), name="b", per_size=2, root=tmp_path, device="cpu",
                        groups=["held-out", "eq"])
    groups = result["groups"]
    assert set(groups) == {"random (held-out)", "portfolio (held-out)", "eq (unseen)"}
    for g in groups.values():
        assert g["osqp_sgm_iter"] > 0 and g["rlqp_sgm_iter"] > 0 and g["eps"] == 1e-4
        # the safeguard holds even for an almost untrained policy
        assert g["rlqp_failed_where_osqp_solved"] == 0
    saved = json.loads((tmp_path / "b" / "bench.json").read_text())
    assert len(saved["records"]) == 2 + 2 + 6 and (tmp_path / "b" / "plots" / "rlqp_iterations.png").is_file()
    assert "held-out problems of the training classes" in result["table"]
    assert max(len(line) for line in result["table"].splitlines()) <= 120

    with pytest.raises(ValueError, match="--groups cubic: matches none of the groups"):
        bench_rlqp(str(run.path / "policy.pt"), name="c", root=tmp_path, device="cpu", groups=["cubic"])

    evaluated = evaluate(run.path, episodes=5)
    g = evaluated["gymnasium"]
    assert g["episodes"] == 5 and 1 <= g["episode_length_mean"] <= 20 and 0 <= g["solved_fraction"] <= 1
    # return = -(steps while unsolved): -length, +1 when the last step solved it
    assert g["return_mean"] == pytest.approx(-(g["episode_length_mean"] - g["solved_fraction"]))
    assert set(evaluated["vs_osqp"]) == {"random (held-out)", "portfolio (held-out)"}
    assert json.loads((run.path / "eval.json").read_text())["vs_osqp"]["random (held-out)"]["problems"] == 1
    assert "osqp/rlqp" in eval_table(evaluated)
    with pytest.raises(ValueError, match="an RLQP policy is itself part of a solver.*amortize bench qp --policy"):
        gap(run.path)
