"""The README runs as written: every Python snippet, in order and in one namespace (as a reader would paste
them), against the runs and files its text says to make first."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from agents.cli import main

ROOT = Path(__file__).resolve().parents[1]
SNIPPET = re.compile(r"```python\n(.*?)```", re.S)


def snippets() -> list[str]:
    return SNIPPET.findall((ROOT / "README.md").read_text())


def test_the_readme_has_its_python_snippets():
    assert len(snippets()) >= 5


def test_every_python_snippet_of_the_readme_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    # what the text around the snippets says to run first, at a tiny size
    assert main(["train", str(ROOT / "configs" / "sphere_objective.yaml"), "device=cpu", "train.total_steps=20",
                 "train.eval_every=20", "train.checkpoint_every=20", "eval.contexts=16", "solver.restarts=2",
                 "solver.steps=10", "--name", "sphere-objective"]) == 0
    assert main(["train", str(ROOT / "configs" / "l2o_logreg_objective.yaml"), "device=cpu", "train.total_steps=4",
                 "problem.horizon=20", "agent.hidden_sizes=[8]", "agent.batch_size=8", "eval.contexts=16",
                 "train.eval_every=4", "train.checkpoint_every=4", "--name", "l2o-logreg-objective"]) == 0
    shutil.copytree(Path(__file__).parent / "data" / "maros_meszaros", tmp_path / "maros_meszaros")
    namespace: dict = {}
    for i, code in enumerate(snippets()):
        try:
            exec(compile(code, f"README.md python snippet {i}", "exec"), namespace)
        except Exception as err:  # noqa: BLE001 - the snippet's own error, named
            pytest.fail(f"README python snippet {i} fails: {err.__class__.__name__}: {err}\n{code}")
    assert namespace["y"].shape == (8, 3) and namespace["trace"].values.shape == (16, 101)
