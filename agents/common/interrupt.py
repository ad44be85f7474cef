"""Ctrl-C and SIGTERM during training: finish the step, checkpoint, save the model, exit non-zero.

A first signal only sets a flag. Every training loop asks its ``TrainSchedule``
after each step, and the schedule answers ``stop`` once the flag is set: the
loop writes a complete checkpoint and its current model, then returns, so the
run can be evaluated and resumed. A second signal interrupts at once (the last
complete checkpoint stays; every write renames into place).
"""

from __future__ import annotations

import signal
import threading
from contextlib import contextmanager
from typing import Iterator

#: the signals that ask a training run to stop
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
_received: list[int] = []


class TrainingInterrupted(Exception):
    """Training stopped on a signal after saving its checkpoint and model."""

    def __init__(self, signum: int, step: int | None, run_path: str) -> None:
        self.signum, self.step, self.run_path = signum, step, run_path
        at = f"at step {step}" if step is not None else "before its first checkpoint"
        super().__init__(f"interrupted by {signal.Signals(signum).name} {at}; checkpoint and model saved; "
                         f"resume with: amortize train --resume {run_path}")

    @property
    def exit_code(self) -> int:
        """The shell's convention for a process ended by a signal: 128 + its number."""
        return 128 + self.signum


def stop_requested() -> bool:
    """True once a stop signal arrived inside ``graceful_stop``."""
    return bool(_received)


def received_signal() -> int | None:
    return _received[0] if _received else None


def request_stop(signum: int = signal.SIGINT) -> None:
    """What the first signal does: ask the running loop to stop at its next step."""
    _received.append(signum)


def _handle(signum: int, frame) -> None:
    if _received:  # the second signal: stop now
        raise KeyboardInterrupt
    request_stop(signum)


@contextmanager
def graceful_stop() -> Iterator[None]:
    """Within this block the first SIGINT or SIGTERM asks for a stop instead of killing the process.

    Off the main thread (where Python cannot install handlers) the signals keep their default action."""
    _received.clear()
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.signal(s, _handle) for s in STOP_SIGNALS}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def clear() -> None:
    """Forget a stop request (after it was acted on)."""
    _received.clear()
