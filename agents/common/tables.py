"""Tables as the CLI prints them: aligned text, Markdown or CSV. Imports nothing heavy, so the CLI can set
the format before any domain is loaded."""

from __future__ import annotations

import csv
import io
from typing import Any, Sequence


#: how ``format_table`` writes: aligned text, a Markdown table, or CSV (``--format``)
TABLE_FORMATS = ("text", "md", "csv")
_table_format = ["text"]


def set_table_format(fmt: str) -> None:
    """How every table of this process is written from now on (the CLI's ``--format``)."""
    if fmt not in TABLE_FORMATS:
        raise ValueError(f"--format {fmt!r}: allowed: {', '.join(TABLE_FORMATS)}")
    _table_format[0] = fmt


def format_table(headers: Sequence[str], rows: Sequence[Sequence[Any]], fmt: str | None = None) -> str:
    """A table as aligned text (default), Markdown or CSV (floats to 4 significant digits, None as '-')."""
    fmt = fmt or _table_format[0]

    def cell(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.4g}"
        return "-" if v is None else str(v)

    body = [[cell(v) for v in row] for row in rows]
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(headers)
        writer.writerows(body)
        return out.getvalue().rstrip("\n")
    if fmt == "md":
        return "\n".join(["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers),
                          *("| " + " | ".join(r) + " |" for r in body)])
    widths = [max(len(h), *(len(r[i]) for r in body)) for i, h in enumerate(headers)]
    line = "  ".join(h.ljust(w) for h, w in zip(headers, widths))
    sep = "  ".join("-" * w for w in widths)
    return "\n".join([line, sep, *("  ".join(c.rjust(w) for c, w in zip(r, widths)) for r in body)])


def fraction(count: int, total: int) -> str:
    """'12/15 (80%)': a share with its denominator, so it never reads as a count."""
    return f"{count}/{total} ({100.0 * count / total:.0f}%)" if total else "0/0"


def share_of(share: float, total: int) -> str:
    """A measured share (0..1) of ``total`` items as 'count/total (pct%)'; '-' where it is undefined."""
    if share != share:
        return "-"
    return fraction(round(share * total), total)


def fewer_or_more(ratio: float, unit: str = "iterations") -> str:
    """A ratio baseline/ours as words: '1.65x fewer iterations', or '1.19x more iterations' below 1."""
    if not ratio or ratio != ratio:
        return "-"
    words = f"{ratio:.2f}x fewer" if ratio >= 1.0 else f"{1.0 / ratio:.2f}x more"
    return f"{words} {unit}".rstrip()
