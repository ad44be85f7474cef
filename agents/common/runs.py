"""Run directories: ``runs/<name>/`` holds everything one training run produces.

Layout::

    config.yaml          the resolved config (every default written out)
    tb/                  TensorBoard event files (one file per process, steps continue on resume)
    checkpoints/         the latest checkpoint, written atomically, one rolling copy
    model.*              the final trained agent
    eval.json, gap.json  evaluation results
    plots/               PNG figures
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from agents.common.config import ConfigSchema, RunConfig, dump_config, load_config

DEFAULT_ROOT = Path("runs")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


@dataclass(frozen=True)
class RunDir:
    path: Path

    # ------------------------------------------------------------ creation
    @classmethod
    def create(cls, name: str, root: str | Path = DEFAULT_ROOT) -> "RunDir":
        """A new run directory; a taken name gets a numeric suffix (name-2, name-3, ...)."""
        if not _NAME.match(name):
            raise ValueError(f"run name {name!r}: use letters, digits, '.', '_' and '-' (no spaces or slashes)")
        root = Path(root)
        root.mkdir(parents=True, exist_ok=True)
        candidate, k = root / name, 1
        while candidate.exists():
            k += 1
            candidate = root / f"{name}-{k}"
        candidate.mkdir()
        run = cls(candidate)
        run.checkpoints.mkdir()
        run.plots.mkdir()
        return run

    @classmethod
    def open(cls, path: str | Path) -> "RunDir":
        run = cls(Path(path))
        if not run.config_path.is_file():
            raise FileNotFoundError(f"{str(run.path)!r} is not a run directory: it has no config.yaml")
        return run

    # ------------------------------------------------------------ paths
    @property
    def name(self) -> str:
        return self.path.name

    @property
    def config_path(self) -> Path:
        return self.path / "config.yaml"

    @property
    def tensorboard(self) -> Path:
        return self.path / "tb"

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    @property
    def plots(self) -> Path:
        return self.path / "plots"

    # ------------------------------------------------------------ contents
    def save_config(self, config: RunConfig) -> None:
        dump_config(config, self.config_path)

    def load_config(self, schema: ConfigSchema, overrides: list[str] | None = None) -> RunConfig:
        """The run's config, validated against ``schema`` (the registry's, or one domain's)."""
        return load_config(self.config_path, schema, overrides)

    def write_json(self, filename: str, data: dict[str, Any]) -> Path:
        path = self.path / filename
        atomic_write_bytes(path, (json.dumps(data, indent=2, default=_json_default) + "\n").encode())
        return path

    def read_json(self, filename: str) -> dict[str, Any]:
        return json.loads((self.path / filename).read_text())

    def save_checkpoint(self, state: dict[str, Any], filename: str = "latest.pt") -> Path:
        path = self.checkpoints / filename
        tmp = path.with_suffix(path.suffix + ".tmp")
        torch.save(state, tmp)
        os.replace(tmp, path)
        return path

    def load_checkpoint(self, filename: str = "latest.pt", device: torch.device | str = "cpu") -> dict[str, Any] | None:
        path = self.checkpoints / filename
        if not path.is_file():
            return None
        return torch.load(path, map_location=device, weights_only=False)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write then rename, so a crash never leaves half a file behind."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _json_default(obj: Any) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.tolist()
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"cannot write {type(obj).__name__} to JSON")
