"""Run directories, resume and the CLI, end to end on tiny budgets."""

import json
from pathlib import Path

import pytest
import torch
import yaml
from tb_steps import scalar_steps

from agents.cli import main
from agents.common.progress import Progress
from agents.common.runs import RunDir

ROOT = Path(__file__).resolve().parents[1]
OBJECTIVE = str(ROOT / "configs" / "sphere_objective.yaml")
TINY = ["device=cpu", "agent.hidden_sizes=[32,32]", "agent.batch_size=64", "train.log_every=5", "train.eval_every=20",
        "train.checkpoint_every=20", "eval.contexts=64", "solver.steps=60", "eval.episodes=5", "eval.timing_repeats=3"]


def train_cli(tmp_path, name, steps, *extra):
    code = main(["train", OBJECTIVE, *TINY, f"train.total_steps={steps}", "--name", name, "--root", str(tmp_path), *extra])
    assert code == 0
    return tmp_path / name


def test_run_directory_contents(tmp_path, capsys):
    run = train_cli(tmp_path, "r1", 40, "--seed", "7")
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["seed"] == 7  # the resolved config records the seed and every default
    assert config["agent"]["kind"] == "objective" and config["agent"]["activation"] == "relu"
    assert config["problem"] == {"family": "sphere", "n_components": 4, "gamma": 0.5, "beta": 0.2}
    assert (run / "model.pt").is_file()
    assert torch.load(run / "checkpoints" / "latest.pt", weights_only=False)["step"] == 40
    assert scalar_steps(run, "train/loss") == [list(range(5, 41, 5))]
    assert scalar_steps(run, "eval/objective_gap") == [[20, 40]]
    # periodic progress lines when not a terminal
    assert "40/40 steps" in capsys.readouterr().err


def test_taken_names_get_a_suffix(tmp_path):
    assert RunDir.create("a", tmp_path).name == "a"
    assert RunDir.create("a", tmp_path).name == "a-2"
    with pytest.raises(ValueError, match="run name"):
        RunDir.create("a b", tmp_path)


def test_resume_continues_the_step_counter_and_matches_an_uninterrupted_run(tmp_path):
    straight = train_cli(tmp_path, "straight", 80)
    part = train_cli(tmp_path, "part", 40)
    assert main(["train", "--resume", str(part), "train.total_steps=80"]) == 0
    assert torch.load(part / "checkpoints" / "latest.pt", weights_only=False)["step"] == 80
    assert yaml.safe_load((part / "config.yaml").read_text())["train"]["total_steps"] == 80
    # TensorBoard: a second event file whose steps continue where the first stopped
    assert scalar_steps(part, "train/loss") == [list(range(5, 41, 5)), list(range(45, 81, 5))]
    # the resumed run reaches the same weights as the uninterrupted one
    a = torch.load(straight / "model.pt", weights_only=False)["state_dict"]
    b = torch.load(part / "model.pt", weights_only=False)["state_dict"]
    for key in a:
        torch.testing.assert_close(a[key], b[key])


def test_resume_refuses_to_change_the_problem(tmp_path, capsys):
    run = train_cli(tmp_path, "r", 20)
    assert main(["train", "--resume", str(run), "problem.gamma=0.1"]) == 2
    assert "problem: cannot change on --resume" in capsys.readouterr().err


def test_eval_and_gap_write_their_files(tmp_path, capsys):
    run = train_cli(tmp_path, "r", 40)
    assert main(["eval", str(run), "--episodes", "4"]) == 0
    result = json.loads((run / "eval.json").read_text())
    assert result["gymnasium"]["episodes"] == 4
    vs = result["vs_solver"]
    assert vs["contexts"] == 64 and vs["gap_mean"] >= -1e-4  # the solver is never beaten by much
    assert vs["model_objective_mean"] == pytest.approx(vs["solver_objective_mean"] + vs["gap_mean"], abs=1e-5)
    assert (run / "plots" / "sphere.png").stat().st_size > 10_000
    assert main(["gap", str(run)]) == 0
    gap = json.loads((run / "gap.json").read_text())
    assert gap["curve"][0]["iteration"] == 0 and gap["curve"][-1]["iteration"] == 60
    assert (run / "plots" / "gap.png").is_file()
    out = capsys.readouterr().out
    assert "f(model)" in out and "gap.json" in out


def test_cli_reports_config_errors_and_exits_2(tmp_path, capsys):
    code = main(["train", OBJECTIVE, "agent.lr=1", "--root", str(tmp_path)])
    assert code == 2
    assert "agent.lr: unknown key" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())  # nothing is created for a bad config
    assert main(["eval", str(tmp_path / "missing")]) == 2
    assert "no config.yaml" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        main(["bench", "torus"])
    assert exit_info.value.code == 2
    assert "invalid choice: 'torus'" in capsys.readouterr().err
    assert main(["train", "--resume", str(tmp_path), OBJECTIVE]) == 2
    assert "either CONFIG.yaml or --resume" in capsys.readouterr().err


def test_list_shows_envs_agents_and_configs(capsys):
    assert main(["list", "--configs", str(ROOT / "configs")]) == 0
    out = capsys.readouterr().out
    assert "amortize/Sphere-v0" in out and "regression" in out and "sphere_sac.yaml" in out


def test_progress_prints_periodic_lines(capsys):
    import sys

    p = Progress(10, desc="job", stream=sys.stdout, interval_s=0.0, force_lines=True)
    for _ in range(10):
        p.update(1, loss=0.5)
    p.close()
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("[job] 1/10 steps") and "loss=0.5" in lines[0]
    assert "10/10 steps (100%)" in lines[-1] and "done in" in lines[-1]


