"""Safe model and checkpoint files.

A file is a dict of plain values and tensors written by ``torch.save`` into a
temporary file renamed into place (a crash never leaves half a file), and read
back with torch's weights-only loader (a crafted file cannot run code). Every
error names the file.
"""

from __future__ import annotations

import os
import pickle
import re
from pathlib import Path
from typing import Any, BinaryIO, Callable, TypeVar

import torch
from torch import nn


def read_model_file(path: str | Path, device: torch.device | str, what: str, keys: tuple[str, ...]) -> dict[str, Any]:
    """The dict ``save_model_file`` wrote (a model or a checkpoint), read weights-only (a file cannot run code).

    Errors name the file and say what is wrong: missing, unreadable, not a dict, or lacking one of ``keys``.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{str(path)!r}: no such file (expected {what} file)")
    if path.stat().st_size == 0:
        raise ValueError(f"{str(path)!r} is not {what} file: it is empty")
    try:
        blob = torch.load(path, map_location=device, weights_only=True)
    except pickle.UnpicklingError as err:
        found = re.search(r"Unsupported global: GLOBAL (\S+)", str(err))
        if found:
            raise ValueError(f"{str(path)!r} is refused as {what} file: it holds a Python object ({found.group(1)}) "
                             "beyond tensors and plain values, which could run code when loaded") from None
        raise ValueError(f"{str(path)!r} is not {what} file: torch cannot read it (truncated or corrupt)") from None
    except Exception as err:  # not a torch file at all, or a truncated one
        raise ValueError(f"{str(path)!r} is not {what} file: torch cannot read it "
                         f"({err.__class__.__name__}: {str(err)[:200]})") from None
    if not isinstance(blob, dict):
        raise ValueError(f"{str(path)!r} is not {what} file: it holds a {type(blob).__name__}, not a dict")
    for key in keys:
        if key not in blob:
            raise ValueError(f"{str(path)!r} is not {what} file: it has no {key!r}")
    return blob


Module = TypeVar("Module", bound=nn.Module)


def rebuild_model(path: str | Path, what: str, build: Callable[[], Module], state_dict: Any) -> Module:
    """``build()`` the model a file's settings describe and load its weights; a file whose settings or weights do
    not fit (wrong types, wrong shapes, missing or extra keys) is a ``ValueError`` naming it."""
    try:
        model = build()
    except (TypeError, ValueError, KeyError) as err:
        raise ValueError(f"{str(path)!r} is not {what} file: its settings are invalid ({err})") from None
    if not isinstance(state_dict, dict):
        raise ValueError(f"{str(path)!r} is not {what} file: its state_dict is a {type(state_dict).__name__}")
    try:
        model.load_state_dict(state_dict)
    except (RuntimeError, TypeError, KeyError) as err:
        raise ValueError(f"{str(path)!r} is not {what} file: its weights do not fit its settings ({err})") from None
    return model


def atomic_write(path: str | Path, write: Callable[[BinaryIO], Any]) -> None:
    """``write(file)`` into ``<path>.tmp``, then rename it over ``path``: a crash never leaves half a file, and
    a failed write leaves the previous file and no temporary one. The project's one way to write a file."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as f:
            write(f)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def save_model_file(blob: dict[str, Any], path: str | Path) -> None:
    """``torch.save`` of tensors and plain values, written atomically."""
    atomic_write(path, lambda f: torch.save(blob, f))


def shipped_model_path(folder: Path, prefix: str, name: str, what: str,
                       error: type[Exception] = ValueError) -> Path:
    """``folder/<prefix><name>.pt``, a model shipped with the package; an unknown ``name`` raises ``error``
    naming the shipped ones (``what``: e.g. "Meta OT model")."""
    path = folder / f"{prefix}{name}.pt"
    if not path.is_file():
        names = sorted(p.stem.removeprefix(prefix) for p in folder.glob(f"{prefix}*.pt"))
        raise error(f"no shipped {what} {name!r}; shipped: {', '.join(names) or 'none'}")
    return path
