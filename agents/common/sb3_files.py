"""Stable-Baselines3 models and checkpoints on disk, read back without running code.

SB3's own ``load`` unpickles the ``data`` entry of a model zip (cloudpickle
``:serialized:`` values) and its replay buffers are pickles: a crafted file
runs code. Here a model is rebuilt from the run's validated config and only
its weights are read (the ``.pth`` entries of the zip, weights-only); the
replay buffer is stored as plain arrays (``.npz``, no pickle allowed).

A checkpoint is one directory ``checkpoints/sb3-<step>/`` holding the model,
the buffer and the counters, with ``manifest.json`` written last: a directory
without its manifest is a checkpoint that a kill interrupted and is never
read. Older complete checkpoints are removed once a newer one is complete.
"""

from __future__ import annotations

import json
import operator
import os
import shutil
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.buffers import ReplayBuffer
from stable_baselines3.common.off_policy_algorithm import OffPolicyAlgorithm
from stable_baselines3.common.save_util import load_from_zip_file

PREFIX = "sb3-"
MANIFEST = "manifest.json"
MODEL = "model.zip"
BUFFER = "replay_buffer.npz"
#: the counters SB3's own ``load`` would restore from the pickled data, kept as JSON
COUNTERS = ("num_timesteps", "_n_updates", "_episode_num")
#: a replay buffer's arrays (``next_observations`` is absent with optimize_memory_usage)
BUFFER_ARRAYS = ("observations", "next_observations", "actions", "rewards", "dones", "timeouts")


def load_weights(model: BaseAlgorithm, path: Path) -> None:
    """Read the weights (policy, optimizers, e.g. SAC's entropy coefficient) of an SB3 zip into ``model``,
    weights-only; the zip's pickled ``data`` entry is never read."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{str(path)!r} is missing: the run has not finished training")
    if not zipfile.is_zipfile(path):
        raise ValueError(f"{str(path)!r} is not a stable-baselines3 model: not a zip archive")
    try:
        _, params, variables = load_from_zip_file(path, load_data=False, device=model.device)
    except Exception as err:  # a .pth entry holding objects, a truncated entry, ...
        raise ValueError(f"{str(path)!r} is refused as a stable-baselines3 model: its weights cannot be read "
                         f"weights-only ({err.__class__.__name__}: {str(err)[:200]})") from None
    if "policy" not in params:
        raise ValueError(f"{str(path)!r} is not a stable-baselines3 model: it has no policy.pth")
    try:
        model.set_parameters(params, exact_match=True, device=model.device)
        for name, value in (variables or {}).items():
            if not isinstance(value, torch.Tensor):
                raise TypeError(f"{name} is a {type(value).__name__}, not a tensor")
            target = operator.attrgetter(name)(model)
            if target.shape != value.shape:
                raise ValueError(f"{name} has shape {tuple(value.shape)}, the model {tuple(target.shape)}")
            target.data = value.data.to(target.device)
    except (RuntimeError, ValueError, TypeError, KeyError, AttributeError) as err:
        raise ValueError(f"{str(path)!r} does not fit this run's {type(model).__name__} "
                         f"(config and weights differ): {str(err)[:300]}") from None


def save_replay_buffer(buffer: ReplayBuffer, path: Path) -> None:
    """The filled part of the buffer's arrays, ``pos`` and ``full`` as an ``.npz``."""
    filled = buffer.buffer_size if buffer.full else buffer.pos
    arrays = {name: getattr(buffer, name)[:filled] for name in BUFFER_ARRAYS
              if isinstance(getattr(buffer, name, None), np.ndarray)}
    with open(path, "wb") as f:
        np.savez(f, pos=np.int64(buffer.pos), full=np.bool_(buffer.full), **arrays)


def load_replay_buffer(buffer: ReplayBuffer, path: Path) -> None:
    """Fill ``buffer`` from ``save_replay_buffer``'s file; arrays that do not fit it are a ValueError naming it."""
    try:
        with np.load(path, allow_pickle=False) as f:
            stored = {k: f[k] for k in f.files}
    except Exception as err:
        raise ValueError(f"{str(path)!r} is not a replay buffer file: {err.__class__.__name__}: {str(err)[:200]}") from None
    expected = [n for n in BUFFER_ARRAYS if isinstance(getattr(buffer, n, None), np.ndarray)]
    missing = [k for k in ("pos", "full", *expected) if k not in stored]
    if missing:
        raise ValueError(f"{str(path)!r} is not a replay buffer file of this run: it lacks {missing}")
    pos, full = int(stored["pos"]), bool(stored["full"])
    filled = buffer.buffer_size if full else pos
    if not 0 <= pos <= buffer.buffer_size:
        raise ValueError(f"{str(path)!r}: pos={pos} is outside the buffer's size {buffer.buffer_size}")
    for name in expected:
        target, value = getattr(buffer, name), stored[name]
        if value.shape != (filled, *target.shape[1:]):
            raise ValueError(f"{str(path)!r}: {name} has shape {value.shape}, this run's buffer needs "
                             f"{(filled, *target.shape[1:])} (buffer_size, n_envs or spaces changed?)")
        target[:filled] = value
    buffer.pos, buffer.full = pos % buffer.buffer_size, full or pos == buffer.buffer_size


