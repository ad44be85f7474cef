"""Run directories: ``runs/<name>/`` holds everything one training run produces.

Layout::

    config.yaml          the resolved config (every default written out, the run's actual name)
    history.json         each start and resume: when, from which step, with which budget
    tb/                  TensorBoard event files (one file per process, steps continue on resume)
    checkpoints/         the latest checkpoint, written atomically, one rolling copy
    model.*              the final trained agent
    eval.json, gap.json  evaluation results
    plots/               PNG figures
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

import torch
from torch.utils.tensorboard import SummaryWriter
from torch.utils.tensorboard.summary import hparams

from agents.common.config import ConfigSchema, RunConfig, dump_config, load_config
from learned_optimizers.common.files import atomic_write, read_model_file, save_model_file

DEFAULT_ROOT = Path("runs")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
#: what a run directory holds before it has produced anything a user could open or resume: its config and
#: lock, and the datasets it labels for itself (held-out contexts, regression targets: computed again on demand)
_BOOKKEEPING = re.compile(r"^(config\.yaml|history\.json|\.lock|heldout-\d+\.pt|[a-z_]+_dataset\.pt)$")
#: each start and resume of a run: when, from which step, to which budget
HISTORY = "history.json"
#: the run directories this process created, for ``discard_unfinished`` when a command fails
_created: list[Path] = []


class RunInUseError(RuntimeError):
    """Another process is training into this run directory."""


@dataclass(frozen=True)
class RunDir:
    path: Path
    #: evaluating a model other than the final one (``--checkpoint latest|best``) writes eval-<tag>.json etc.
    results_tag: str | None = None

    # ------------------------------------------------------------ creation
    @classmethod
    def create(cls, name: str, root: str | Path = DEFAULT_ROOT) -> "RunDir":
        """A new run directory; a taken name gets a numeric suffix (name-2, name-3, ...)."""
        if not _NAME.match(name):
            raise ValueError(f"run name {name!r}: use letters, digits, '.', '_' and '-' (no spaces or slashes)")
        root = Path(root)
        root.mkdir(parents=True, exist_ok=True)
        candidate, k = root / name, 1
        while True:  # mkdir is the claim: two processes never get the same directory
            try:
                candidate.mkdir()
                break
            except FileExistsError:
                k += 1
                candidate = root / f"{name}-{k}"
        run = cls(candidate)
        run.checkpoints.mkdir()
        run.plots.mkdir()
        _created.append(candidate)
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

    def tensorboard_writer(self, resumed_from: int = 0) -> SummaryWriter:
        """A TensorBoard writer for a run that (re)starts at step ``resumed_from``.

        A resumed process continues after its checkpoint's step, but the interrupted one may have logged
        past it: TensorBoard is told to drop those points (from ``resumed_from + 1`` on), while the
        checkpoint step's own points stay. A resumed curve has neither a gap nor a duplicate."""
        writer = SummaryWriter(str(self.tensorboard), purge_step=resumed_from + 1 if resumed_from > 0 else None)
        if self.config_path.is_file():  # the resolved config, readable in TensorBoard's Text tab
            text = self.config_path.read_text()
            writer.add_text("config", "\n".join("    " + line for line in text.splitlines()), resumed_from)
        return writer

    def write_hparams(self, config: dict[str, Any], metrics: dict[str, float], step: int) -> None:
        """The run's settings and headline figures in TensorBoard's HParams tab, written into the run's own
        event folder (``add_hparams`` would make a TensorBoard run of its own)."""
        flat = {k: (v if isinstance(v, (int, float, str, bool)) else str(v)) for k, v in _flatten(config).items()}
        experiment, start, end = hparams(flat, metrics)
        with SummaryWriter(str(self.tensorboard)) as writer:
            for summary in (experiment, start, end):
                writer.file_writer.add_summary(summary)
            for tag, value in metrics.items():
                writer.add_scalar(tag, value, step)

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

    def tagged(self, tag: str | None) -> "RunDir":
        """The same run, its results named for the model they measure (None: the final model)."""
        return RunDir(self.path, tag)

    def result_path(self, filename: str, folder: Path | None = None) -> Path:
        """Where a result file goes (the run's folder, or ``folder``): ``eval.json``, or ``eval-best.json``
        for a tagged run."""
        name = Path(filename)
        return (folder or self.path) / (f"{name.stem}-{self.results_tag}{name.suffix}" if self.results_tag else filename)

    def plot_path(self, filename: str) -> Path:
        """Where a figure goes: ``plots/gap.png``, or ``plots/gap-best.png`` for a tagged run."""
        return self.result_path(filename, self.plots)

    def record_start(self, step: int, total_steps: int, overrides: list[str],
                     init_from: dict[str, Any] | None = None) -> None:
        """Append to ``history.json`` when and from which step the run (re)started, with which budget and
        overrides: config.yaml holds the latest budget, the history every one it had."""
        path = self.path / HISTORY
        try:
            history = json.loads(path.read_text()) if path.is_file() else []
        except ValueError:
            history = []  # a damaged history is started again rather than blocking the run
        history.append({"started": datetime.now(timezone.utc).isoformat(timespec="seconds"), "from_step": int(step),
                        "total_steps": int(total_steps), "overrides": overrides,
                        **({"init_from": init_from} if init_from else {})})
        text = json.dumps(history, indent=2) + "\n"
        atomic_write(path, lambda f: f.write(text.encode()))

    def write_json(self, filename: str, data: dict[str, Any]) -> Path:
        path = self.result_path(filename)
        if self.results_tag:
            data = {"model": self.results_tag, **data}
        text = json.dumps(data, indent=2, default=_json_default) + "\n"
        atomic_write(path, lambda f: f.write(text.encode()))
        return path

    def read_json(self, filename: str) -> dict[str, Any]:
        return json.loads((self.path / filename).read_text())

    def save_checkpoint(self, state: dict[str, Any], filename: str = "latest.pt") -> Path:
        """Tensors and plain values only (what a weights-only load accepts), written then renamed into place."""
        path = self.checkpoints / filename
        save_model_file(state, path)
        return path

    def load_checkpoint(self, filename: str = "latest.pt", device: torch.device | str = "cpu") -> dict[str, Any] | None:
        """The checkpoint, read weights-only; None where there is none. A corrupt one is a ValueError naming it."""
        path = self.checkpoints / filename
        if not path.is_file():
            return None
        return read_model_file(path, device, "a checkpoint", ("step",))

    @contextmanager
    def exclusive(self) -> Iterator["RunDir"]:
        """Hold the run's lock while writing to it: a second train or --resume of the same run is refused
        (an OS lock, released when the process ends however it ends)."""
        with open(self.path / ".lock", "a+") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.seek(0)
                holder = handle.read().strip() or "another process"
                raise RunInUseError(f"{str(self.path)!r} is in use by {holder}: wait for it to finish, "
                                    "or stop it first") from None
            handle.seek(0)
            handle.truncate()
            handle.write(f"process {os.getpid()}")
            handle.flush()
            try:
                yield self
            finally:
                handle.seek(0)
                handle.truncate()
                fcntl.flock(handle, fcntl.LOCK_UN)

    def remove_partial_writes(self) -> list[Path]:
        """Delete the ``*.tmp`` files a killed process left behind (never read: every write renames into place)."""
        leftovers = [p for p in (*self.path.glob("*.tmp"), *self.checkpoints.glob("*.tmp")) if p.is_file()]
        for p in leftovers:
            p.unlink(missing_ok=True)
        return leftovers


def produced_nothing(path: Path) -> bool:
    """True where a run directory holds only bookkeeping (its config, lock, TensorBoard events, cached
    datasets, partial writes): nothing to evaluate or resume."""
    for f in path.rglob("*"):
        if f.is_file() and not (_BOOKKEEPING.match(f.name) or f.name.startswith("events.out.tfevents")
                                or f.name.endswith((".tmp", ".partial")) or ".partial" in f.parent.name):
            return False
    return True


def forget_created() -> None:
    """Start a new command: the run directories created so far are not its own."""
    _created.clear()


def discard_unfinished() -> list[Path]:
    """Remove the run directories this process created that hold nothing yet (a command failed before
    producing anything): a failed command leaves no empty run behind. Returns the removed ones."""
    removed = []
    for path in reversed(_created):
        if path.is_dir() and produced_nothing(path):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    _created.clear()
    return removed


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _json_default(obj: Any) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.tolist()
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"cannot write {type(obj).__name__} to JSON")