def test_configs_by_shipped_name_from_any_directory(tmp_path, monkeypatch, capsys):
    from agents.cli import main, resolve_config

    monkeypatch.chdir(tmp_path)  # no configs/ here
    assert resolve_config("sphere_objective").name == "sphere_objective.yaml"
    assert resolve_config("sphere_objective.yaml").is_file()
    with pytest.raises(FileNotFoundError, match="config 'sphere_objectiv': no such file, nor a shipped config.*sphere_objective"):
        resolve_config("sphere_objectiv")
    assert main(["train", "sphere_objective", "device=cpu", "train.total_steps=2", "eval.contexts=8",
                 "solver.restarts=2", "solver.steps=5", "--root", str(tmp_path / "runs")]) == 0
    assert (tmp_path / "runs" / "sphere-objective" / "model.pt").is_file()
    capsys.readouterr()
    assert main(["list"]) == 0
    assert "configs/humanoid_sac.yaml" in capsys.readouterr().out


def test_an_sb3_budget_that_is_no_multiple_of_n_envs_shows_the_steps_it_takes(tmp_path, capsys):
    from tiny_runs import SPHERE

    from agents.registry import config_from_dict, make_agent
    from agents.workflows import start_run

    cfg = config_from_dict({**SPHERE, "agent": {"kind": "td3", "learning_starts": 4, "batch_size": 4, "n_envs": 16,
                                                 "net_arch": [8], "buffer_size": 64},
                            "train": {"total_steps": 10, "checkpoint_every": 10, "eval_every": 10, "log_every": 10}})
    run = start_run(cfg, "td3", tmp_path)
    make_agent(cfg, run).train()
    err = capsys.readouterr().err
    assert "16/16 steps (100%)" in err and "160%" not in err


@pytest.mark.parametrize("fmt", ["text", "md", "csv"])
def test_tables_print_as_text_markdown_or_csv(fmt):
    import csv
    import io

    from agents.common.tables import format_table, set_table_format

    rows = [["random", 10, 0.123456, None], ["svm", 5, 2.0, "x"]]
    set_table_format(fmt)
    try:
        text = format_table(["class", "problems", "ratio", "note"], rows)
    finally:
        set_table_format("text")
    if fmt == "csv":
        assert list(csv.reader(io.StringIO(text))) == [["class", "problems", "ratio", "note"],
                                                       ["random", "10", "0.1235", "-"], ["svm", "5", "2", "x"]]
    elif fmt == "md":
        lines = text.splitlines()
        assert lines[0] == "| class | problems | ratio | note |" and lines[1] == "|---|---|---|---|"
        assert lines[2] == "| random | 10 | 0.1235 | - |"
    else:
        assert text.splitlines()[2].split() == ["random", "10", "0.1235", "-"]
    with pytest.raises(ValueError, match="--format 'xls': allowed: text, md, csv"):
        set_table_format("xls")


def test_eval_prints_its_table_as_markdown(tmp_path, capsys):
    from agents.cli import main

    assert main(["train", "sphere_objective", "device=cpu", "train.total_steps=2", "eval.contexts=8", "solver.restarts=2",
                 "solver.steps=5", "--name", "md", "--root", str(tmp_path)]) == 0
    capsys.readouterr()
    assert main(["eval", str(tmp_path / "md"), "--episodes", "1", "--format", "md"]) == 0
    out = capsys.readouterr().out
    assert "|---|" in out


@pytest.mark.parametrize("argv", [["--help"], ["train", "--help"], ["eval", "--help"]])
def test_help_starts_without_importing_torch_or_gymnasium(argv):
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-X", "importtime", "-m", "agents.cli", *argv], capture_output=True, text=True)
    assert done.returncode == 0 and "usage: amortize" in done.stdout
    imported = {line.split("|")[-1].strip() for line in done.stderr.splitlines() if line.startswith("import time:")}
    assert not {"torch", "gymnasium", "stable_baselines3", "matplotlib"} & imported


def test_list_starts_at_once_and_its_catalog_is_what_the_registries_say():
    import json
    import subprocess
    import sys
    import time

    from agents import workflows
    from agents.cli import CATALOG

    assert json.loads(CATALOG.read_text()) == workflows.catalog(), "stale: run `amortize list --refresh`"
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, "-X", "importtime", "-m", "agents.cli", "list"], capture_output=True,
                          text=True)
    seconds = time.perf_counter() - t0
    assert done.returncode == 0 and "amortize/QP-WarmStart-v0" in done.stdout and "shipped:humanoid-sac" in done.stdout
    imported = {line.split("|")[-1].strip() for line in done.stderr.splitlines() if line.startswith("import time:")}
    assert not {"torch", "gymnasium", "stable_baselines3", "matplotlib"} & imported
    assert seconds < 0.5, seconds


def test_shares_have_denominators_and_ratios_say_fewer_or_more():
    from agents.common.tables import fewer_or_more, fraction, share_of

    assert fraction(12, 15) == "12/15 (80%)" and fraction(0, 0) == "0/0"
    assert share_of(0.998046875, 512) == "511/512 (100%)" and share_of(float("nan"), 4) == "-"
    assert fewer_or_more(1.65) == "1.65x fewer iterations"
    assert fewer_or_more(0.84) == "1.19x more iterations"
