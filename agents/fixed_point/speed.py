"""The fixed-point domain's rows of ``amortize bench speed``.

* The shipped NeuralFP accelerator (its initializer and every step's forward pass included) against Anderson
  acceleration, both batched on the same device, on the same held-out DEQ contexts, each run until every context
  of the batch reaches the residual ratio ``SPEED_TOL``.
* Our batched SCS core (the operator splitting whose fixed-point map the scs families accelerate) against the real
  ``scs`` looped over the same cone programs, with the settings the core implements (acceleration off, the scalar
  adaptive scale) and SCS's default eps: statuses and iterations as in the reproduction tests.
"""

from __future__ import annotations

import statistics

import scs
import torch

from agents.common.speed import SpeedRow, SpeedSettings, interleaved_medians
from agents.fixed_point.agent import HELDOUT_SEED, anderson_settings, heldout_fixed_point_contexts
from learned_optimizers.conic.programs import make_cone_family
from learned_optimizers.conic.scs import SCS_PACKAGE_AS_THIS_CORE, SCSSettings, solve_cone_programs
from learned_optimizers.fixed_point import core as fp
from learned_optimizers.fixed_point.neural_fp import FixedPointAccelerator

#: residual ratio ||R(y)|| / ||R(y_default)|| every context of a batch is solved to
SPEED_TOL = 1e-4
#: steps allowed to reach it (Anderson needs 14 at the median, 20-odd at most on DEQ)
MAX_STEPS = 100


#: the cone programs of the SCS rows: Lasso in SCS's form at the scs-lasso fixed-point family's size
SCS_FAMILY = ("lasso", {"features": 50, "samples": 100})


def fixed_point_speed_rows(settings: SpeedSettings, progress=print) -> list[SpeedRow]:
    return neural_fp_speed_rows(settings, progress) + scs_core_speed_rows(settings, progress)


def neural_fp_speed_rows(settings: SpeedSettings, progress=print) -> list[SpeedRow]:
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


def scs_core_speed_rows(settings: SpeedSettings, progress=print) -> list[SpeedRow]:
    name, sizes = SCS_FAMILY
    family = make_cone_family(name, **sizes)
    core_settings = SCSSettings()
    rows = []
    for batch in settings.batch_sizes:
        contexts = family.sample_contexts(batch, torch.Generator().manual_seed(HELDOUT_SEED + settings.seed))
        programs = family.programs(contexts.double().to(settings.device))
        peer_data = [programs.program(i).to_scs() for i in range(min(batch, settings.peer_max_problems))]
        label = f"cone {name} n={programs.program(0).n}"
        progress(f"  {label}, batch {batch} ...")
        timed = interleaved_medians({
            "core": lambda: solve_cone_programs(programs, core_settings),
            "scs": lambda: [scs.SCS(data, cone, verbose=False, eps_abs=core_settings.eps_abs, eps_rel=core_settings.eps_rel,
                                    **SCS_PACKAGE_AS_THIS_CORE).solve()["info"] for data, cone in peer_data],
        }, settings.device, settings.repeats, cold=("scs",))
        (seconds, ours), (peer_seconds, peer) = timed["core"], timed["scs"]
        n_timed, labels = len(peer), ours.labels()
        rows.append(SpeedRow(
            domain="conic", problems=label, solver=f"SCS core, eps {core_settings.eps_abs:g}",
            peer=f"scs eps {core_settings.eps_abs:g} (AA off)", device=settings.device, batch=batch, seconds=seconds,
            peer_seconds=peer_seconds * batch / n_timed, peer_timed=n_timed,
            median_iterations=float(statistics.median(ours.iterations[:n_timed].tolist())),
            peer_median_iterations=float(statistics.median(info["iter"] for info in peer)),
            solved=sum(label == "solved" for label in labels), peer_solved=sum(info["status"] == "solved" for info in peer),
            extra={"same_status": sum(label == info["status"] for label, info in zip(labels, peer))}))
    return rows
