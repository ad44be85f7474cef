"""``amortize export``: a control run's model as a shipped agent (config, weights, what it reached)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from agents.common.best import BestModel
from agents.common.sb3 import MODEL_FILE
from agents.common.shipped import RECORD, file_digest
from agents.control.agent import ControlAgent, policy_actions
from agents.control.evaluation import run_episodes


def export_control(agent: ControlAgent, directory: Path, episodes: int) -> dict[str, Any]:
    """Write ``directory/{config.yaml, model.zip, shipped.json}``: the chosen model's weights (no buffer, no
    optimizer state), and its deterministic return over ``episodes`` seeded episodes, measured here."""
    if episodes < 1:
        raise ValueError(f"--episodes must be >= 1, got {episodes}")
    config, run = agent.config, agent.run
    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise ValueError(f"--to {str(directory)!r} is a file; give a folder for config.yaml, model.zip, shipped.json")
    directory.mkdir(parents=True, exist_ok=True)
    agent.export_model(directory / MODEL_FILE)
    shutil.copyfile(run.config_path, directory / "config.yaml")
    model = agent.load_model()
    result = run_episodes(config.env, policy_actions(model), None, episodes, config.eval.seed, model.device,
                          desc=f"{run.name} export")
    seconds = agent.train_seconds_of_model()
    record = {
        "name": directory.name,
        "env": config.env,
        "agent": config.agent.kind,
        "model": agent.model_choice,
        "steps": agent.model_step(),
        "train_seconds": None if seconds is None else round(seconds, 1),
        "train_hours": None if seconds is None else round(seconds / 3600.0, 2),
        "evaluation": {"episodes": episodes, "seed": config.eval.seed, "deterministic": True,
                       **{k: result[k] for k in ("return_mean", "return_std", "return_stderr", "length_mean", "returns")}},
        "best_evaluation": BestModel.record(run),
        "sha256": {f: file_digest(directory / f) for f in (MODEL_FILE, "config.yaml")},
        "bytes": (directory / MODEL_FILE).stat().st_size,
    }
    (directory / RECORD).write_text(json.dumps(record, indent=2) + "\n")
    return record
