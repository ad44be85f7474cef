"""Bad input is a named error, never a traceback or a silent wrong result: QP files, sizes, diverging training,
and problems the real osqp refuses (recorded as their status)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import scipy.io
import scipy.sparse as sp
import yaml

from agents.cli import main
from learned_optimizers.qp.problems import QP, QPValidationError, load_qp, save_npz


def good_qp(name: str = "good") -> QP:
    return QP(sp.diags([2.0, 1.0], format="csc"), np.ones(2), sp.eye(2, format="csc"), -np.ones(2), np.ones(2), name=name)


# ---------------------------------------------------------------- QP files
def _npz_without(tmp_path, *drop: str):
    path = tmp_path / "p.npz"
    save_npz(good_qp(), path)
    with np.load(path) as f:
        arrays = {k: f[k] for k in f.files if k not in drop}
    np.savez(path, **arrays)
    return path


def _write(path, data: bytes):
    path.write_bytes(data)
    return path


def _truncated(tmp_path, suffix: str):
    path = tmp_path / f"p{suffix}"
    if suffix == ".npz":
        save_npz(good_qp(), path)
    else:
        scipy.io.savemat(path, {"P": good_qp().P, "q": np.ones(2), "A": good_qp().A, "l": -np.ones(2), "u": np.ones(2)})
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return path


@pytest.mark.parametrize("make, match", [
    (lambda t: _write(t / "e.npz", b""), r"e\.npz' is empty \(0 bytes\)"),
    (lambda t: _write(t / "e.mat", b""), r"e\.mat' is empty"),
    (lambda t: _truncated(t, ".npz"), r"p\.npz' is not a readable \.npz file"),
    (lambda t: _truncated(t, ".mat"), r"p\.mat' is not a readable \.mat file"),
    (lambda t: _write(t / "garbage.mat", b"\x00garbage" * 50), r"garbage\.mat' is not a readable"),
    (lambda t: _npz_without(t, "A_indptr"), r"p\.npz': sparse A is incomplete: .*lacks A_indptr"),
    (lambda t: (t / "x.npz").mkdir() or t / "x.npz", r"x\.npz' is a directory, not a \.npz QP file"),
    (lambda t: t / "missing.npz", r"missing\.npz' is missing"),
], ids=["empty-npz", "empty-mat", "truncated-npz", "truncated-mat", "garbage-mat", "incomplete-sparse", "directory", "missing"])
def test_unreadable_qp_files_are_named(tmp_path, make, match):
    with pytest.raises(QPValidationError, match=match):
        load_qp(make(tmp_path))


def test_an_empty_r_and_a_complex_p_are_refused(tmp_path):
    path = _npz_without(tmp_path, "r")
    with np.load(path) as f:
        arrays = {k: f[k] for k in f.files}
    np.savez(path, r=np.array([]), **arrays)
    with pytest.raises(QPValidationError, match=r"r \(the objective's constant\) must be one real number, got 0 values"):
        load_qp(path)
    mat = tmp_path / "complex.mat"
    scipy.io.savemat(mat, {"P": np.array([[2.0 + 1j, 0], [0, 1]]), "q": np.ones(2), "A": np.eye(2), "l": -np.ones(2), "u": np.ones(2)})
    with pytest.raises(QPValidationError, match=r"complex\.mat'.*P is complex"):
        load_qp(mat)  # before: the imaginary part was dropped and the problem solved as if real
    qp = load_qp(_npz_without(tmp_path))  # the intact file still loads, with its values
    assert qp.P.toarray().tolist() == [[2.0, 0.0], [0.0, 1.0]]


def test_bench_qp_records_what_the_real_osqp_refuses_and_goes_on(tmp_path):
    problems = tmp_path / "problems"
    problems.mkdir()
    save_npz(QP(sp.csc_matrix((0, 0)), np.zeros(0), sp.csc_matrix((0, 0)), np.zeros(0), np.zeros(0), name="empty"),
             problems / "empty.npz")
    save_npz(QP(sp.eye(2, format="csc"), np.ones(2), sp.eye(2, format="csc"), np.array([np.inf, -1]), np.array([np.inf, 1])),
             problems / "infinite.npz")
    save_npz(QP(sp.diags([1.0, -1.0], format="csc"), np.ones(2), sp.eye(2, format="csc"), -np.ones(2), np.ones(2)),
             problems / "indefinite.npz")
    save_npz(good_qp(), problems / "good.npz")
    assert main(["bench", "qp", "--problems", str(problems), "--no-throughput", "--name", "b", "--root", str(tmp_path)]) == 0
    records = {r["name"]: r for r in json.loads((tmp_path / "b" / "bench.json").read_text())["records"]}
    assert records["empty"]["osqp_status"] == records["infinite"]["osqp_status"] == "osqp refused the data"
    assert records["indefinite"]["osqp_status"] == records["indefinite"]["ours_status"] == "problem non convex"
    assert records["good"]["osqp_status"] == records["good"]["ours_status"] == "solved"


# ---------------------------------------------------------------- sizes and divergence
def _config(tmp_path, **agent) -> str:
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"device": "cpu", "eval": {"contexts": 16}, "solver": {"restarts": 2, "steps": 10},
                                    "agent": {"kind": "objective", "hidden_sizes": [8], "batch_size": 16, **agent},
                                    "train": {"total_steps": 200, "log_every": 10, "checkpoint_every": 100}}))
    return str(path)


@pytest.mark.parametrize("override, match", [
    ("agent.batch_size=100000000000000000000", r"agent\.batch_size=100000000000000000000 is out of range; allowed: a value >= 1 and <= 1048576"),
    ("train.total_steps=100000000000000000000", r"train\.total_steps=.* is out of range; allowed: a value >= 1 and <= 2147483647"),
    ("agent.hidden_sizes=[8,10000000]", r"agent\.hidden_sizes=\(8, 10000000\) is out of range; allowed: a value >= 1 and <= 65536"),
])
def test_every_size_has_an_upper_bound(tmp_path, capsys, override, match):
    assert main(["train", _config(tmp_path), override, "--root", str(tmp_path / "runs")]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert __import__("re").search(match, err), err


def test_a_diverging_training_stops_with_a_named_error_and_leaves_no_run(tmp_path, capsys):
    assert main(["train", _config(tmp_path, learning_rate=1e30), "--name", "nan", "--root", str(tmp_path / "runs")]) == 2
    err = capsys.readouterr().err
    assert "the objective loss is nan: training diverged; lower agent.learning_rate" in err
    assert not (tmp_path / "runs" / "nan").exists()  # before: a NaN model.pt and exit 0


def test_running_out_of_memory_is_a_named_error(tmp_path, capsys, monkeypatch):
    from agents.common.amortizers import GradientAmortizer

    def allocate(self, resume=False):
        raise MemoryError("Unable to allocate 5.82 TiB")

    monkeypatch.setattr(GradientAmortizer, "train", allocate)
    assert main(["train", _config(tmp_path), "--root", str(tmp_path / "runs")]) == 2
    assert "error: out of memory (Unable to allocate 5.82 TiB); lower the sizes" in capsys.readouterr().err
