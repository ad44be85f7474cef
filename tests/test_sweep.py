"""Scale-out on Ray: sweep plans, curves across seeds, a killed run resumed, sharded benchmarks equal to serial ones."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import ray
import scipy.stats
import torch
import yaml

from agents.cli import main
from agents.common import scaleout
from agents.common.curves import RunCurve, aggregate, bootstrap_mean_interval, interquartile_mean, read_scalar
from agents.common.scaleout import Outcome, Resources, Shards, merge_shards, run_jobs
from agents.common.sweep import SweepPlan, make_plan, parse_seeds, split_values
from agents.common.runs import RunDir
from agents.qp.bench import bench_qp
from agents.registry import SCHEMA
from agents.qp.bench_rlqp import bench_rlqp
from tiny_runs import SPHERE

ROOT = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------- plans
def test_a_plan_is_the_product_of_the_grid_and_the_seeds():
    plan = make_plan("s", "c.yaml", [0, 1], ["agent.learning_rate=1e-3,3e-4", "agent.hidden_sizes=[64,64]",
                                            "solver.steps=10,20"])
    assert len(plan.runs) == 2 * 2 * 2
    assert plan.fixed == ["agent.hidden_sizes=[64,64]"]
    first = plan.runs[0]
    assert first.name == "learning_rate-1e-3_steps-10_seed-0"
    assert first.overrides == ["agent.hidden_sizes=[64,64]", "agent.learning_rate=1e-3", "solver.steps=10", "seed=0"]
    assert first.group == "agent.learning_rate=1e-3, solver.steps=10"
    assert [r.seed for r in plan.runs[:2]] == [0, 1] and plan.runs[0].group == plan.runs[1].group
    assert len({r.name for r in plan.runs}) == 8
    assert make_plan("s", "c.yaml", [3], []).runs[0].name == "seed-3"


def test_a_plan_survives_its_file(tmp_path):
    plan = make_plan("s", "c.yaml", [0, 2], ["agent.learning_rate=1e-3,3e-4"])
    plan.write(tmp_path)
    assert SweepPlan.read(tmp_path) == plan


def test_values_split_on_commas_outside_brackets():
    assert split_values("1e-3,3e-4") == ["1e-3", "3e-4"]
    assert split_values("[64,64],[128,128]") == ["[64,64]", "[128,128]"]
    assert parse_seeds("0-3") == [0, 1, 2, 3] and parse_seeds("5,1") == [5, 1]


@pytest.mark.parametrize("seeds, items, message", [
    ("0,0", [], "a seed is repeated"),
    ("x", [], "expected seeds such as"),
    ("3-1", [], "expected seeds such as"),
    ("0", ["seed=1,2"], "give the seeds with --seeds"),
    ("0", ["agent.learning_rate=1e-3,"], "an empty value"),
    ("0", ["agent.learning_rate"], "expected key=value"),
    ("0", ["a.x=1,1"], "a value is repeated"),
    ("0", ["a.x=a b,a_b"], "share a directory name"),
    ("0-20000", [], "at most"),
])
def test_bad_sweeps_are_named_errors(seeds, items, message):
    with pytest.raises(ValueError, match=message):
        make_plan("s", "c.yaml", parse_seeds(seeds), items)


def test_a_sweep_checks_every_run_config_before_creating_anything(tmp_path, capsys):
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({**SPHERE, "agent": {"kind": "objective"}}))
    code = main(["sweep", str(config), "--seeds", "0,1", "agent.learning_rat=1e-3,3e-4", "--root", str(tmp_path),
                 "--serial"])
    assert code == 2 and "agent.learning_rat: unknown key" in capsys.readouterr().err
    assert not (tmp_path / "sweep-c").exists()
    for flags, message in ((["--cpus-per-run", "0"], "CPUs per job"), (["--max-parallel", "0"], "--max-parallel"),
                           (["--retries", "-1"], "--retries"), (["device=cuda"], "--gpus-per-run")):
        serial = [] if flags == ["device=cuda"] else ["--serial"]
        assert main(["sweep", str(config), "--root", str(tmp_path), *serial, *flags]) == 2
        assert message in capsys.readouterr().err
        assert not (tmp_path / "sweep-c").exists()


def test_without_ray_the_commands_say_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # what an import of a package that is not installed meets
    with pytest.raises(scaleout.RayMissingError, match=r"pip install 'amortize\[ray\]'"):
        scaleout.require_ray("amortize sweep")


# ---------------------------------------------------------------- statistics across seeds
def test_iqm_is_the_interquartile_mean_and_the_interval_holds_the_mean():
    rng = np.random.default_rng(0)
    for n in (4, 8, 12):
        x = rng.normal(size=(n, 6))
        x[0] += 100.0  # one diverged seed
        # where n/4 is whole, the interquartile mean is scipy's 25%-trimmed mean
        np.testing.assert_allclose(interquartile_mean(x), scipy.stats.trim_mean(x, 0.25, axis=0))
    x = np.array([[1.0], [2.0], [3.0], [100.0]])
    assert interquartile_mean(x)[0] == pytest.approx(2.5)
    curves = [RunCurve("", Path(f"r{i}"), np.array([10, 20, 30]), np.array([i, 2.0 * i, 3.0 * i])) for i in range(5)]
    curves.append(RunCurve("", Path("short"), np.array([10, 20]), np.array([4.0, 4.0])))
    # the interval against scipy's percentile bootstrap of the mean (Monte Carlo error: a few % of the width)
    rng = np.random.default_rng(3)
    for trial in range(3):
        x = rng.normal(size=(20, 1)) * 2 + 1
        lo, hi = bootstrap_mean_interval(x, np.random.default_rng(trial))
        ref = scipy.stats.bootstrap((x[:, 0],), np.mean, method="percentile", n_resamples=20000,
                                    random_state=trial).confidence_interval
        width = ref.high - ref.low
        assert abs(lo[0] - ref.low) < 0.06 * width and abs(hi[0] - ref.high) < 0.06 * width
    (g,) = aggregate(curves).values()
    assert g["steps"] == [10, 20]  # the steps every run logged
    for lo, m, hi in zip(g["ci_low"], g["mean"], g["ci_high"]):
        assert lo <= m <= hi and lo < hi


def test_shards_merge_back_in_order():
    items = list(range(11))
    shards = Shards(items, 3)
    assert sorted(x for part in shards.parts() for x in part) == items
    assert shards.merge([[10 * x for x in part] for part in shards.parts()]) == [10 * x for x in items]
    assert Shards([1, 2], 5).k == 2
    with pytest.raises(ValueError, match="--workers must be >= 1"):
        Shards(items, 0)


def _fails_on_two(x: int) -> int:
    if x == 2:
        raise FloatingPointError("loss is NaN at step 7")
    return x * x


def test_one_job_failing_leaves_the_others_serial():
    outcomes = run_jobs(_fails_on_two, [1, 2, 3], ["a", "b", "c"], executor="serial")
    assert [o.result for o in outcomes] == [1, None, 9]
    assert outcomes[1].error == "FloatingPointError: loss is NaN at step 7"
    with pytest.raises(scaleout.JobsFailedError, match="1 of 3 shard"):
        merge_shards(Shards([1, 2, 3], 3), outcomes)
    with pytest.raises(ValueError, match="CPUs per job"):
        Resources(cpus=0)


# ---------------------------------------------------------------- on a local Ray cluster of 2 workers
@pytest.fixture(scope="module")
def local_ray():
    # the workers import this test module's job functions from the tests folder
    ray.init(include_dashboard=False, log_to_driver=False, configure_logging=True, logging_level="warning",
             **scaleout.local_cluster_options(num_cpus=2),
             runtime_env={"env_vars": {"PYTHONPATH": os.pathsep.join([str(ROOT / "tests"), os.environ.get("PYTHONPATH", "")])}})
    yield ray
    ray.shutdown()


def test_ray_jobs_report_one_failure_and_finish_the_others(local_ray):
    outcomes = run_jobs(_fails_on_two, [1, 2, 3], ["a", "b", "c"], max_parallel=2)
    assert [o.result for o in outcomes] == [1, None, 9], [o.error for o in outcomes]
    assert outcomes[1].error == "FloatingPointError: loss is NaN at step 7"


def _records(result: dict) -> str:
    """Every record without its times, as JSON (where NaN equals NaN: an infeasible problem has no objective)."""
    return json.dumps([{k: v for k, v in r.items() if "seconds" not in k} for r in result["records"]])


def _without_times(result: dict) -> dict:
    def strip(d):
        return {k: strip(v) if isinstance(v, dict) else v for k, v in d.items() if "seconds" not in k}
    return json.dumps(strip(result["groups"]))


def test_a_sharded_qp_bench_equals_the_serial_one(local_ray, tmp_path, capsys):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the serial run at the workers' thread count: bit-for-bit the same arithmetic
    try:
        kwargs = dict(classes=["random", "eq", "portfolio"], sizes=[10, 20], instances=3, with_throughput=False,
                      device="cpu", root=tmp_path)
        serial = bench_qp(name="serial", **kwargs)
        sharded = bench_qp(name="sharded", workers=2, **kwargs)
        assert sharded["workers"] == 2 and serial["workers"] is None
        out = capsys.readouterr().out  # the shards ran as Ray tasks
        assert "6 items over 2 Ray workers" in out and "shard 0: done" in out and "shard 1: done" in out
        assert len(serial["records"]) == 18 and '"ours_iter": 25' in _records(serial)
        assert _records(sharded) == _records(serial)  # statuses, iterations and objectives, exactly
        assert _without_times(sharded) == _without_times(serial)
        rlqp = dict(policy_path="shipped", per_size=1, groups=["held-out"], device="cpu", root=tmp_path)
        serial = bench_rlqp(name="rlqp-serial", **rlqp)
        sharded = bench_rlqp(name="rlqp-sharded", workers=2, **rlqp)
        assert "over 2 Ray workers" in capsys.readouterr().out
        assert len(serial["records"]) >= 4 and _records(sharded) == _records(serial)
        assert _without_times(sharded) == _without_times(serial)
    finally:
        torch.set_num_threads(threads)


# ---------------------------------------------------------------- a sweep killed and resumed (real processes)
def _sweep_config(tmp_path: Path) -> Path:
    path = tmp_path / "sphere.yaml"
    path.write_text(yaml.safe_dump({**SPHERE, "name": "sph", "agent": {"kind": "objective", "hidden_sizes": [32],
                                                                       "batch_size": 64},
                                    "train": {"total_steps": 2500, "checkpoint_every": 50, "eval_every": 500,
                                              "log_every": 50}}))
    return path


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "agents.cli", *args]


def test_a_sweep_survives_a_killed_run_and_its_resume_completes_it(tmp_path):
    config = _sweep_config(tmp_path)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(_cli("sweep", str(config), "--seeds", "0,1,2", "--name", "sw", "--root", str(tmp_path),
                                 "--max-parallel", "2", "--status-every", "2"),
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    victim = tmp_path / "sw" / "seed-1"
    deadline = time.monotonic() + 240
    while not (victim / "checkpoints" / "latest.pt").is_file():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "seed-1 never checkpointed"
        time.sleep(0.05)
    holder = (victim / ".lock").read_text().strip()
    assert holder.startswith("process ")
    os.kill(int(holder.split()[1]), signal.SIGKILL)  # the Ray worker training seed-1 dies mid-run
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 1, out + err
    status = json.loads((tmp_path / "sw" / "sweep-status.json").read_text())
    by_name = {r["name"]: r for r in status["runs"]}
    assert by_name["seed-0"]["ok"] and by_name["seed-2"]["ok"], status
    assert not by_name["seed-1"]["ok"] and "WorkerCrashedError" in by_name["seed-1"]["error"]
    assert "amortize sweep --resume" in err

    code = subprocess.run(_cli("sweep", "--resume", str(tmp_path / "sw"), "--status-every", "2"), cwd=ROOT,
                          capture_output=True, text=True, env=env, timeout=300)
    assert code.returncode == 0, code.stdout + code.stderr
    status = {r["name"]: r for r in json.loads((tmp_path / "sw" / "sweep-status.json").read_text())["runs"]}
    assert status["seed-0"]["status"] == "finished earlier (step 2500)"
    assert status["seed-2"]["status"] == "finished earlier (step 2500)"
    assert status["seed-1"]["status"].startswith("resumed from step ")
    history = json.loads((victim / "history.json").read_text())
    assert len(history) == 2 and history[1]["from_step"] > 0  # it continued, it did not start over
    steps, _ = read_scalar(victim, "eval/objective_gap")
    assert steps.tolist() == [500, 1000, 1500, 2000, 2500]  # one curve, every evaluation once

    curves = json.loads((tmp_path / "sw" / "curves-eval_objective_gap.json").read_text())
    (group,) = curves["groups"].values()
    assert len(group["runs"]) == 3 and group["steps"] == [500, 1000, 1500, 2000, 2500]
    assert (tmp_path / "sw" / "plots" / "curves-eval_objective_gap.png").stat().st_size > 10_000
    assert "eval/objective_gap across seeds" in code.stdout

    # the same curves from `amortize plot`, into a folder of its own
    assert main(["plot", str(tmp_path / "sw" / "seed-0"), str(tmp_path / "sw" / "seed-1"),
                 "--metric", "eval/objective_gap", "--name", "two", "--root", str(tmp_path)]) == 0
    two = json.loads((tmp_path / "two" / "curves-eval_objective_gap.json").read_text())
    assert len(two["groups"][""]["runs"]) == 2
    assert main(["plot", str(tmp_path / "sw"), "--metric", "eval/nope"]) == 2
    silent = tmp_path / "silent"  # a run killed before it logged anything
    shutil.copytree(tmp_path / "sw" / "seed-0", silent, ignore=shutil.ignore_patterns("tb"))
    assert main(["plot", str(silent), "--metric", "eval/objective_gap", "--root", str(tmp_path)]) == 2


def test_sigterm_to_a_sweep_makes_every_running_run_checkpoint_where_it_stands(tmp_path):
    config = tmp_path / "long.yaml"
    config.write_text(yaml.safe_dump({**SPHERE, "agent": {"kind": "objective", "hidden_sizes": [16], "batch_size": 32},
                                      "train": {"total_steps": 10**7, "checkpoint_every": 10**6,
                                                "eval_every": 10**7, "log_every": 100}}))
    proc = subprocess.Popen(_cli("sweep", str(config), "--seeds", "0,1", "--name", "sw", "--root", str(tmp_path)),
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    runs = [tmp_path / "sw" / f"seed-{s}" for s in (0, 1)]
    deadline = time.monotonic() + 240
    while not all((r / "tb").is_dir() for r in runs):  # both are training
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the runs never started"
        time.sleep(0.1)
    time.sleep(3)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=240)
    assert proc.returncode == 130, out + err
    assert f"amortize sweep --resume {tmp_path / 'sw'}" in err
    for run in runs:  # no checkpoint was due before 10**6 steps: these are the stop's own
        step = RunDir.open(run).load_checkpoint()["step"]
        assert 0 < step < 10**6 and (run / "model.pt").is_file()
        assert "stopped after" in (tmp_path / "sw" / "logs" / f"{run.name}.log").read_text()


def test_a_grid_sweep_in_one_process_groups_its_curves_by_value(tmp_path, capsys):
    config = tmp_path / "grid.yaml"
    config.write_text(yaml.safe_dump({**SPHERE, "agent": {"kind": "objective", "hidden_sizes": [16], "batch_size": 32},
                                      "train": {"total_steps": 60, "checkpoint_every": 30, "eval_every": 30,
                                                "log_every": 30}}))
    args = ["sweep", str(config), "--seeds", "0,1", "agent.learning_rate=1e-3,3e-3", "--serial", "--root", str(tmp_path)]
    assert main(args) == 0
    folder = tmp_path / "sweep-grid"
    curves = json.loads((folder / "curves-eval_objective_gap.json").read_text())
    assert sorted(curves["groups"]) == ["agent.learning_rate=1e-3", "agent.learning_rate=3e-3"]
    for group in curves["groups"].values():
        assert len(group["runs"]) == 2 and group["steps"] == [30, 60]
    assert RunDir.open(folder / "learning_rate-3e-3_seed-1").load_config(SCHEMA).agent.learning_rate == 3e-3
    assert main(["sweep", str(config), "--seeds", "0,1", "agent.learning_rate=1e-3,3e-3", "--plan",
                 "--root", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "sweep sweep-grid: 4 runs" in out and "agent.learning_rate=3e-3 seed=1" in out and "exists" in out
    assert main(["sweep", "--resume", str(folder), "--serial"]) == 0  # nothing left to do
    status = json.loads((folder / "sweep-status.json").read_text())
    assert [r["status"] for r in status["runs"]] == ["finished earlier (step 60)"] * 4
    assert capsys.readouterr().out.count("finished earlier (step 60)") >= 4
