"""``amortize bench speed``: rows measured against the real osqp on the same problems, table, JSON and plot."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from agents.cli import main
from agents.common.speed import SpeedSettings, interleaved_medians


def test_the_speed_bench_times_our_core_and_rlqp_against_osqp_on_the_same_problems(tmp_path, capsys):
    assert main(["bench", "speed", "--batch-sizes", "1,3", "--repeats", "1", "--peer-max-problems", "2",
                 "--device", "cpu", "--float32", "--root", str(tmp_path), "--name", "speed"]) == 0
    out = capsys.readouterr().out
    assert "speed-up" in out and "torch threads" in out
    table = out[out.index("problems "):out.index("device cpu, torch threads", out.index("problems "))]
    assert max(len(line) for line in table.splitlines()) <= 120, table
    record = json.loads((tmp_path / "speed" / "speed.json").read_text())
    ot_rows = [r for r in record["rows"] if r["domain"] == "ot"]
    rows = [r for r in record["rows"] if r["domain"] == "qp"]
    # ot: two batch sizes x (Sinkhorn from zero, from the shipped Meta OT model) against POT on the same pairs
    assert len(ot_rows) == 4 and all(r["peer"].startswith("POT") and r["solved"] == r["batch"] for r in ot_rows)
    for r in ot_rows:
        if r["solver"].startswith("Sinkhorn"):  # POT's iteration: the same counts on the same pairs
            assert r["median_iterations"] == r["peer_median_iterations"] and r["peer_solved"] == r["peer_timed"]
        else:
            assert r["median_iterations"] < r["peer_median_iterations"]
    # fixed point: the shipped NeuralFP against Anderson, both batched, every context solved to 1e-4
    fp_rows = [r for r in record["rows"] if r["domain"] == "fixed_point"]
    assert [r["batch"] for r in fp_rows] == [1, 3] and all(r["extra"]["batched_peer"] for r in fp_rows)
    for r in fp_rows:
        assert r["solved"] == r["peer_solved"] == r["peer_timed"] == r["batch"]
        assert r["median_iterations"] < r["peer_median_iterations"]  # the learned steps it buys seconds with
    assert "peers batched like ours, on the same device: Anderson M=5 0.0001" in out
    # our SCS core against the real scs with the settings it implements, looped over the same cone programs
    scs_rows = [r for r in record["rows"] if r["domain"] == "conic"]
    assert [r["batch"] for r in scs_rows] == [1, 3] and all(r["peer"] == "scs eps 0.0001 (AA off)" for r in scs_rows)
    for r in scs_rows:
        assert r["peer_timed"] == min(r["batch"], 2) and r["extra"]["same_status"] == r["peer_timed"] == r["peer_solved"]
        assert r["solved"] == r["batch"] and abs(r["median_iterations"] - r["peer_median_iterations"]) <= 25
    # learning to optimize: the shipped update against tuned Adam, batched alike, to Adam's own step-100 value
    l2o_rows = [r for r in record["rows"] if r["domain"] == "l2o"]
    assert [r["batch"] for r in l2o_rows] == [1, 3] and all(r["extra"]["batched_peer"] for r in l2o_rows)
    for r in l2o_rows:
        assert r["peer"].startswith("Adam") and r["peer_median_iterations"] <= 100 and r["peer_solved"] == r["batch"]
        assert r["median_iterations"] < r["peer_median_iterations"]  # the learned steps it buys seconds with
        # seconds: one step's (timed over 2T steps) x the median steps to the target
        assert r["seconds"] == pytest.approx(r["extra"]["ms_per_step"] / 1e3 * r["median_iterations"])
    assert "L2O to Adam@100, and its peer: a step's seconds x the median steps to Adam's step-T value" in out
    # two problem sets x two batch sizes x (core, core in float32, RLQP)
    assert len(rows) == 12 and {r["batch"] for r in rows} == {1, 3}
    assert sum(r["solver"].startswith("core f32") for r in rows) == 4
    for r in rows:
        assert r["device"] == "cpu" and r["seconds"] > 0 and r["peer_seconds"] > 0
        assert r["peer_timed"] == min(r["batch"], 2)  # batch 3: the peer timed on 2 problems, scaled to 3
        assert r["solved"] == r["batch"] and r["peer_solved"] == r["peer_timed"]
        assert r["speedup"] == pytest.approx(r["peer_seconds"] / r["seconds"])
    core = [r for r in rows if r["solver"].startswith("core")]
    assert "* the peer timed on the first 2 problems" in out
    assert all(r["extra"]["same_status"] == r["peer_timed"] for r in core)
    assert all(r["median_iterations"] == r["peer_median_iterations"] for r in core if r["batch"] == 1)
    assert (tmp_path / "speed" / "plots" / "speed.png").stat().st_size > 10_000


def test_interleaved_medians_warm_up_all_but_the_cold_and_alternate():
    calls = []
    timed = interleaved_medians({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, "cpu", 2, cold=("b",))
    assert calls == ["a", "a", "b", "a", "b"]
    assert set(timed) == {"a", "b"} and all(seconds >= 0 for seconds, _ in timed.values())


@pytest.mark.parametrize("kwargs, message", [({"batch_sizes": ()}, "--batch-sizes"), ({"batch_sizes": (0,)}, "--batch-sizes"),
                                             ({"repeats": 0}, "--repeats"), ({"peer_max_problems": 0}, "--peer-max")])
def test_bad_speed_settings_name_the_flag(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SpeedSettings(**kwargs)


def test_an_unknown_domain_is_named_and_nothing_is_written(tmp_path, capsys):
    assert main(["bench", "speed", "--domains", "control", "--root", str(tmp_path), "--batch-sizes", "1"]) != 0
    assert "--domains control: no speed rows there; allowed: qp, fixed-point, learning-to-optimize, ot" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


def test_both_median_columns_of_a_qp_row_use_one_rule():
    """An even count: the mean of the middle two for ours and for osqp alike (torch's median takes the lower)."""
    from types import SimpleNamespace

    import torch

    from agents.qp.speed import _row

    solution = SimpleNamespace(iterations=torch.tensor([25, 50, 75, 100]), status=torch.ones(4, dtype=torch.int64))
    row = _row("core", "random n=50", "osqp", "cpu", [None] * 4, (1.0, solution),
               (1.0, [("solved", 25), ("solved", 50), ("solved", 75), ("solved", 100)]))
    assert row.median_iterations == row.peer_median_iterations == 62.5


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc settings; elsewhere it is a no-op")
def test_kept_freed_memory_spares_the_page_faults_of_temporaries():
    """After keep_freed_memory(), an elementwise op on 8 MB arrays reuses freed memory instead of faulting in
    2048 fresh pages per array (what made a learned fixed-point step 2x slower), and the CLI applies it."""
    script = textwrap.dedent("""
        import resource, torch
        from learned_optimizers.common.allocator import keep_freed_memory
        assert keep_freed_memory() and keep_freed_memory()  # idempotent
        x = torch.randn(2 * 1024 * 1024)
        def faults():
            before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            for _ in range(10):
                (x * 2).abs().log1p()
            return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
        faults()
        print(faults())
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert out.returncode == 0, out.stderr
    pages_allocated = 10 * 3 * 2048  # 10 rounds of three 8 MB outputs
    assert int(out.stdout.split()[-1]) < 0.05 * pages_allocated
    cli = (Path(__file__).resolve().parents[1] / "agents" / "cli.py").read_text()
    assert "keep_freed_memory()" in cli
