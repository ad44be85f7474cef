"""Declarative bounds for settings dataclasses.

A field declared with :func:`setting` carries its allowed range or choices in
its metadata. The same metadata drives two checks: ``validate`` (called from
``__post_init__`` by library users who build settings in Python) and the YAML
config loader in ``agents.config``, so a bound is written exactly once.
"""

from __future__ import annotations

import dataclasses
import math
import re
from typing import Any, Iterable


#: the largest integer any setting takes unless its field says otherwise: a 32-bit index. A larger size
#: would overflow deep inside torch or numpy instead of failing here with the setting's name.
INT_LIMIT = 2**31 - 1


class SettingsError(ValueError):
    """A setting has a value outside what is allowed; the message names it."""


def setting(
    default: Any,
    *,
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    lt: float | None = None,
    choices: Iterable[Any] | None = None,
    pattern: str | None = None,
    allowed: str = "",
    doc: str = "",
) -> Any:
    """A dataclass field with bounds. Mutable defaults (tuples are fine) are not allowed. ``pattern``: a regular
    expression a string value must match in full, with ``allowed`` saying it in words."""
    meta = {"ge": ge, "gt": gt, "le": le, "lt": lt, "doc": doc, "pattern": pattern, "allowed": allowed}
    if choices is not None:
        meta["choices"] = tuple(choices)
    return dataclasses.field(default=default, metadata=meta)


def describe_bounds(field: dataclasses.Field) -> str:
    """Human text for what a field allows, e.g. 'a number > 0 and <= 1'."""
    meta = field.metadata
    if meta.get("choices") is not None:
        return "one of " + ", ".join(repr(c) for c in meta["choices"])
    if meta.get("pattern") is not None:
        return meta.get("allowed") or f"a string matching {meta['pattern']!r}"
    parts = []
    for key, op in (("gt", ">"), ("ge", ">="), ("lt", "<"), ("le", "<=")):
        if meta.get(key) is not None:
            bound = meta[key]
            parts.append(f"{op} {bound}" if isinstance(bound, int) else f"{op} {bound:g}")
    if _is_integer_field(field) and meta.get("le") is None and meta.get("lt") is None:
        parts.append(f"<= {INT_LIMIT}")
    return "a value " + " and ".join(parts) if parts else "any value"


def check_value(name: str, value: Any, field: dataclasses.Field) -> None:
    """Raise SettingsError when ``value`` violates the bounds declared on ``field``."""
    meta = field.metadata
    choices = meta.get("choices")
    if choices is not None and value not in choices:
        raise SettingsError(f"{name}={value!r} is not allowed; allowed: {describe_bounds(field)}")
    pattern = meta.get("pattern")
    if pattern is not None and not (isinstance(value, str) and re.fullmatch(pattern, value)):
        raise SettingsError(f"{name}={value!r} is not allowed; allowed: {describe_bounds(field)}")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        values: tuple = value if isinstance(value, tuple) else ()
    else:
        values = (value,)
    for v in values:
        if not isinstance(v, (int, float)) or isinstance(v, bool):
            continue
        if isinstance(v, float) and not math.isfinite(v):
            raise SettingsError(f"{name}={value!r} is not a finite number; allowed: {describe_bounds(field)}")
        implicit_cap = isinstance(v, int) and meta.get("le") is None and meta.get("lt") is None and v > INT_LIMIT
        bad = implicit_cap or (
            (meta.get("gt") is not None and not v > meta["gt"])
            or (meta.get("ge") is not None and not v >= meta["ge"])
            or (meta.get("lt") is not None and not v < meta["lt"])
            or (meta.get("le") is not None and not v <= meta["le"])
        )
        if bad:
            raise SettingsError(f"{name}={value!r} is out of range; allowed: {describe_bounds(field)}")


def _is_integer_field(field: dataclasses.Field) -> bool:
    """An ``int`` or ``tuple[int, ...]`` field (annotations may be strings under ``from __future__``)."""
    text = field.type if isinstance(field.type, str) else getattr(field.type, "__name__", str(field.type))
    return text in ("int", "tuple[int, ...]") or text.startswith(("int |", "tuple[int"))


def validate(obj: Any, prefix: str = "") -> None:
    """Check every declared bound of a settings dataclass instance."""
    for field in dataclasses.fields(obj):
        check_value(prefix + field.name, getattr(obj, field.name), field)
