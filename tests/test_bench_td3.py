"""`amortize bench td3`: both learners run real updates on the same settings and the JSON says so."""

import json
import tempfile
from pathlib import Path

import pytest

from agents.qp.bench_td3 import bench_td3


def test_td3_learner_speed_comparison(tmp_path):
    litter = set(Path(tempfile.gettempdir()).glob("SB3-*"))
    result = bench_td3(name="t", updates=5, buffer_rows=4096, repeats=1, device="cpu", root=tmp_path)
    assert set(Path(tempfile.gettempdir()).glob("SB3-*")) == litter  # SB3's silent logger leaves no folder behind
    saved = json.loads((tmp_path / "t" / "bench.json").read_text())
    assert saved["ours_updates_per_s"] > 0 and saved["sb3_updates_per_s"] > 0
    assert saved["ratio_ours_over_sb3"] == pytest.approx(saved["ours_updates_per_s"] / saved["sb3_updates_per_s"])
    assert saved["batch_size"] == 1024 and saved["hidden_sizes"] == [48, 48, 48]
    assert "stable-baselines3 TD3" in result["table"]


def test_td3_bench_rejects_bad_counts(tmp_path):
    with pytest.raises(ValueError, match="updates=0"):
        bench_td3(updates=0, root=tmp_path)
