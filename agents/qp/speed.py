"""The qp domain's rows of ``amortize bench speed``: our batched OSQP core (OSQP's adaptive rho) and RLQP (the
shipped policy, its forward passes included) against the real osqp looped over the same problems, each at the
settings it runs with."""

from __future__ import annotations

import statistics
from dataclasses import replace

import torch

from agents.common.speed import SpeedRow, SpeedSettings, interleaved_medians
from agents.qp.bench import run_real_osqp
from learned_optimizers.qp.admm import OSQPSettings, Status, solve_qps
from learned_optimizers.qp.problems import QP, generate
from learned_optimizers.qp.rlqp import SHIPPED_POLICY, RhoPolicy, RLQPSettings, RLQPSolver

#: (problem class, n): the sets of the speed table
PROBLEM_SETS = (("random", 50), ("portfolio", 50))


def _osqp_loop(qps: list[QP], settings: OSQPSettings) -> list[tuple[str, int]]:
    return [run_real_osqp(qp, settings)[:2] for qp in qps]


def _row(solver: str, problems: str, peer: str, device: str, qps: list[QP], ours: tuple[float, object],
         peer_result: tuple[float, list[tuple[str, int]]]) -> SpeedRow:
    seconds, solution = ours
    peer_seconds, peer_runs = peer_result
    timed = len(peer_runs)
    return SpeedRow(
        domain="qp", problems=problems, solver=solver, peer=peer, device=device, batch=len(qps), seconds=seconds,
        peer_seconds=peer_seconds * len(qps) / timed, peer_timed=timed,
        # on the problems the peer solved; one median rule for both (torch's median of an even count is the lower one)
        median_iterations=float(statistics.median(solution.iterations[:timed].tolist())),
        peer_median_iterations=float(statistics.median(it for _, it in peer_runs)),
        solved=int((solution.status == int(Status.SOLVED)).sum()),
        peer_solved=sum(status == "solved" for status, _ in peer_runs),
        extra={"same_status": sum(Status(int(s)).label == st for s, (st, _) in zip(solution.status[:timed].tolist(),
                                                                                    peer_runs))},
    )


def qp_speed_rows(settings: SpeedSettings, progress=print) -> list[SpeedRow]:
    """Rows for every problem set and batch size; RLQP at the tolerance its policy was trained with."""
    device = settings.device
    policy = RhoPolicy.load(SHIPPED_POLICY, device=device)
    trained = getattr(policy, "metadata", {})
    eps = trained.get("eps", OSQPSettings.eps_abs)
    rlqp = RLQPSolver(policy, RLQPSettings(osqp=OSQPSettings(eps_abs=eps, eps_rel=eps), interval=trained.get("interval", 100)))
    osqp_settings = OSQPSettings()
    rlqp_osqp = replace(rlqp.settings.osqp, adaptive_rho=True)  # the peer: osqp's own heuristic at RLQP's eps
    rows = []
    for cls, n in PROBLEM_SETS:
        for batch in settings.batch_sizes:
            qps = [generate(cls, n, settings.seed + i) for i in range(batch)]
            peer_qps = qps[: settings.peer_max_problems]
            label = f"{cls} n={n}"
            progress(f"  {label}, batch {batch} ...")
            solvers = {
                "core": lambda: solve_qps(qps, osqp_settings, device=device),
                "osqp": lambda: _osqp_loop(peer_qps, osqp_settings),
                "rlqp": lambda: rlqp.solve(qps, device=device),
                "osqp-rlqp-eps": lambda: _osqp_loop(peer_qps, rlqp_osqp),
            }
            if settings.float32:
                solvers["core32"] = lambda: solve_qps(qps, osqp_settings, device=device, dtype=torch.float32)
            timed = interleaved_medians(solvers, device, settings.repeats, cold=("osqp", "osqp-rlqp-eps"))
            rows.append(_row(f"core, eps {osqp_settings.eps_abs:g}", label, f"osqp eps {osqp_settings.eps_abs:g}",
                             device, qps, timed["core"], timed["osqp"]))
            if settings.float32:
                rows.append(_row(f"core f32, eps {osqp_settings.eps_abs:g}", label, f"osqp eps {osqp_settings.eps_abs:g}",
                                 device, qps, timed["core32"], timed["osqp"]))
            rows.append(_row(f"RLQP, eps {eps:g}", label, f"osqp eps {eps:g}", device, qps, timed["rlqp"],
                             timed["osqp-rlqp-eps"]))
            del timed
            if torch.device(device).type == "cuda":
                torch.cuda.empty_cache()  # the next batch size gets the memory back
    return rows
