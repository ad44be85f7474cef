"""Progress for long jobs: a bar on a terminal, periodic lines in logs and CI."""

from __future__ import annotations

import sys
import time
from typing import IO, Any

from tqdm import tqdm

from agents.common.interrupt import stop_requested


class Progress:
    """``update(n, key=value)`` after each chunk of work; ``close()`` at the end.

    On a TTY this is a tqdm bar. Elsewhere (CI, ``nohup``, pipes) it prints one
    line every ``interval_s`` seconds and at the end, so logs show progress
    without a wall of carriage returns.
    """

    def __init__(
        self,
        total: int,
        initial: int = 0,
        desc: str = "",
        unit: str = "step",
        stream: IO[str] | None = None,
        interval_s: float = 10.0,
        force_lines: bool = False,
    ) -> None:
        self.total, self.count, self.desc, self.unit = total, initial, desc, unit
        self.stream = stream or sys.stderr
        self.interval_s = interval_s
        self.start = self.last_print = time.monotonic()
        self.start_count = initial
        self.postfix: dict[str, Any] = {}
        use_bar = not force_lines and hasattr(self.stream, "isatty") and self.stream.isatty()
        self.bar = tqdm(total=total, initial=initial, desc=desc, unit=unit, file=self.stream, dynamic_ncols=True) if use_bar else None

    def update(self, n: int = 1, **postfix: Any) -> None:
        self.count += n
        if postfix:
            self.postfix.update(postfix)
        if self.bar is not None:
            self.bar.update(n)
            if postfix:
                self.bar.set_postfix({k: _fmt(v) for k, v in self.postfix.items()}, refresh=False)
            return
        now = time.monotonic()
        if now - self.last_print >= self.interval_s:
            self.last_print = now
            self._line()

    def write(self, text: str) -> None:
        """A line of its own (e.g. a checkpoint written) that does not break the bar."""
        if self.bar is not None:
            self.bar.write(text, file=self.stream)
        else:
            print(text, file=self.stream, flush=True)

    def _line(self, final: bool = False) -> None:
        elapsed = max(time.monotonic() - self.start, 1e-9)
        rate = (self.count - self.start_count) / elapsed
        pct = 100.0 * self.count / max(self.total, 1)
        eta = (self.total - self.count) / rate if rate > 0 else float("inf")
        extra = " ".join(f"{k}={_fmt(v)}" for k, v in self.postfix.items())
        tail = f"eta {eta:.0f}s"
        if final:
            stopped = stop_requested() or sys.exc_info()[0] is not None
            tail = f"stopped after {elapsed:.1f}s" if stopped else f"done in {elapsed:.1f}s"
        print(f"[{self.desc}] {self.count}/{self.total} {self.unit}s ({pct:.0f}%) {rate:.1f} {self.unit}s/s {tail} {extra}".rstrip(),
              file=self.stream, flush=True)

    def close(self) -> None:
        """The final line: 'done', or 'stopped' when a stop signal or an exception ends the job early."""
        if self.bar is not None:
            self.bar.close()
        else:
            self._line(final=True)


def _fmt(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)
