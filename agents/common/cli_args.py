"""Parsing helpers shared by the CLI and the domains' bench subcommands."""

from __future__ import annotations

from typing import Any, Callable


def csv_list(text: str | None, cast: Callable[[str], Any] = str) -> list | None:
    """``"a,b"`` -> ``["a", "b"]`` (each through ``cast``); None or empty -> None."""
    if not text:
        return None
    try:
        return [cast(v.strip()) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ValueError(f"expected a comma-separated list, got {text!r}") from None
