"""The SCS part of ``amortize bench fixed-point --family scs-*``: the real ``scs`` package as the peer.

On the same held-out cone programs (float64), every method is judged by SCS's
own stopping test (eps_abs = eps_rel = eps on unscaled residuals and gap),
applied at every iteration: for the real package through its per-iteration
CSV log (SCS itself tests only every 25 iterations, so its reported
``info['iter']`` is also given), for the torch methods through
``SCSMap.termination``. Rows:

* real scs, acceleration off and on (its defaults otherwise), iterations
  checked every iteration and SCS's reported count;
* our torch SCS solver (adaptive scale, acceleration off) against real scs
  with the same settings (``adaptive_diag_scale`` off): status and iteration
  agreement, the reproduction check;
* the fixed-scale SCS map with plain iteration, with our Anderson, and each
  trained accelerator.

Solution agreement: the relative error of x (and y) at the first iterate that
meets eps 1e-4, against real scs solved to 1e-9 (median over problems).
Wall-clock is per iteration and problem: real scs one problem at a time
(its solve and setup time over its iterations), the torch methods batched.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import math
import os
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from agents.common.tables import format_table
from agents.common.statistics import reach_statistics, shifted_geometric_mean
from learned_optimizers.conic.maps import SCSMap
from learned_optimizers.conic.programs import ConeProgram
from learned_optimizers.conic.scs import SCS_PACKAGE_AS_THIS_CORE, SCSSettings, SCSStatus, solve_cone_programs, solved_test
from learned_optimizers.fixed_point import core as fp

SCS_EPS = (1e-4, 1e-6)


def _scs_module():
    import scs

    return scs


@contextlib.contextmanager
def _quiet_stdout():
    """Silence the C library's 'Logging run data to ...' line (it writes to file descriptor 1)."""
    sys.stdout.flush()
    saved = os.dup(1)
    with open(os.devnull, "w") as devnull:
        os.dup2(devnull.fileno(), 1)
        try:
            yield
        finally:
            os.dup2(saved, 1)
            os.close(saved)


def _criteria_from_log(path: Path, eps: float) -> int | float:
    """First iteration whose logged residuals pass SCS's test at eps (the same test as ours; inf if none)."""
    with open(path) as fh:
        for row in csv.DictReader(fh):
            f = {k: float(v) for k, v in row.items() if k and v not in ("", None)}
            if solved_test(f["res_pri"], f["res_dual"], f["gap"], f["tau"], f["b_nrm_inf"], f["s_nrm_inf"],
                           f["ax_nrm_inf"], f["c_nrm_inf"], f["px_nrm_inf"], f["aty_nrm_inf"], f["xt_p_x"], f["ctx"],
                           f["bty"], eps, eps):
                return int(f["iter"])
    return math.inf


def real_scs_runs(programs: list[ConeProgram], budget: int, **settings: Any) -> dict[str, Any]:
    """Real scs on every program: per-iteration first hits of each eps, its own count at 1e-4, time."""
    scs = _scs_module()
    hits = {eps: [] for eps in SCS_EPS}
    reported, statuses, seconds, iterations, solutions, accepted = [], [], 0.0, 0, [], 0
    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "log.csv"
        for p in programs:
            data, cone = p.to_scs()
            with _quiet_stdout():
                logged = scs.SCS(data, cone, verbose=False, eps_abs=min(SCS_EPS), eps_rel=min(SCS_EPS),
                                 max_iters=budget, log_csv_filename=str(log), **settings).solve()
            for eps in SCS_EPS:
                hits[eps].append(_criteria_from_log(log, eps))
            sol = scs.SCS(data, cone, verbose=False, eps_abs=1e-4, eps_rel=1e-4, max_iters=budget, **settings).solve()
            info = sol["info"]
            solutions.append(sol)
            iterations += max(info["iter"], 1)
            accepted += logged["info"]["accepted_accel_steps"]  # the logged run gives the per-iteration hits
            reported.append(info["iter"])
            statuses.append(info["status"])
            seconds += (info["solve_time"] + info["setup_time"]) / 1e3
    return {"hits": {eps: np.array(v, dtype=float) for eps, v in hits.items()}, "reported": np.array(reported, float),
            "statuses": statuses, "seconds": seconds, "iterations": iterations, "accepted_aa_steps": accepted,
            "x": np.stack([s["x"] for s in solutions]), "y": np.stack([s["y"] for s in solutions])}


