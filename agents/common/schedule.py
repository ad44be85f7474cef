"""When a training loop logs, evaluates and checkpoints.

Every training loop (gradient amortizers, RLQP's TD3, the fixed-point and L2O
meta-trainers, SB3's callback) asks one ``TrainSchedule`` instead of writing
``step % every == 0 or step == total`` three times over. Steps may advance by
more than one between two calls (SB3 counts env steps over ``n_envs``), so an
event is due when the step crosses a multiple of its period, and every event is
due once more at the last step so a finished run always ends on a checkpoint.
A stop request (Ctrl-C, SIGTERM: ``agents.common.interrupt``) makes the next
step a last one: a checkpoint is due and ``stop`` tells the loop to return.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

from agents.common.interrupt import stop_requested


class Due(NamedTuple):
    """Which events fall between two step counts."""

    log: bool
    evaluate: bool
    checkpoint: bool
    stop: bool = False


@dataclass(frozen=True)
class TrainSchedule:
    total: int
    log_every: int
    eval_every: int
    checkpoint_every: int

    def __post_init__(self) -> None:
        for name in ("log_every", "eval_every", "checkpoint_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"train.{name} must be >= 1, got {getattr(self, name)}")

    @classmethod
    def from_settings(cls, train) -> TrainSchedule:
        """From a config's ``train`` section (``TrainSettings``)."""
        return cls(train.total_steps, train.log_every, train.eval_every, train.checkpoint_every)

    def due(self, before: int, after: int, *, at_end: bool = True) -> Due:
        """The events due when the step count moves from ``before`` to ``after``.

        ``at_end=False`` leaves out the extra events of the last step, for a loop
        (SB3's ``learn``) whose caller checkpoints once it returns. After a stop
        request the checkpoint is due (with ``at_end``) but no evaluation, so the
        run stops promptly."""
        stop = stop_requested()
        last = at_end and before < self.total <= after
        return Due(log=last or _crossed(self.log_every, before, after),
                   evaluate=(last or _crossed(self.eval_every, before, after)) and not stop,
                   checkpoint=last or (stop and at_end) or _crossed(self.checkpoint_every, before, after),
                   stop=stop)

    def at(self, step: int) -> Due:
        """The events due at ``step`` of a loop that advances one step at a time."""
        return self.due(step - 1, step)


def _crossed(every: int, before: int, after: int) -> bool:
    return after // every > before // every