def save_checkpoint(model: BaseAlgorithm, checkpoints: Path, with_buffer: bool = True, train_seconds: float = 0.0) -> Path:
    """Write ``checkpoints/sb3-<step>/`` as one unit (manifest last), then drop the older ones; returns it.
    ``train_seconds``: the wall-clock of training so far, over all resumes (recorded with a shipped agent)."""
    step = int(model.num_timesteps)
    final = checkpoints / f"{PREFIX}{step:012d}"
    partial = checkpoints / f"{PREFIX}{step:012d}.partial"
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    model.save(partial / MODEL)
    files = [MODEL]
    if with_buffer and isinstance(model, OffPolicyAlgorithm) and model.replay_buffer is not None:
        save_replay_buffer(model.replay_buffer, partial / BUFFER)
        files.append(BUFFER)
    counters = {name: int(getattr(model, name)) for name in COUNTERS}
    manifest = {"step": step, "files": files, "counters": counters, "train_seconds": float(train_seconds),
                "bytes": sum((partial / f).stat().st_size for f in files)}
    _write_synced(partial / MANIFEST, json.dumps(manifest, indent=2).encode())
    shutil.rmtree(final, ignore_errors=True)  # a complete checkpoint of this very step (e.g. the final save)
    os.replace(partial, final)
    for old in complete_checkpoints(checkpoints)[:-1]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def complete_checkpoints(checkpoints: Path) -> list[Path]:
    """The checkpoint directories whose manifest was written, oldest first."""
    found = [p for p in checkpoints.glob(f"{PREFIX}*") if p.is_dir() and not p.name.endswith(".partial")
             and (p / MANIFEST).is_file()]
    return sorted(found, key=lambda p: p.name)


def remove_partial_checkpoints(checkpoints: Path) -> list[Path]:
    """Delete the directories of checkpoints that a kill interrupted."""
    complete = set(complete_checkpoints(checkpoints))
    partial = [p for p in checkpoints.glob(f"{PREFIX}*") if p.is_dir() and p not in complete]
    for p in partial:
        shutil.rmtree(p, ignore_errors=True)
    return partial


def read_manifest(directory: Path) -> dict[str, Any]:
    path = directory / MANIFEST
    try:
        manifest = json.loads(path.read_text())
        step, files = int(manifest["step"]), [str(f) for f in manifest["files"]]
        counters = {str(k): int(v) for k, v in dict(manifest["counters"]).items()}
        if step < 0 or any(f not in (MODEL, BUFFER) for f in files):
            raise ValueError(f"step {step} or files {files} out of place (files: {MODEL}, {BUFFER})")
        seconds = float(manifest.get("train_seconds", 0.0))  # absent in checkpoints written before it was kept
        if not seconds >= 0.0:
            raise ValueError(f"train_seconds {seconds} must be >= 0")
    except (ValueError, KeyError, TypeError) as err:
        raise ValueError(f"{str(path)!r} is not a checkpoint manifest: {err}") from None
    missing = [f for f in files if not (directory / f).is_file()]
    if missing:
        raise ValueError(f"{str(path)!r} names files that are missing: {missing}")
    return {"step": step, "files": files, "counters": counters, "train_seconds": seconds}


def restore_checkpoint(model: BaseAlgorithm, directory: Path) -> int:
    """Weights, counters and (where saved) the replay buffer of one complete checkpoint; returns its step."""
    manifest = read_manifest(directory)
    load_weights(model, directory / MODEL)
    for name, value in manifest["counters"].items():
        if name in COUNTERS:
            setattr(model, name, int(value))
    if BUFFER in manifest["files"] and isinstance(model, OffPolicyAlgorithm) and model.replay_buffer is not None:
        load_replay_buffer(model.replay_buffer, directory / BUFFER)
    return manifest["step"]


def _write_synced(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