def reference_solutions(programs: list[ConeProgram]) -> list[dict[str, np.ndarray]]:
    scs = _scs_module()
    out = []
    for p in programs:
        data, cone = p.to_scs()
        out.append(scs.SCS(data, cone, verbose=False, eps_abs=1e-9, eps_rel=1e-9, max_iters=200_000).solve())
    return out


@torch.no_grad()
def map_iterations(fp_map: SCSMap, x: torch.Tensor, settings: fp.FixedPointTaskSettings, steps: int,
                   policy: fp.Policy | None = None, y0: torch.Tensor | None = None) -> dict[str, Any]:
    """Iterate the SCS map; first iteration meeting SCS's test per eps, and the unscaled (x, y) there for 1e-4."""
    state = fp.start(fp_map, x, settings, y0)
    work = fp_map.work(x, state.y.dtype)
    B = x.shape[0]
    hits = {eps: torch.full((B,), math.inf, dtype=torch.float64) for eps in SCS_EPS}
    sol_x = torch.full((B, work.n), math.nan, dtype=torch.float64)
    sol_y = torch.full((B, work.m), math.nan, dtype=torch.float64)
    ratios = [state.ratio]
    for k in range(steps + 1):
        out = work.step(state.y)
        res = work.residuals(out.u, out.rsk)
        for eps in SCS_EPS:
            met = (work.check(res, eps_abs=eps, eps_rel=eps) == SCSStatus.SOLVED).cpu() & torch.isinf(hits[eps])
            hits[eps] = torch.where(met, torch.full_like(hits[eps], k), hits[eps])
            if eps == SCS_EPS[0]:
                tau = res.tau.unsqueeze(1).cpu()
                sol_x = torch.where(met.unsqueeze(1), res.x.cpu() / tau, sol_x)
                sol_y = torch.where(met.unsqueeze(1), res.y.cpu() / tau, sol_y)
        if k == steps:
            break
        action = None if policy is None else policy(fp.observe(state, settings))
        state = fp.advance(fp_map, x, state, action, settings)
        ratios.append(state.ratio)
    return {"hits": {eps: v.numpy() for eps, v in hits.items()}, "x": sol_x.numpy(), "y": sol_y.numpy(),
            "ratios": torch.stack(ratios, 1)}


def _agreement(x: np.ndarray, y: np.ndarray, refs: list[dict[str, np.ndarray]]) -> float:
    errs = []
    for i, ref in enumerate(refs):
        if np.isnan(x[i]).any():
            continue
        ex = np.linalg.norm(x[i] - ref["x"]) / max(1.0, np.linalg.norm(ref["x"]))
        ey = np.linalg.norm(y[i] - ref["y"]) / max(1.0, np.linalg.norm(ref["y"]))
        errs.append(max(ex, ey))
    return float(np.median(errs)) if errs else math.nan


def _summary(hits: dict[float, np.ndarray], budget: int) -> dict[str, float]:
    out = {}
    for eps in SCS_EPS:
        stats = reach_statistics(hits[eps], budget)
        out[f"median_iters_to_{eps:g}"], out[f"sgm_iters_to_{eps:g}"], out[f"reached_{eps:g}"] = stats
    return out


