"""A sweep's plan: one ordinary run per (grid value, seed), named and written down before anything trains.

``amortize sweep CONFIG --seeds 0,1,2 agent.learning_rate=1e-3,3e-4`` expands to the product of the
grid keys and the seeds. The plan (``sweep.json``) and a copy of the config (``sweep-config.yaml``) live in
the sweep's folder, so a resumed sweep trains exactly what it planned even if the config file changed since.
Each run is an ordinary run directory inside that folder: ``amortize eval``, ``--resume`` and TensorBoard
work on it as on any other.
"""

from __future__ import annotations

import itertools
import json
import re
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from learned_optimizers.common.files import atomic_write

PLAN = "sweep.json"
CONFIG_COPY = "sweep-config.yaml"
#: at most this many runs in one sweep (a typo such as --seeds 0-1000000 should not plan a million runs)
MAX_RUNS = 10_000


@dataclass(frozen=True)
class PlannedRun:
    """One run of a sweep: its directory name, the overrides that make it, the grid values it stands for."""

    name: str
    overrides: list[str]
    seed: int
    values: dict[str, str] = field(default_factory=dict)

    @property
    def group(self) -> str:
        """The grid point it belongs to ('' for a seeds-only sweep): runs of one group differ only by seed."""
        return ", ".join(f"{k}={v}" for k, v in self.values.items())


@dataclass
class SweepPlan:
    name: str
    config_source: str
    seeds: list[int]
    grid: dict[str, list[str]]
    fixed: list[str]
    runs: list[PlannedRun]

    def write(self, folder: Path) -> Path:
        path = folder / PLAN
        text = json.dumps({"name": self.name, "config_source": self.config_source, "seeds": self.seeds,
                           "grid": self.grid, "fixed": self.fixed, "runs": [asdict(r) for r in self.runs]}, indent=2)
        atomic_write(path, lambda f: f.write((text + "\n").encode()))
        return path

    @classmethod
    def read(cls, folder: str | Path) -> "SweepPlan":
        path = Path(folder) / PLAN
        if not path.is_file():
            raise FileNotFoundError(f"{str(folder)!r} is not a sweep: it has no {PLAN} (amortize sweep writes one)")
        try:
            raw = json.loads(path.read_text())
            runs = [PlannedRun(r["name"], list(r["overrides"]), int(r["seed"]), dict(r["values"])) for r in raw["runs"]]
            return cls(raw["name"], raw["config_source"], [int(s) for s in raw["seeds"]],
                       {k: list(v) for k, v in raw["grid"].items()}, list(raw["fixed"]), runs)
        except (ValueError, KeyError, TypeError) as err:
            raise ValueError(f"{str(path)!r} is not a sweep plan: {err}") from None


def split_values(text: str) -> list[str]:
    """'1e-3,3e-4' -> ['1e-3', '3e-4']; commas inside brackets stay: '[64,64],[128,128]' -> two values."""
    values, depth, current = [], 0, ""
    for ch in text:
        if ch in "[{":
            depth += 1
        elif ch in "]}":
            depth -= 1
        if ch == "," and depth == 0:
            values.append(current.strip())
            current = ""
        else:
            current += ch
    values.append(current.strip())
    if any(v == "" for v in values):
        raise ValueError(f"sweep value list {text!r}: an empty value (expected e.g. key=1e-3,3e-4)")
    return values


def parse_seeds(text: str) -> list[int]:
    """'0,1,2,3' or a range '0-3' (both ends included)."""
    seeds: list[int] = []
    for part in (p.strip() for p in text.split(",")):
        match = re.fullmatch(r"(\d+)-(\d+)", part)
        try:
            if match:
                lo, hi = int(match.group(1)), int(match.group(2))
                if hi < lo:
                    raise ValueError
                seeds.extend(range(lo, hi + 1))
            else:
                seeds.append(int(part))
        except ValueError:
            raise ValueError(f"--seeds {text!r}: expected seeds such as 0,1,2,3 or a range 0-3") from None
        if len(seeds) > MAX_RUNS:
            break
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"--seeds {text!r}: a seed is repeated")
    if any(s < 0 or s > 2**31 - 1 for s in seeds):
        raise ValueError(f"--seeds {text!r}: seeds are integers in 0..2147483647")
    return seeds


def slug(text: str) -> str:
    """A value (or a metric) as part of a file or directory name: letters, digits, '.', '_' and '-' only."""
    cleaned = re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_.")
    return cleaned or "v"


def make_plan(name: str, config_source: str, seeds: list[int], items: list[str]) -> SweepPlan:
    """The runs of ``items`` (``key=v`` fixed, ``key=v1,v2`` swept) times ``seeds``."""
    if not seeds:
        raise ValueError("--seeds: give at least one seed, e.g. --seeds 0,1,2,3")
    grid: dict[str, list[str]] = {}
    fixed: list[str] = []
    for item in items:
        if "=" not in item:
            raise ValueError(f"sweep override {item!r}: expected key=value or key=v1,v2,...")
        key, text = (s.strip() for s in item.split("=", 1))
        if key == "seed":
            raise ValueError("seed: give the seeds with --seeds, not as an override")
        if key == "name":
            raise ValueError("name: the sweep names its runs (give the sweep's with --name)")
        values = split_values(text)
        if len(set(values)) != len(values):
            raise ValueError(f"{key}: a value is repeated in {text!r}")
        if key in grid or any(f.split("=", 1)[0] == key for f in fixed):
            raise ValueError(f"{key}: given twice")
        if len(values) == 1:
            fixed.append(f"{key}={values[0]}")
        else:
            grid[key] = values
    count = len(seeds)
    for values in grid.values():
        count *= len(values)
    if count > MAX_RUNS:
        raise ValueError(f"the sweep would make {count} runs; at most {MAX_RUNS}")
    short = _short_names(list(grid))
    runs = []
    for combo in itertools.product(*grid.values()):
        values = dict(zip(grid, combo))
        prefix = "_".join(f"{short[k]}-{slug(v)}" for k, v in values.items())
        for seed in seeds:
            run_name = f"{prefix}_seed-{seed}" if prefix else f"seed-{seed}"
            runs.append(PlannedRun(run_name, [*fixed, *(f"{k}={v}" for k, v in values.items()), f"seed={seed}"],
                                   seed, values))
    names = [r.name for r in runs]
    if len(set(names)) != len(names):  # e.g. values 1e-3 and 1e_3 give the same directory name
        raise ValueError("two runs of the sweep would share a directory name; give values that differ in letters, "
                         "digits, '.', '_' or '-'")
    return SweepPlan(name, config_source, seeds, grid, fixed, runs)


def _short_names(keys: list[str]) -> dict[str, str]:
    """The last part of each dotted key, or more of it where two keys end alike (agent.lr vs solver.lr)."""
    out = {}
    for key in keys:
        parts = key.split(".")
        for k in range(1, len(parts) + 1):
            short = ".".join(parts[-k:])
            if sum(other.split(".")[-k:] == parts[-k:] for other in keys) == 1:
                break
        out[key] = slug(short)
    return out


def create_sweep_folder(plan: SweepPlan, root: str | Path, config_path: Path) -> Path:
    """The sweep's folder (its name must be free), with the plan and a copy of the config."""
    folder = Path(root) / plan.name
    if folder.exists():
        raise ValueError(f"{str(folder)!r} exists: continue that sweep with `amortize sweep --resume {folder}`, "
                         "or give another --name")
    folder.mkdir(parents=True)
    shutil.copyfile(config_path, folder / CONFIG_COPY)
    plan.write(folder)
    return folder
