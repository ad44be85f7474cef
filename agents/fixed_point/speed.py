"""The fixed-point domain's rows of ``amortize bench speed``: the shipped NeuralFP accelerator (its initializer and
every step's forward pass included) against Anderson acceleration, both batched on the same device, on the same
held-out DEQ contexts, each run until every context of the batch reaches the residual ratio ``SPEED_TOL``."""

from __future__ import annotations

import statistics

import torch

from agents.common.speed import SpeedRow, SpeedSettings, interleaved_medians
from agents.fixed_point.agent import HELDOUT_SEED, anderson_settings, heldout_fixed_point_contexts
from learned_optimizers.fixed_point import core as fp
from learned_optimizers.fixed_point.neural_fp import FixedPointAccelerator

#: residual ratio ||R(y)|| / ||R(y_default)|| every context of a batch is solved to
SPEED_TOL = 1e-4
#: steps allowed to reach it (Anderson needs 14 at the median, 20-odd at most on DEQ)
MAX_STEPS = 100


def fixed_point_speed_rows(settings: SpeedSettings, progress=print) -> list[SpeedRow]:
    device = torch.device(settings.device)
    accelerator = FixedPointAccelerator.shipped("deq", device)
    fp_map = accelerator.map
    aa = anderson_settings(fp_map)
    label = f"DEQ d={fp_map.dim}"
    rows = []
    for batch in settings.batch_sizes:
        progress(f"  {label}, batch {batch} ...")
        x = heldout_fixed_point_contexts(fp_map, HELDOUT_SEED + settings.seed, batch, device)
        results = interleaved_medians({
            "learned": lambda: accelerator.solve(x, MAX_STEPS, stop_at=SPEED_TOL),
            "anderson": lambda: fp.solve(fp_map, x, aa, MAX_STEPS, stop_at=SPEED_TOL),
        }, settings.device, settings.repeats)
        (seconds, learned), (peer_seconds, anderson) = results["learned"], results["anderson"]
        learned_evals, aa_evals = learned.evaluations_to(SPEED_TOL), anderson.evaluations_to(SPEED_TOL)
        rows.append(SpeedRow(
            domain="fixed_point", problems=label, solver=f"NeuralFP {SPEED_TOL:g}", peer=f"Anderson M={aa.memory} {SPEED_TOL:g}",
            device=settings.device, batch=batch, seconds=seconds, peer_seconds=peer_seconds, peer_timed=batch,
            median_iterations=statistics.median(learned_evals.tolist()),
            peer_median_iterations=statistics.median(aa_evals.tolist()),
            solved=int(torch.isfinite(learned_evals).sum()), peer_solved=int(torch.isfinite(aa_evals).sum()),
            extra={"batched_peer": True, "max_evaluations": float(learned_evals.max()),
                   "peer_max_evaluations": float(aa_evals.max())}))
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return rows
