"""Shipped runs: `amortize export` writes weights without training state, plain SB3 loads them, and
`shipped:<name>` evaluates them from a copy in runs/ without training."""

from __future__ import annotations

import json
import zipfile

import numpy as np
import pytest
import torch
from stable_baselines3 import SAC

from agents.cli import main
from agents.common.shipped import resolve_run
from agents.registry import config_from_dict, make_agent
from agents.workflows import evaluate, export, gap, start_run


@pytest.fixture(scope="module")
def pendulum_run(tmp_path_factory):
    cfg = config_from_dict({
        "device": "cpu", "seed": 7, "env": "Pendulum-v1",
        "problem": {"family": "max_q", "gap_iterations": 40, "gap_record_every": 4, "gap_states": 32},
        "agent": {"kind": "sac", "learning_starts": 100, "net_arch": [32, 32], "buffer_size": 5000, "batch_size": 64},
        "train": {"total_steps": 400, "checkpoint_every": 200, "log_every": 100, "eval_every": 200},
        "eval": {"episodes": 2, "training_episodes": 1, "timing_repeats": 3},
    })
    run = start_run(cfg, "pendulum", tmp_path_factory.mktemp("runs"))
    make_agent(cfg, run).train()
    return run


def test_export_writes_weights_without_training_state_that_plain_sb3_loads(pendulum_run, tmp_path):
    out = tmp_path / "shipped" / "pendulum-sac"
    record = export(pendulum_run.path, out, episodes=3)
    assert sorted(p.name for p in out.iterdir()) == ["config.yaml", "model.zip", "shipped.json"]
    assert record["steps"] == 400 and record["model"] == "final" and record["train_seconds"] > 0
    assert record["evaluation"]["episodes"] == 3 and len(json.loads((out / "shipped.json").read_text())) >= 8
    with zipfile.ZipFile(out / "model.zip") as z:
        optimizer = torch.load(z.open("actor.optimizer.pth"), weights_only=True)
        assert optimizer["state"] == {}  # fresh: no Adam moments
        assert not any("replay" in n for n in z.namelist())
    # the exported weights act as the trained model does, read by plain SB3 and by this project alike
    trained = SAC.load(pendulum_run.path / "model.zip")
    plain = SAC.load(out / "model.zip")
    obs = np.random.default_rng(0).standard_normal((16, 3)).astype(np.float32)
    assert np.array_equal(plain.predict(obs, deterministic=True)[0], trained.predict(obs, deterministic=True)[0])
    assert plain.log_ent_coef.item() == pytest.approx(trained.log_ent_coef.item())
    # the recorded return is this model's: an independent evaluation of the export gives it again
    ours = evaluate(pendulum_run.path, episodes=3)
    assert record["evaluation"]["return_mean"] == pytest.approx(ours["variants"]["policy"]["return_mean"], rel=1e-5)


def test_a_shipped_run_is_evaluated_by_name_from_a_copy(pendulum_run, tmp_path, monkeypatch, capsys):
    from agents.control.domain import DOMAIN as CONTROL

    shipped = tmp_path / "package"
    export(pendulum_run.path, shipped / "pendulum-sac", episodes=2)
    monkeypatch.chdir(tmp_path)
    packaged = CONTROL.shipped_dir
    object.__setattr__(CONTROL, "shipped_dir", shipped)  # the domain record is frozen; point it at this test's folder
    try:
        result = evaluate("shipped:pendulum-sac", episodes=1)
        copy = tmp_path / "runs" / "shipped-pendulum-sac"
        assert (copy / "eval.json").is_file() and not (shipped / "pendulum-sac" / "eval.json").exists()
        assert result["variants"]["policy"]["episodes"] == 1
        g = gap("shipped:pendulum-sac")
        assert g["states"] == 32 and (copy / "gap.json").is_file()
        import agents.cli
        from agents.workflows import catalog

        listed = tmp_path / "catalog.json"  # what `amortize list --refresh` would write with this domain record
        listed.write_text(json.dumps(catalog()))
        monkeypatch.setattr(agents.cli, "CATALOG", listed)
        capsys.readouterr()
        assert main(["list"]) == 0 and "shipped:pendulum-sac" in capsys.readouterr().out
        with pytest.raises(FileNotFoundError, match="no shipped run of that name; shipped: shipped:pendulum-sac"):
            resolve_run("shipped:nope", [shipped])
    finally:
        object.__setattr__(CONTROL, "shipped_dir", packaged)


def test_export_refuses_a_file_as_its_folder_and_zero_episodes(pendulum_run, tmp_path):
    (tmp_path / "taken").write_text("x")
    with pytest.raises(ValueError, match="--to .*taken' is a file; give a folder"):
        export(pendulum_run.path, tmp_path / "taken")
    with pytest.raises(ValueError, match="--episodes must be >= 1, got 0"):
        export(pendulum_run.path, tmp_path / "out", episodes=0)


def test_export_refuses_other_domains(tmp_path):
    run = start_run(config_from_dict({"device": "cpu", "agent": {"kind": "objective"}}), "sphere", tmp_path)
    with pytest.raises(ValueError, match="export applies to control runs only"):
        export(run.path, tmp_path / "out")


# ---------------------------------------------------------------- the Humanoid agent shipped in the package
def test_the_shipped_humanoid_agent_loads_acts_and_has_a_gap(tmp_path, monkeypatch):
    from dataclasses import replace

    from agents.control.agent import action_box, critic_q, policy_actions
    from agents.control.domain import DOMAIN as CONTROL
    from agents.control.gap import episode_states, gap_curve

    record = json.loads((CONTROL.shipped_dir / "humanoid-sac" / "shipped.json").read_text())
    assert record["env"] == "Humanoid-v5" and record["steps"] > 0 and len(record["evaluation"]["returns"]) >= 20
    monkeypatch.chdir(tmp_path)
    result = evaluate("shipped:humanoid-sac", episodes=1)  # the first of the recorded episodes, same seed
    assert result["variants"]["policy"]["returns"][0] == pytest.approx(record["evaluation"]["returns"][0], rel=1e-3)
    from agents.registry import load_run_config

    from agents.common.runs import RunDir

    run = RunDir.open(tmp_path / "runs" / "shipped-humanoid-sac")
    agent = make_agent(load_run_config(run), run)
    model = agent.load_model()
    pi = policy_actions(model)
    states, _ = episode_states("Humanoid-v5", pi, 7, 32, model.device)
    settings = replace(agent.problem.settings, gap_iterations=60, gap_record_every=20)
    r = gap_curve(critic_q(model), pi, states, action_box(model), settings, timing_repeats=3)
    assert r["states"] == 32 and r["informative_states"] > 0 and r["curve"][0]["value_mean"] == -1.0
    assert r["curve"][-1]["value_mean"] > -1.0  # Adam from the zero action climbs towards the actor's value
