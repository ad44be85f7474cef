"""The ot domain's rows of ``amortize bench speed``: our batched Sinkhorn from zero and from the shipped Meta OT
model (its forward pass included) against POT's log-domain ``ot.sinkhorn`` looped over the same held-out digit
pairs from zero, all to marginal violation 1e-3."""

from __future__ import annotations

import numpy as np
import torch

from agents.common.seeding import generator
from agents.common.speed import SpeedRow, SpeedSettings, interleaved_medians
from learned_optimizers.ot import sinkhorn as sk
from learned_optimizers.ot.meta_ot import MetaOT

#: the tolerance of every OT speed row (Meta OT's headline figure; the labels say 1e-3)
SPEED_TOL = 1e-3


def _pot_loop(a: np.ndarray, b: np.ndarray, cost: np.ndarray, eps: float) -> list[tuple[bool, int]]:
    import ot  # the peer, imported where it is used

    out = []
    for i in range(a.shape[0]):
        _, log = ot.sinkhorn(a[i], b[i], cost, eps, method="sinkhorn_log", stopThr=SPEED_TOL, numItermax=10_000,
                             log=True, warn=False)
        out.append((bool(log["err"][-1] < SPEED_TOL), log["niter"] + 1))
    return out


def ot_speed_rows(settings: SpeedSettings, progress=print) -> list[SpeedRow]:
    device = settings.device
    meta = MetaOT.shipped("digits", device)
    problem, eps = meta.problem, meta.epsilon
    label = f"digits {problem.settings.grid}x{problem.settings.grid}"
    rows = []
    for batch in settings.batch_sizes:
        progress(f"  {label}, batch {batch} ...")
        x = problem.sample_heldout_contexts(batch, generator(settings.seed + 1_000_003, device), device)
        a, b = problem.pairs.split(x.double())
        kernel = problem.pairs.kernel_on(a)
        timed = min(batch, settings.peer_max_problems)
        a_np, b_np, cost = a[:timed].cpu().numpy(), b[:timed].cpu().numpy(), meta.cost.numpy()
        solvers = {
            "zero": lambda: sk.sinkhorn(a, b, kernel, eps, tol=SPEED_TOL, max_iterations=10_000, validate=False),
            "meta": lambda: meta.solve(a, b, tol=SPEED_TOL),
            "pot": lambda: _pot_loop(a_np, b_np, cost, eps),
        }
        results = interleaved_medians(solvers, device, settings.repeats, cold=("pot",))
        peer_seconds, peer_runs = results["pot"]
        for name, solver in (("zero", "Sinkhorn"), ("meta", "Meta OT+Sinkhorn")):
            seconds, result = results[name]
            rows.append(SpeedRow(
                domain="ot", problems=label, solver=f"{solver} 1e-3", peer="POT 1e-3",
                device=device, batch=batch, seconds=seconds, peer_seconds=peer_seconds * batch / timed,
                peer_timed=timed, median_iterations=float(np.median(result.iterations[:timed].cpu().numpy())),
                peer_median_iterations=float(np.median([it for _, it in peer_runs])),
                solved=int(result.converged.sum()), peer_solved=sum(ok for ok, _ in peer_runs)))
        if torch.device(device).type == "cuda":
            torch.cuda.empty_cache()
    return rows
