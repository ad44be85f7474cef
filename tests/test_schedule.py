"""The one cadence object every training loop asks."""

import pytest

from agents.common.schedule import TrainSchedule


def _events(schedule: TrainSchedule, steps: list[int], **kw) -> dict[str, list[int]]:
    seen: dict[str, list[int]] = {"log": [], "evaluate": [], "checkpoint": []}
    for before, after in zip(steps, steps[1:]):
        due = schedule.due(before, after, **kw)
        for name in seen:
            if getattr(due, name):
                seen[name].append(after)
    return seen


def test_unit_steps_match_modulo_rule_and_end_on_last_step():
    schedule = TrainSchedule(total=23, log_every=5, eval_every=10, checkpoint_every=7)
    for step in range(1, 24):
        due = schedule.at(step)
        assert due.log == (step % 5 == 0 or step == 23)
        assert due.evaluate == (step % 10 == 0 or step == 23)
        assert due.checkpoint == (step % 7 == 0 or step == 23)


def test_strides_fire_once_per_crossed_multiple_and_resume_mid_period():
    schedule = TrainSchedule(total=100, log_every=10, eval_every=25, checkpoint_every=50)
    # eight envs: 0, 8, 16, ... ; a resumed run starting at 44
    seen = _events(schedule, list(range(44, 105, 8)), at_end=False)
    assert seen["log"] == [52, 60, 76, 84, 92, 100]  # 60 -> 68 crosses no multiple of 10
    assert seen["evaluate"] == [52, 76, 100]
    assert seen["checkpoint"] == [52, 100]
    assert _events(schedule, [90, 97, 104])["checkpoint"] == [104]  # 100 is both crossed and the end


def test_rejects_non_positive_period():
    with pytest.raises(ValueError, match="train.eval_every must be >= 1"):
        TrainSchedule(total=10, log_every=1, eval_every=0, checkpoint_every=1)
