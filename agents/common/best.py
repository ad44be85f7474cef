"""The best model of a run's periodic evaluations, kept next to the latest checkpoint (as SB3's EvalCallback does).

Training curves are noisy (an RL agent's return can fall late in a run), so the model a user wants is often
not the last one. At every periodic evaluation the training loop offers its metric; a better value replaces
``best/`` as one unit: the model files go to ``best.partial/`` with ``best.json`` (metric, value, step) last,
then the folder is swapped in. A resumed run reads ``best.json`` and keeps competing against it.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path
from typing import Any, Callable

from agents.common.runs import RunDir

BEST_DIR = "best"
RECORD = "best.json"
MODES = ("min", "max")


class BestModel:
    def __init__(self, run: RunDir, metric: str, mode: str) -> None:
        if mode not in MODES:
            raise ValueError(f"best-model mode {mode!r}: allowed: {', '.join(MODES)}")
        self.run, self.metric, self.mode = run, metric, mode
        self.path = run.path / BEST_DIR
        record = self.record(run)
        same = record is not None and record.get("metric") == metric and record.get("mode") == mode
        self.value: float | None = float(record["value"]) if same else None

    @staticmethod
    def record(run: RunDir) -> dict[str, Any] | None:
        """``best.json`` of a run (metric, mode, value, step), or None where no model was kept yet."""
        folder = run.path / BEST_DIR
        old = folder.with_name(BEST_DIR + ".old")
        if not folder.exists() and (old / RECORD).is_file():  # a kill between the two renames of ``offer``
            os.replace(old, folder)
        path = folder / RECORD
        if not path.is_file():
            return None
        try:
            record = json.loads(path.read_text())
            float(record["value"]), int(record["step"])
        except (ValueError, KeyError, TypeError) as err:
            raise ValueError(f"{str(path)!r} is not a best-model record: {err}") from None
        return record

    @classmethod
    def directory(cls, run: RunDir) -> Path:
        """The folder of a run's best model; a named error where it has none."""
        if cls.record(run) is None:
            raise FileNotFoundError(f"{str(run.path)!r} has no best model yet: one is kept at each periodic "
                                    "evaluation (train.eval_every) that improves on the last")
        return run.path / BEST_DIR

    def better(self, value: float) -> bool:
        if not math.isfinite(value):
            return False
        return self.value is None or (value < self.value if self.mode == "min" else value > self.value)

    def offer(self, metrics: dict[str, float], step: int, save: Callable[[Path], None], **extra: Any) -> bool:
        """Keep the model (``save(folder)`` writes its files) if ``metrics[self.metric]`` beats the best so far;
        ``extra`` (plain values, e.g. the seconds trained) goes into ``best.json``."""
        if self.metric not in metrics:
            raise KeyError(f"the periodic evaluation gave {sorted(metrics)}, not {self.metric!r}")
        value = float(metrics[self.metric])
        if not self.better(value):
            return False
        partial, old = self.path.with_name(BEST_DIR + ".partial"), self.path.with_name(BEST_DIR + ".old")
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir()
        save(partial)
        record = {"metric": self.metric, "mode": self.mode, "value": value, "step": int(step), **extra}
        (partial / RECORD).write_text(json.dumps(record, indent=2) + "\n")
        shutil.rmtree(old, ignore_errors=True)
        if self.path.exists():
            os.replace(self.path, old)
        os.replace(partial, self.path)
        shutil.rmtree(old, ignore_errors=True)
        self.value = value
        return True
