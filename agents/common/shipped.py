"""Trained runs shipped inside the package, used by name: ``amortize eval shipped:humanoid-sac``.

A shipped run is what evaluating a run needs and nothing more: ``config.yaml``, the model file, and
``shipped.json`` (what it is: steps, hours of training, its evaluation). ``amortize export RUN --to DIR``
writes one. Using it copies it into ``runs/shipped-<name>/`` (again only when the shipped files changed),
so eval and gap write their results there and never into the installed package.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any, Iterable

from agents.common.runs import DEFAULT_ROOT

PREFIX = "shipped:"
RECORD = "shipped.json"


def is_shipped(spec: str | Path) -> bool:
    return str(spec).startswith(PREFIX)


def shipped_runs(folders: Iterable[Path]) -> dict[str, Path]:
    """Name -> folder of every shipped run under ``folders`` (each domain's ``shipped/``)."""
    found: dict[str, Path] = {}
    for folder in folders:
        for record in sorted(Path(folder).glob(f"*/{RECORD}")):
            found.setdefault(record.parent.name, record.parent)
    return found


def resolve_run(spec: str | Path, folders: Iterable[Path], root: str | Path = DEFAULT_ROOT) -> Path:
    """The run directory ``spec`` names: a path as given, or ``shipped:<name>`` copied into ``root``."""
    if not is_shipped(spec):
        return Path(spec)
    name = str(spec)[len(PREFIX):]
    runs = shipped_runs(folders)
    if name not in runs:
        raise FileNotFoundError(f"{str(spec)!r}: no shipped run of that name; shipped: "
                                f"{', '.join(PREFIX + n for n in runs) or 'none'}")
    source, target = runs[name], Path(root) / f"shipped-{name}"
    files = sorted(p.name for p in source.iterdir() if p.is_file())
    if not target.is_dir() or any(file_digest(source / f) != file_digest(target / f) for f in files):
        target.mkdir(parents=True, exist_ok=True)
        for f in files:
            shutil.copyfile(source / f, target / f)
        for sub in ("checkpoints", "plots"):
            (target / sub).mkdir(exist_ok=True)
    return target


def read_record(run_path: Path) -> dict[str, Any] | None:
    path = Path(run_path) / RECORD
    return json.loads(path.read_text()) if path.is_file() else None


def file_digest(path: Path) -> str | None:
    """The file's sha256 (recorded in shipped.json, compared before a shipped run is copied again); None if absent."""
    if not path.is_file():
        return None
    return hashlib.sha256(path.read_bytes()).hexdigest()
