"""Run directories stay consistent: one writer at a time, complete checkpoints only, named errors on resume."""

from __future__ import annotations

import json
import multiprocessing
import shutil

import pytest
import torch
import yaml

from agents.common.config import ConfigError
from agents.common.runs import RunDir, RunInUseError
from agents.common.sb3_files import MANIFEST, complete_checkpoints
from tiny_runs import SPHERE, trained_sphere_sac
from agents.registry import config_from_dict, load_config, make_agent
from agents.workflows import resume, start_run



def objective_config(steps: int):
    return config_from_dict({**SPHERE, "agent": {"kind": "objective", "hidden_sizes": [16], "batch_size": 32},
                             "train": {"total_steps": steps, "checkpoint_every": 10, "eval_every": steps,
                                       "log_every": 10}})


def test_resume_of_a_run_without_a_checkpoint_is_an_error_that_writes_nothing(tmp_path):
    run = start_run(objective_config(20), "fresh", tmp_path)
    with pytest.raises(ValueError, match="fresh.*no checkpoint to resume from"):
        resume(run.path)
    assert not (run.path / "model.pt").exists()


def test_a_run_whose_config_is_empty_is_refused(tmp_path):
    run = start_run(objective_config(20), "emptied", tmp_path)
    run.config_path.write_text("")
    with pytest.raises(ConfigError, match="config.yaml.*is empty"):
        resume(run.path)


def test_a_malformed_override_names_itself(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("agent: {kind: objective}\n")
    with pytest.raises(ConfigError, match=r"override 'agent.learning_rate=\[1'.*not valid YAML"):
        load_config(path, overrides=["agent.learning_rate=[1"])


def test_a_second_writer_of_one_run_is_refused(tmp_path):
    run = start_run(objective_config(20), "busy", tmp_path)
    with run.exclusive():
        with pytest.raises(RunInUseError, match=r"busy.*in use by process \d+"):
            with run.exclusive():
                pass
        with pytest.raises(RunInUseError):
            resume(run.path)
        from agents.cli import main

        assert main(["train", "--resume", str(run.path)]) == 2  # the CLI names it, no traceback
    with run.exclusive():  # released when the holder is done
        pass


def _create(args: tuple[str, str]) -> str:
    return str(RunDir.create(args[0], args[1]).path)


def test_run_dirs_created_at_once_by_several_processes_are_distinct(tmp_path):
    with multiprocessing.get_context("fork").Pool(6) as pool:
        paths = pool.map(_create, [("same", str(tmp_path))] * 30)
    assert len(set(paths)) == 30


def test_resume_cleans_partial_writes_and_continues_from_the_checkpoint(tmp_path):
    cfg = objective_config(20)
    run = start_run(cfg, "killed", tmp_path)
    make_agent(cfg, run).train()
    (run.checkpoints / "latest.pt.tmp").write_bytes(b"half a checkpoint")
    (run.path / "config.yaml.tmp").write_text("half a config")
    resume(run.path, ["train.total_steps=30"])
    assert not list(run.path.rglob("*.tmp"))
    assert run.load_checkpoint()["step"] == 30


@pytest.mark.parametrize("content, match", [(b"", "latest.pt.*empty"), (b"\x80\x02garbage", "latest.pt.*cannot read")])
def test_a_corrupt_checkpoint_is_named_before_training_starts(tmp_path, content, match):
    cfg = objective_config(20)
    run = start_run(cfg, "corrupt", tmp_path)
    make_agent(cfg, run).train()
    model_before = (run.path / "model.pt").read_bytes()
    (run.checkpoints / "latest.pt").write_bytes(content)
    with pytest.raises(ValueError, match=match):
        resume(run.path, ["train.total_steps=30"])
    assert (run.path / "model.pt").read_bytes() == model_before


def test_sb3_resume_uses_the_newest_complete_checkpoint_only(tmp_path):
    cfg, run = trained_sphere_sac(40, tmp_path, eval_every=40)
    (complete,) = complete_checkpoints(run.checkpoints)
    # a kill during the next save: a newer directory without its manifest, and one still named .partial
    interrupted = run.checkpoints / "sb3-000000000060"
    shutil.copytree(complete, interrupted)
    (interrupted / MANIFEST).unlink()
    shutil.copytree(complete, run.checkpoints / "sb3-000000000080.partial")
    assert make_agent(cfg, run).checkpoint_step() == 40
    resume(run.path, ["train.total_steps=60"])
    assert [p.name for p in run.checkpoints.iterdir() if p.name.startswith("sb3-")] == ["sb3-000000000060"]
    assert (run.checkpoints / "sb3-000000000060" / MANIFEST).is_file()


def test_a_checkpoint_holds_only_what_a_weights_only_load_accepts(tmp_path):
    cfg = objective_config(20)
    run = start_run(cfg, "plain", tmp_path)
    make_agent(cfg, run).train()
    state = torch.load(run.checkpoints / "latest.pt", weights_only=True)
    assert state["step"] == 20 and {"model", "optimizer", "env_generator", "torch_rng"} <= set(state)


@pytest.mark.parametrize("manifest", ["{", '{"step": 40}', '{"step": 40, "files": ["model.zip"], "counters": {"num_timesteps": "x"}}',
                                      '{"step": 40, "files": ["../../escape"], "counters": {}}'])
def test_a_malformed_sb3_manifest_is_named(tmp_path, manifest):
    from agents.common.sb3_files import read_manifest

    (tmp_path / "model.zip").write_bytes(b"")
    (tmp_path / MANIFEST).write_text(manifest)
    with pytest.raises(ValueError, match="manifest.json.*not a checkpoint manifest"):
        read_manifest(tmp_path)


def test_a_finished_run_says_so_on_resume_and_its_budgets_are_recorded(tmp_path):
    cfg = objective_config(20)
    run = start_run(cfg, "budget", tmp_path)
    make_agent(cfg, run).train()
    with pytest.raises(ValueError, match=r"budget' has finished: its checkpoint is at step 20 and train.total_steps=20; "
                                         r"to train on, give a larger budget, e.g. .*train.total_steps=40"):
        resume(run.path)
    resume(run.path, ["train.total_steps=30"])
    history = json.loads((run.path / "history.json").read_text())
    assert [(h["from_step"], h["total_steps"], h["overrides"]) for h in history] == [
        (0, 20, []), (20, 30, ["train.total_steps=30"])]


def test_config_yaml_carries_the_runs_actual_name(tmp_path):
    first = start_run(objective_config(20), "taken", tmp_path)
    second = start_run(objective_config(20), "taken", tmp_path)
    assert second.name == "taken-2"
    assert yaml.safe_load(second.config_path.read_text())["name"] == "taken-2"
    assert yaml.safe_load(first.config_path.read_text())["name"] == "taken"
