"""Stopping a run: Ctrl-C and SIGTERM save a checkpoint and the model, resumed TensorBoard curves have
neither gaps nor duplicates, and a failed command leaves no empty run directory."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from agents.cli import main
from agents.common import interrupt
from agents.common.sb3_files import complete_checkpoints
from agents.common.schedule import TrainSchedule
from tiny_runs import SPHERE, trained_sphere_sac
from agents.registry import config_from_dict, make_agent
from agents.workflows import resume, start_run

ROOT = Path(__file__).resolve().parents[1]


def next_process() -> None:
    """TensorBoard orders event files by name, whose first field is a one-second timestamp: runs resumed
    in one test process wait a second, as two real processes would be apart."""
    time.sleep(1.05)


def merged_steps(run_dir: Path, tag: str) -> list[int]:
    """The steps of ``tag`` as TensorBoard shows them: every event file of the run, purges applied."""
    acc = EventAccumulator(str(run_dir / "tb"))
    acc.Reload()
    return [e.step for e in acc.Scalars(tag)]


# ---------------------------------------------------------------- the stop request itself
def test_the_first_signal_asks_for_a_stop_and_the_second_interrupts():
    with interrupt.graceful_stop():
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.05)
        assert interrupt.stop_requested() and interrupt.received_signal() == signal.SIGINT
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.05)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handlers restored
    interrupt.clear()


def test_a_stop_request_makes_the_next_step_a_checkpoint_without_an_evaluation():
    schedule = TrainSchedule(total=1000, log_every=100, eval_every=7, checkpoint_every=500)
    assert schedule.at(14) == (False, True, False, False)
    interrupt.request_stop()
    try:
        assert schedule.at(14) == (False, False, True, True)
        assert schedule.due(13, 14, at_end=False) == (False, False, False, True)  # SB3: train() checkpoints
    finally:
        interrupt.clear()


# ---------------------------------------------------------------- signals on a real process
def _start(tmp_path: Path, config: dict) -> tuple[subprocess.Popen, Path]:
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(config))
    proc = subprocess.Popen([sys.executable, "-m", "agents.cli", "train", str(path), "--name", "long", "--root", str(tmp_path)],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    return proc, tmp_path / "long"


def _wait_for(path: Path, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, f"{path} did not appear"
        time.sleep(0.1)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_checkpoints_saves_the_model_and_exits_non_zero(tmp_path, signum):
    proc, run = _start(tmp_path, {**SPHERE, "agent": {"kind": "objective", "hidden_sizes": [16], "batch_size": 32},
                                  "train": {"total_steps": 10**7, "checkpoint_every": 25, "eval_every": 10**7,
                                            "log_every": 25}})
    _wait_for(run / "checkpoints" / "latest.pt", proc)
    proc.send_signal(signum)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signum, err
    (line,) = [l for l in err.splitlines() if "interrupted" in l]
    name = signal.Signals(signum).name
    step = int(re.search(rf"amortize train: interrupted by {name} at step (\d+); checkpoint and model saved; "
                         rf"resume with: amortize train --resume \S+long$", line).group(1))
    assert "Traceback" not in err and " done in " not in err and "stopped after" in err
    assert (run / "model.pt").is_file()
    assert main(["eval", str(run), "--episodes", "1"]) == 0  # the saved model is usable
    resume(run, [f"train.total_steps={step + 5}"])
    from agents.common.runs import RunDir

    assert RunDir.open(run).load_checkpoint()["step"] == step + 5


def test_sb3_runs_stop_on_a_signal_with_a_complete_checkpoint(tmp_path):
    proc, run = _start(tmp_path, {**SPHERE, "agent": {"kind": "sac", "learning_starts": 16, "batch_size": 16,
                                                      "net_arch": [16], "buffer_size": 10**5},
                                  "train": {"total_steps": 10**6, "checkpoint_every": 50, "eval_every": 10**6,
                                            "log_every": 50}})
    deadline = time.monotonic() + 120
    while not complete_checkpoints(run / "checkpoints"):
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    step = int(re.search(r"interrupted by SIGINT at step (\d+)", err).group(1))
    assert complete_checkpoints(run / "checkpoints")[-1].name == f"sb3-{step:012d}"
    assert re.search(rf"checkpoint at step {step}: [\d.]+ [kMG]?B \(manifest.json .*model.zip .*replay_buffer.npz", err)
    assert (run / "model.zip").is_file()


# ---------------------------------------------------------------- TensorBoard across resumes
def test_a_resumed_curve_has_no_gap_and_no_duplicate(tmp_path):
    cfg = config_from_dict({**SPHERE, "agent": {"kind": "objective", "hidden_sizes": [16], "batch_size": 32},
                            "train": {"total_steps": 20, "checkpoint_every": 10, "eval_every": 10, "log_every": 5}})
    run = start_run(cfg, "curve", tmp_path)
    make_agent(cfg, run).train()
    kept = tmp_path / "latest-at-20.pt"
    shutil.copy(run.checkpoints / "latest.pt", kept)
    next_process()
    resume(run.path, ["train.total_steps=40"])  # logs 25..40, then is "killed" back to its step-20 checkpoint
    shutil.copy(kept, run.checkpoints / "latest.pt")
    next_process()
    resume(run.path, ["train.total_steps=50"])
    assert merged_steps(run.path, "train/loss") == list(range(5, 55, 5))
    assert merged_steps(run.path, "eval/objective_gap") == [10, 20, 30, 40, 50]


def test_a_resumed_sb3_curve_and_its_losses_have_no_duplicate(tmp_path):
    cfg, run = trained_sphere_sac(40, tmp_path)
    (at_40,) = complete_checkpoints(run.checkpoints)
    shutil.copytree(at_40, tmp_path / "kept")
    next_process()
    resume(run.path, ["train.total_steps=80"])
    for d in complete_checkpoints(run.checkpoints):  # the process that reached 80 is "killed" back to step 40
        shutil.rmtree(d)
    shutil.copytree(tmp_path / "kept", at_40)
    next_process()
    resume(run.path, ["train.total_steps=100"])
    for tag in ("charts/SPS", "train/critic_loss", "eval/objective_gap"):
        steps = merged_steps(run.path, tag)
        assert steps == sorted(set(steps)) and steps[-1] == 100 and 40 in steps, (tag, steps)
    assert merged_steps(run.path, "charts/SPS") == [20, 40, 60, 80, 100]


# ---------------------------------------------------------------- failed commands
def test_a_failed_training_leaves_no_empty_run_directory(tmp_path, monkeypatch, capsys):
    from agents.common.amortizers import GradientAmortizer

    def fail(self, resume=False):
        raise ValueError("the env could not be built")

    monkeypatch.setattr(GradientAmortizer, "train", fail)
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({**SPHERE, "agent": {"kind": "objective"}}))
    assert main(["train", str(path), "--name", "doomed", "--root", str(tmp_path / "runs")]) == 2
    assert "could not be built" in capsys.readouterr().err
    assert list((tmp_path / "runs").iterdir()) == []


def test_a_failed_command_keeps_a_run_that_holds_a_checkpoint(tmp_path):
    from agents.common.runs import RunDir, discard_unfinished, forget_created

    forget_created()
    empty, useful = RunDir.create("empty", tmp_path), RunDir.create("useful", tmp_path)
    (empty.path / "config.yaml").write_text("seed: 0\n")
    (empty.tensorboard).mkdir()
    (empty.tensorboard / "events.out.tfevents.1.host").write_bytes(b"")
    (useful.checkpoints / "latest.pt").write_bytes(b"x")
    assert discard_unfinished() == [empty.path]
    assert not empty.path.exists() and useful.path.exists()