def scs_benchmark(family: str, base_map: SCSMap, x: torch.Tensor, learned: list[tuple[str, Any, SCSMap]],
                  steps: int, timed: Callable[[Callable[[], Any]], float]) -> dict[str, Any]:
    """All SCS rows on contexts x; ``learned`` holds (label, LearnedAccelerator, map) triples."""
    programs_batch = base_map.cone_family.programs(x)
    programs = [programs_batch.program(i) for i in range(len(programs_batch))]
    refs = reference_solutions(programs)
    methods: dict[str, dict[str, Any]] = {}

    for label, kwargs in (("scs (real, acceleration off)", {"acceleration_lookback": 0}),
                          ("scs (real, acceleration on: its Anderson)", {})):
        real = real_scs_runs(programs, steps, **kwargs)
        record = _summary(real["hits"], steps)
        record["sgm_reported_iters_1e-4"] = shifted_geometric_mean(real["reported"])
        record["solved"] = float(np.mean([s == "solved" for s in real["statuses"]]))
        record["accepted_aa_steps_per_problem"] = real["accepted_aa_steps"] / len(programs)
        record["ms_per_iteration"] = real["seconds"] / real["iterations"] * 1e3
        record["solution_error"] = _agreement(real["x"], real["y"], refs)
        methods[label] = record

    # the reproduction check: our full solver against scs with the same settings
    scs = _scs_module()
    ours = solve_cone_programs(programs_batch, SCSSettings())
    agree_status, agree_iters, max_dev = 0, 0, 0.0
    for i, p in enumerate(programs):
        data, cone = p.to_scs()
        info = scs.SCS(data, cone, verbose=False, **SCS_PACKAGE_AS_THIS_CORE).solve()["info"]
        agree_status += info["status"] == SCSStatus(int(ours.status[i])).label
        mine = int(ours.iterations[i])
        agree_iters += abs(mine - info["iter"]) <= 0.1 * max(info["iter"], 1)
        max_dev = max(max_dev, abs(mine - info["iter"]) / max(info["iter"], 1))
    reproduction = {"problems": len(programs), "same_status": agree_status, "iterations_within_10pct": agree_iters,
                    "max_relative_iteration_difference": max_dev,
                    "sgm_iters_ours": shifted_geometric_mean(ours.iterations.cpu().numpy().astype(float))}

    plain, aa = (dataclasses.replace(base_map.settings, mode=mode) for mode in ("neural_fp", "hyper_aa"))
    curves = {}
    torch_rows = [("SCS map, plain iteration (fixed scale)", base_map, plain, None, None),
                  (f"SCS map + our Anderson (M={aa.memory})", base_map, aa, None, None)]
    for label, acc, fp_map in learned:
        torch_rows.append((label, fp_map, fp_map.settings, acc.policy, acc.initializer))
    for label, fp_map, settings, policy, init in torch_rows:
        y0 = init(x) if init is not None else None
        run = map_iterations(fp_map, x, settings, steps, policy, y0)
        record = _summary(run["hits"], steps)
        record["solution_error"] = _agreement(run["x"], run["y"], refs)
        record["ms_per_iteration"] = timed(lambda: fp.solve(fp_map, x, settings, steps, policy, y0)) \
            / len(programs) / steps * 1e3
        methods[label] = record
        curves[label] = run["ratios"]
    aa_real = methods["scs (real, acceleration on: its Anderson)"]["sgm_iters_to_0.0001"]
    rows, more = [], []
    for label, r in methods.items():
        r["real_aa_over_method_sgm_1e-4"] = aa_real / r["sgm_iters_to_0.0001"]
        r["median_ms_per_problem_to_1e-4"] = r["ms_per_iteration"] * r["median_iters_to_0.0001"]
        rows.append([label, r["median_iters_to_0.0001"], r["sgm_iters_to_0.0001"], r["real_aa_over_method_sgm_1e-4"],
                     r["reached_0.0001"], r["median_iters_to_1e-06"], r["reached_1e-06"]])
        more.append([label, r.get("sgm_reported_iters_1e-4", math.nan), r.get("solution_error", math.nan),
                     r["ms_per_iteration"], r["median_ms_per_problem_to_1e-4"]])
    # two tables of at most ~110 columns: iterations to tolerance; then scs's own count, accuracy and the clock
    table = format_table(["method", "med 1e-4", "sgm 1e-4", "AA/method", "reached 1e-4", "med 1e-6", "reached 1e-6"],
                         rows) + "\n\n" + format_table(
        ["method", "scs reported (1e-4)", "x,y error @1e-4", "ms/iteration", "ms to 1e-4"], more)
    table += ("\niterations per problem; AA/method: real scs with its Anderson over the method (sgm at 1e-4); "
              "ms per problem,\nms to 1e-4: ms/iteration x median iterations to 1e-4")
    return {"methods": methods, "reproduction": reproduction, "table": table, "curves": curves}
