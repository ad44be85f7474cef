"""Sinkhorn from zero and from learned potentials, ours (batched) and POT's (one pair at a time), on the same pairs.

Shared by ``amortize eval`` of an OT run and ``amortize bench ot``. Every solve stops at its tolerance with POT's
test (second-marginal violation, checked after iterations 1, 11, 21, ...); iterations are counted as POT counts
them (its ``log["niter"] + 1``). A learned start's seconds include the model's forward pass on the whole batch.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch

from learned_optimizers.common.timing import synchronize
from learned_optimizers.ot import sinkhorn as sk
from learned_optimizers.ot.problem import OTPotentialProblem

#: the two tolerances every OT report uses (marginal violation)
OT_TOLERANCES = (1e-3, 1e-6)
#: contexts (B, 2N) -> potentials f (B, N)
PotentialPredictor = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class StartRecord:
    """One start (zero or a model's) with one solver, at each tolerance."""

    label: str
    solver: str  # "ours" or "POT"
    iterations: dict[float, np.ndarray] = field(default_factory=dict)  # per pair
    converged: dict[float, int] = field(default_factory=dict)
    seconds: dict[float, float] = field(default_factory=dict)  # the whole batch, forward pass included
    cost_error: dict[float, np.ndarray] = field(default_factory=dict)  # |<C, P> - <C, P*>| / <C, P*> per pair
    forward_seconds: float = 0.0

    def summary(self, pairs: int) -> dict:
        out: dict = {"label": self.label, "solver": self.solver, "forward_ms_per_pair": self.forward_seconds / pairs * 1e3}
        for tol in self.iterations:
            its = self.iterations[tol]
            out[f"median_iterations_{tol:g}"] = float(np.median(its))
            out[f"mean_iterations_{tol:g}"] = float(np.mean(its))
            out[f"converged_{tol:g}"] = self.converged[tol]
            out[f"ms_per_pair_{tol:g}"] = self.seconds[tol] / pairs * 1e3
            out[f"median_cost_error_{tol:g}"] = float(np.median(self.cost_error[tol]))
        return out


def _time(fn: Callable[[], object], device: torch.device) -> tuple[object, float]:
    synchronize(device)
    start = time.perf_counter()
    out = fn()
    synchronize(device)
    return out, time.perf_counter() - start


def reference_costs(problem: OTPotentialProblem, contexts: torch.Tensor) -> torch.Tensor:
    """<C, P*> per pair from the float64 reference solve."""
    return sk.transport_cost(problem.pairs.solve(contexts), problem.pairs.cost_on(contexts.double()))


def ours(problem: OTPotentialProblem, contexts: torch.Tensor, starts: dict[str, PotentialPredictor | None],
         reference: torch.Tensor, repeats: int = 3, max_iterations: int = 10_000) -> list[StartRecord]:
    """Our batched Sinkhorn on all pairs at once from each start; seconds are medians of ``repeats`` (interleaved)."""
    pairs = problem.pairs
    a, b = pairs.split(contexts.double())
    kernel, eps, cost = pairs.kernel_on(a), pairs.epsilon, pairs.cost_on(a)
    records = {label: StartRecord(label, "ours") for label in starts}
    times: dict[tuple[str, float], list[float]] = {}
    forward: dict[str, list[float]] = {label: [] for label in starts}
    for _ in range(repeats):
        for label, predictor in starts.items():
            for tol in OT_TOLERANCES:
                def run() -> sk.SinkhornResult:
                    u0 = None
                    if predictor is not None:
                        with torch.no_grad():
                            u0 = predictor(contexts).double() / eps
                    return sk.sinkhorn(a, b, kernel, eps, tol=tol, max_iterations=max_iterations, u0=u0,
                                       validate=False)

                result, seconds = _time(run, contexts.device)
                times.setdefault((label, tol), []).append(seconds)
                rec = records[label]
                rec.iterations[tol] = result.iterations.cpu().numpy()
                rec.converged[tol] = int(result.converged.sum())
                rec.cost_error[tol] = ((sk.transport_cost(result, cost) - reference).abs() / reference).cpu().numpy()
            if predictor is not None:
                with torch.no_grad():
                    forward[label].append(_time(lambda: predictor(contexts), contexts.device)[1])
    for label, rec in records.items():
        rec.seconds = {tol: statistics.median(times[(label, tol)]) for tol in OT_TOLERANCES}
        rec.forward_seconds = statistics.median(forward[label]) if forward[label] else 0.0
    return list(records.values())


def pot(problem: OTPotentialProblem, contexts: torch.Tensor, starts: dict[str, PotentialPredictor | None],
        reference: torch.Tensor, max_iterations: int = 10_000) -> list[StartRecord]:
    """POT's ``ot.sinkhorn(method="sinkhorn_log")`` looped over the pairs, from zero or ``warmstart=(f / eps, 0)``;
    a learned start's seconds add the model's forward pass on the whole batch."""
    import ot  # the reference package, imported only where it is the peer

    pairs = problem.pairs
    a, b = pairs.split(contexts.double())
    a_np, b_np = a.cpu().numpy(), b.cpu().numpy()
    cost = pairs.cost_on(a).cpu().numpy()
    ref = reference.cpu().numpy()
    eps = pairs.epsilon
    records = []
    for label, predictor in starts.items():
        rec = StartRecord(label, "POT")
        u0 = None
        if predictor is not None:
            with torch.no_grad():
                f, rec.forward_seconds = _time(lambda: predictor(contexts), contexts.device)
            u0 = (f.double() / eps).cpu().numpy()
        for tol in OT_TOLERANCES:
            its, errors, reached, total = [], [], 0, rec.forward_seconds
            for i in range(a_np.shape[0]):
                warm = None if u0 is None else (u0[i], np.zeros(b_np.shape[1]))
                start = time.perf_counter()
                plan, log = ot.sinkhorn(a_np[i], b_np[i], cost, eps, method="sinkhorn_log", numItermax=max_iterations,
                                        stopThr=tol, log=True, warn=False, warmstart=warm)
                total += time.perf_counter() - start
                its.append(log["niter"] + 1)
                reached += int(log["err"][-1] < tol)
                errors.append(abs(float((plan * cost).sum()) - ref[i]) / ref[i])
            rec.iterations[tol] = np.asarray(its)
            rec.converged[tol] = reached
            rec.seconds[tol] = total
            rec.cost_error[tol] = np.asarray(errors)
        records.append(rec)
    return records
