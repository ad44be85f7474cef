"""``amortize train --init-from``: a new SB3 run that starts from another run's networks."""

from __future__ import annotations

import json

import pytest
import torch

from agents.registry import make_agent
from agents.workflows import train
from tiny_runs import sphere_sac_config, trained_sphere_sac


def _weights(agent) -> dict[str, torch.Tensor]:
    model = agent.load_model()
    return {**model.policy.state_dict(), "log_ent_coef": model.log_ent_coef.detach().clone()}


def test_a_run_started_from_another_keeps_its_networks_through_the_warm_up_and_continues_its_count(tmp_path):
    cfg, source = trained_sphere_sac(64, tmp_path, name="source")
    # 64 -> 78 lies in the warm-up (learning_starts 16): transitions collected with the loaded policy, no update
    run = train(sphere_sac_config(78), name="continued", root=tmp_path, init_from=source.path)
    before, after = _weights(make_agent(cfg, source)), _weights(make_agent(cfg, run))
    assert before.keys() == after.keys()
    for key in before:
        assert torch.equal(before[key], after[key]), key
    manifest = json.loads(next((run.path / "checkpoints").glob("*/manifest.json")).read_text())
    assert manifest["step"] == 78 and manifest["counters"]["_n_updates"] == 0
    assert manifest["train_seconds"] > json.loads(next((source.path / "checkpoints").glob("*/manifest.json"))
                                                  .read_text())["train_seconds"]
    history = json.loads((run.path / "history.json").read_text())
    assert history[0]["from_step"] == 64 and history[0]["init_from"]["step"] == 64

    # past the warm-up, updates resume and the networks move
    run = train(sphere_sac_config(112), name="trained-on", root=tmp_path, init_from=source.path)
    moved = _weights(make_agent(cfg, run))
    assert not torch.equal(before["actor.latent_pi.0.weight"], moved["actor.latent_pi.0.weight"])


def test_init_from_refuses_other_networks_a_spent_budget_and_non_sb3_kinds(tmp_path):
    _, source = trained_sphere_sac(64, tmp_path, name="source")
    other = sphere_sac_config(200)
    other.agent.net_arch = (32,)
    with pytest.raises(ValueError, match=r"agent.net_arch=\(16,\) there, \(32,\) in this config"):
        train(other, name="wider", root=tmp_path, init_from=source.path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["source"]  # a refused start leaves no run directory
    with pytest.raises(ValueError, match="at step 64, not below train.total_steps=64"):
        train(sphere_sac_config(64), name="spent", root=tmp_path, init_from=source.path)
    from test_checkpoints import objective_config
    with pytest.raises(ValueError, match="--init-from applies to stable-baselines3 runs.*'objective'"):
        train(objective_config(20), name="objective", root=tmp_path, init_from=source.path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["source"]
