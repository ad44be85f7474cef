"""`amortize bench qp` end to end on a tiny workload, and its aggregate."""

import json
import math

import pytest

from agents.cli import main
from agents.common.statistics import shifted_geometric_mean


def test_shifted_geometric_mean_closed_form():
    assert shifted_geometric_mean([1.0, 100.0]) == pytest.approx(math.sqrt(11 * 110) - 10)
    assert shifted_geometric_mean([5.0, 5.0, 5.0]) == pytest.approx(5.0)
    assert shifted_geometric_mean([0.0, 0.0], shift=1.0) == pytest.approx(0.0)


def test_bench_qp_cli_writes_json_and_agrees_with_osqp(tmp_path, capsys):
    code = main(["bench", "qp", "--classes", "random,portfolio,control", "--sizes", "5", "--instances", "3",
                 "--no-throughput", "--root", str(tmp_path), "--name", "b"])
    assert code == 0
    out = capsys.readouterr().out
    assert "shifted geometric mean (shift 10)" in out and "portfolio" in out
    result = json.loads((tmp_path / "b" / "bench.json").read_text())
    assert max(len(line) for line in result["table"].splitlines()) <= 120
    assert "  3/3  " in result["table"]  # agreement as a count of the class's problems, not a share
    assert set(result["groups"]) == {"random", "portfolio", "control"}
    assert result["overall"]["status_agreement"] == 1.0
    assert len(result["records"]) == 9
    for group in result["groups"].values():
        assert group["iter_within_interval"] >= 2 / 3
        assert group["max_obj_rel_diff"] < 1e-3


def test_bench_qp_rejects_bad_flags(tmp_path, capsys):
    assert main(["bench", "qp", "--classes", "random,cubic", "--root", str(tmp_path)]) == 2
    assert "unknown cubic; allowed: random, eq" in capsys.readouterr().err
    assert main(["bench", "qp", "--sizes", "5,x", "--root", str(tmp_path)]) == 2
    assert "comma-separated list" in capsys.readouterr().err
    assert main(["bench", "qp", "--problems", str(tmp_path), "--root", str(tmp_path / "out")]) == 2
    assert "no .mat or .npz files" in capsys.readouterr().err
