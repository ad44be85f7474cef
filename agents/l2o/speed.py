"""The learning-to-optimize rows of ``amortize bench speed``: the shipped learned update (``CoordinatewiseUpdate``:
its features and forward pass in every step) against tuned Adam, both batched on the same device, on the same
held-out logistic regressions.

A task's target is Adam's own objective after the horizon T (what ``amortize bench l2o`` measures against). Both
run 2T steps, timed; a row's seconds are one step's seconds times the median steps to the target over the batch
(Adam's median is T by construction). The learned update reaches most targets in a third of Adam's steps but
stalls short of some (its corrections do not shrink at the optimum), so "solved" counts the tasks that reach the
target within 2T: every-task time would be the learned update's worst case, not what a user of many tasks sees.
"""

from __future__ import annotations

import torch

from agents.common.speed import SpeedRow, SpeedSettings, interleaved_medians
from agents.l2o.agent import HELDOUT_SEED, heldout_tasks, optimizer_metrics
from learned_optimizers.l2o import core as l2o
from learned_optimizers.l2o.classical import first_order_trace
from learned_optimizers.l2o.coordinatewise import CoordinatewiseUpdate

SECONDS_RULE = "a step's seconds x the median steps to Adam's step-T value"


def l2o_speed_rows(settings: SpeedSettings, progress=print) -> list[SpeedRow]:
    device = torch.device(settings.device)
    update = CoordinatewiseUpdate.shipped("logreg", device)
    tasks = update.tasks
    horizon, rate = tasks.settings.horizon, l2o.tuned_learning_rate(tasks, "adam").best
    steps = 2 * horizon
    rows = []
    for batch in settings.batch_sizes:
        label = f"logreg p={tasks.settings.dim + 1}"
        progress(f"  {label}, batch {batch} ...")
        x, phi0 = heldout_tasks(tasks, HELDOUT_SEED + settings.seed, batch, device)
        results = interleaved_medians({
            "learned": lambda: update.solve(x, phi0, steps),
            "adam": lambda: first_order_trace(tasks.objective, x, phi0, "adam", rate, steps),
        }, settings.device, settings.repeats)
        (seconds, learned), (peer_seconds, adam) = results["learned"], results["adam"]
        target = adam.values[:, horizon]
        ours, peer = optimizer_metrics(learned, target, horizon), optimizer_metrics(adam, target, horizon)
        learned_steps, adam_steps = ours["median_steps_to_target"], peer["median_steps_to_target"]
        rows.append(SpeedRow(
            domain="l2o", problems=label, solver=f"L2O to Adam@{horizon}", peer=f"Adam (lr {rate:.3g})",
            device=settings.device, batch=batch, seconds=seconds / steps * learned_steps,
            peer_seconds=peer_seconds / steps * adam_steps, peer_timed=batch,
            median_iterations=learned_steps, peer_median_iterations=adam_steps,
            solved=round(ours["reached_target"] * batch), peer_solved=round(peer["reached_target"] * batch),
            extra={"batched_peer": True, "seconds_rule": SECONDS_RULE, "ms_per_step": 1e3 * seconds / steps,
                   "peer_ms_per_step": 1e3 * peer_seconds / steps, "steps_run": steps}))
    return rows

