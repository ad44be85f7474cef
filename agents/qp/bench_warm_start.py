"""``amortize bench warm-start``: the real osqp (and with ``--solvers osqp,scs`` the real scs) on held-out contexts
of a parametric QP family, cold, from the previous context's solution and from learned warm starts, at each
tolerance.

The contexts are drifting sequences (``ParametricQPFamily.sequence``, sequence i from seed + i, never the
training seed): what a user solves again and again. One sequence is a slow walk, so its figures depend on where
it walks (the shipped portfolio starter measured 1.50x to 4.04x cold osqp's speed at eps 1e-5 on four
sequences of 200): the bench runs several and pools their contexts. Each start has its own ``osqp.OSQP`` per
sequence, set up once and then fed
``update(q=, l=, u=)``, ``warm_start(x=, y=)``, ``solve()`` per context: the same path for every row, so the rows
differ only by where osqp starts (cold: x = y = 0, osqp's own start). Each learned start also runs corrected by
its last error ("+ last error": the prediction plus the previous context's solution minus its prediction), which
a user solving a sequence has at hand. Seconds per context are measured around those three calls (and the
correction), plus the model's forward pass: once for the whole sequence divided by its length ("batched") and
once per context ("single"). Shifted geometric means (shift 10 iterations, 10 us).
"""

from __future__ import annotations

import textwrap
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from agents.common.runs import DEFAULT_ROOT, RunDir
from agents.common.statistics import shifted_geometric_mean
from agents.common.tables import format_table, fraction
from learned_optimizers.qp.admm import OSQPBatch, OSQPSettings, Status
from learned_optimizers.qp.parametric import ParametricQPFamily
from learned_optimizers.qp.rlqp import SHIPPED_POLICY, RhoPolicy, RLQPSettings, RLQPSolver
from learned_optimizers.qp.scs_form import SCSForm
from learned_optimizers.qp.warm_start import PrimalDual, WarmStarter, corrected_start

TOLERANCES = (1e-3, 1e-5)
#: the shift of the seconds' geometric mean, in ms: 10 us, small beside one solve (0.1-1 ms)
MS_SHIFT = 0.01
#: held-out sequences start here: never a config's training seed or its eval.seed (1000003), which picks the best model
BENCH_SEED = 2_000_003
Start = Callable[[int, np.ndarray], PrimalDual]


def run_osqp(family: ParametricQPFamily, contexts: np.ndarray, eps: float, start: Start,
             feedback: bool = False) -> dict[str, Any]:
    """osqp over the sequence from ``start(t, context)``; per-context iterations, statuses and seconds.
    ``feedback``: from context 1 on, start at ``start`` plus its error at the previous context (that context's
    solution minus its ``start``, not the corrected one: ``corrected_start``), the correction timed with the solve."""
    q, l, u = family.data(contexts)
    solver = family.osqp_solver(contexts[0], eps_abs=eps, eps_rel=eps)
    iterations, statuses, seconds, solutions = [], [], [], []
    last: tuple[PrimalDual, PrimalDual] | None = None  # (prediction, solution) at the last solved context
    for t in range(len(contexts)):
        x0, y0 = prediction = start(t, contexts[t])
        t0 = time.perf_counter()
        if feedback and last is not None:
            x0, y0 = corrected_start(prediction, *last)
        solver.update(q=q[t], l=l[t], u=u[t])
        solver.warm_start(x=x0, y=y0)
        res = solver.solve(raise_error=False)
        seconds.append(time.perf_counter() - t0)
        iterations.append(int(res.info.iter))
        statuses.append(res.info.status)
        solutions.append((res.x.copy(), res.y.copy()))
        last = (prediction, solutions[-1]) if res.info.status == "solved" else None
    return {"iterations": iterations, "statuses": statuses, "seconds": seconds, "solutions": solutions}


def run_scs(form: SCSForm, contexts: np.ndarray, eps: float, start: Start | str,
            feedback: bool = False) -> dict[str, Any]:
    """scs over the sequence: ``"cold"`` (``warm_start=False``), ``"previous"`` (scs's own default, its previous
    (x, y, s)) or from osqp's (x, y) of ``start(t, context)``, mapped to SCS's form inside the timed part (the
    slack s = proj_K(b - A x) is a product with A); ``feedback`` as in ``run_osqp`` (scs's dual read back in
    osqp's convention). One scs per row and sequence, set up once, then ``update``."""
    b, c = form.b_c(contexts)
    solver = form.solver(contexts[0], eps_abs=eps, eps_rel=eps)
    iterations, statuses, seconds = [], [], []
    last: tuple[PrimalDual, PrimalDual] | None = None  # (prediction, solution) at the last solved context
    for t in range(len(contexts)):
        prediction = None if isinstance(start, str) else start(t, contexts[t])
        t0 = time.perf_counter()
        solver.update(b=b[t], c=c[t])
        if prediction is not None:
            xy = corrected_start(prediction, *last) if feedback and last is not None else prediction
            x0, y0, s0 = form.start(xy[0], xy[1], b[t])
            res = solver.solve(warm_start=True, x=x0[0], y=y0[0], s=s0[0])
        else:
            res = solver.solve(warm_start=start == "previous" and t > 0)
        solved = res["info"]["status"] == "solved"
        if feedback and prediction is not None:
            last = (prediction, (res["x"], form.osqp_dual(res["y"])[0])) if solved else None
        seconds.append(time.perf_counter() - t0)
        iterations.append(int(res["info"]["iter"]))
        statuses.append(res["info"]["status"])
    return {"iterations": iterations, "statuses": statuses, "seconds": seconds}


def _pooled(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """One run's per-context lists over several sequences, concatenated."""
    return {key: [v for part in parts for v in part[key]] for key in parts[0]}


def _forward_seconds(starter: WarmStarter, contexts: np.ndarray, repeats: int = 5) -> tuple[float, float]:
    """(batched, single) seconds per context of the model's forward pass, medians of ``repeats``."""
    batched, single = [], []
    starter.predict(contexts)  # untimed: the first call pays for the weights' first touch
    for _ in range(repeats):
        t0 = time.perf_counter()
        starter.predict(contexts)
        batched.append((time.perf_counter() - t0) / len(contexts))
        t0 = time.perf_counter()
        for c in contexts:
            starter.predict(c)
        single.append((time.perf_counter() - t0) / len(contexts))
    return float(np.median(batched)), float(np.median(single))


SOLVERS = ("osqp", "scs")
COLD, PREVIOUS = "cold (x = y = 0)", "previous solution"
#: a learned start corrected by its error at the previous context (``corrected_start``): the same forward pass
FEEDBACK = " + last error"


def bench_warm_start(checkpoints: list[str], contexts: int = 100, name: str = "bench-warm-start",
                     seed: int = BENCH_SEED, root: str | Path = DEFAULT_ROOT,
                     starters: list[tuple[str, WarmStarter]] | None = None, into: RunDir | None = None,
                     sequences: int = 5, solvers: tuple[str, ...] = ("osqp",)) -> dict[str, Any]:
    """Rows per solver and tolerance: cold, previous solution, each learned starter (forward pass batched and
    single) alone and corrected by its last error, over ``sequences`` sequences of ``contexts`` contexts pooled.
    ``into``: write the plot into this run (``amortize eval``, which writes eval.json) instead of a new bench dir."""
    if contexts < 2:
        raise ValueError(f"--contexts={contexts}: at least 2 (the previous-solution row needs one before)")
    if sequences < 1:
        raise ValueError(f"--sequences={sequences}: at least 1")
    unknown = [x for x in solvers if x not in SOLVERS]
    if unknown or not solvers:
        raise ValueError(f"--solvers={','.join(solvers)}: choose from {', '.join(SOLVERS)}")
    starters = list(starters or []) + [(str(c), WarmStarter.load(c)) for c in checkpoints]
    if not starters:
        raise ValueError("give at least one --checkpoint (a warm-start run's warm_start.pt, a run directory, or "
                         "shipped:<family>)")
    family = starters[0][1].family
    for label, s in starters[1:]:
        if s.family.name != family.name:
            raise ValueError(f"{label}: trained on {s.family.name}, the first on {family.name}; compare one family")
    seqs = [family.sequence(contexts, np.random.default_rng(seed + i)) for i in range(sequences)]
    seq = np.concatenate(seqs)
    forward: dict[str, tuple[float, float]] = {}
    predictions = {f"learned [{k}]": [starter.predict(part) for part in seqs]
                   for k, (_, starter) in enumerate(starters, 1)}
    rows, methods = [], {}
    for solver in solvers:
        for eps in TOLERANCES:
            print(f"  {solver} at eps {eps:g}: cold, previous solution, {len(starters)} learned start(s) alone and "
                  f"+ last error on {sequences} sequence(s) of {contexts} contexts ...")
            per_sequence = _solver_runs(solver, family, seqs, eps, predictions)
            if not forward:  # timed after the solvers' single-threaded work: torch's OpenMP threads, still
                # spinning after loading the models, slowed numpy's batched product up to 7x when timed first
                forward = {f"learned [{k}]": _forward_seconds(starter, seqs[0])
                           for k, (_, starter) in enumerate(starters, 1)}
            for label, record in _records(per_sequence, forward, eps).items():
                methods[f"{'' if solver == 'osqp' else 'scs: '}{label} @ {eps:g}"] = {"solver": solver, **record}
                rows.append([solver, f"{eps:g}", label, record["median_iterations"], f"{record['sgm_iterations']:.1f}",
                             f"{record['sgm_ms_forward_batched']:.3f}", f"{record['sgm_ms_forward_single']:.3f}",
                             f"{record['speedup_over_cold_batched']:.2f}x", f"{record['speedup_over_cold_single']:.2f}x",
                             fraction(record["solved"], record["contexts"])])
    core_rows, core = _in_our_core(family, seq, starters)
    methods.update(core)
    table = format_table(["solver", "eps", "start", "med iters", "sgm iters", "ms batched", "ms single", "x cold (b)",
                          "x cold (s)", "solved"], rows)
    table += "".join(f"\n[{k}] {label}" for k, (label, _) in enumerate(starters, 1))
    if sequences > 1:
        table += "\nx cold (b) per sequence:" + "".join(
            "\n" + textwrap.fill(f"{key.replace(' @ ', ' at eps ')}: " + ", ".join(
                f"{r:.2f}" for r in m["speedup_over_cold_batched_per_sequence"]), 110, initial_indent="  ",
                subsequent_indent="    ")
            for key, m in methods.items() if "speedup_over_cold_batched_per_sequence" in m and COLD not in key)
    table += "\n\nIn our batched core (OSQP's algorithm), iterations: OSQP's rho and RLQP's learned rho, cold or learned start\n"
    table += format_table(["eps", "rho", "start", "med iters", "sgm iters", "solved"], core_rows)
    notes = ("ms: geometric mean per context of the solver's update + warm start + solve, plus the model's forward "
             "pass batched over the sequence (b) or one context at a time (s). '+ last error': the learned start "
             "plus its error at the previous context (that context's solution minus its prediction). "
             f"{family.name}: n = {family.n}, m = {family.m}; {sequences} held-out sequence(s) of {contexts} contexts "
             f"(seeds {seed} to {seed + sequences - 1}), pooled; one solver set up per row and sequence."
             + (" scs: the QP in SCS's form (equality rows a zero cone, each finite bound a nonnegative row); "
                "its previous-solution row is scs's own warm start (x, y, s)." if "scs" in solvers else ""))
    table += "\n" + textwrap.fill(notes, 110)
    out = into or RunDir.create(name, root)
    summary = {"family": family.name, "contexts": contexts, "sequences": sequences, "seed": seed, "methods": methods,
               "solvers": list(solvers), "table": table,
               "checkpoints": {f"learned [{k}]": label for k, (label, _) in enumerate(starters, 1)}}
    path = None if into else out.write_json("bench.json", summary)
    plot = _plot(out.plot_path("warm_start.png") if into else out.plots / "warm_start.png", methods, family.name)
    summary["paths"] = {"json": str(path), "plots": [str(plot)], "tensorboard": str(out.path)}
    return summary


def _solver_runs(solver: str, family: ParametricQPFamily, seqs: list[np.ndarray], eps: float,
                 predictions: dict[str, list[tuple[np.ndarray, np.ndarray]]]) -> dict[str, list[dict[str, Any]]]:
    """Each row's runs, one per sequence: cold, previous solution, and each learned start alone and with
    feedback."""
    zero = (np.zeros(family.n), np.zeros(family.m))
    runs: dict[str, list[dict[str, Any]]] = {COLD: [], PREVIOUS: [], **{label: [] for label in predictions},
                                             **{label + FEEDBACK: [] for label in predictions}}
    form = SCSForm(family) if solver == "scs" else None
    for i, part in enumerate(seqs):
        if form is None:
            cold = run_osqp(family, part, eps, lambda t, c: zero)
            runs[COLD].append(cold)
            runs[PREVIOUS].append(run_osqp(family, part, eps, lambda t, c: cold["solutions"][t - 1] if t else zero))
        else:
            runs[COLD].append(run_scs(form, part, eps, "cold"))
            runs[PREVIOUS].append(run_scs(form, part, eps, "previous"))
        for label, xy in predictions.items():
            start = lambda t, c, xy=xy[i]: (xy[0][t], xy[1][t])  # noqa: E731
            for feedback in (False, True):
                runs[label + (FEEDBACK if feedback else "")].append(
                    run_osqp(family, part, eps, start, feedback) if form is None
                    else run_scs(form, part, eps, start, feedback))
    return runs


def _records(per_sequence: dict[str, list[dict[str, Any]]], forward: dict[str, tuple[float, float]], eps: float
             ) -> dict[str, dict[str, Any]]:
    """Each row's pooled figures against the cold row: iterations, solved, SGM ms with the forward pass."""
    def sgm_ms(seconds: list[float], extra: float = 0.0) -> float:
        return shifted_geometric_mean([1e3 * (s + extra) for s in seconds], shift=MS_SHIFT)

    cold = _pooled(per_sequence[COLD])
    cold_sgm = sgm_ms(cold["seconds"])
    cold_parts = [sgm_ms(p["seconds"]) for p in per_sequence[COLD]]
    records = {}
    for label, parts in per_sequence.items():
        run, (batched, single) = _pooled(parts), forward.get(label.removesuffix(FEEDBACK), (0.0, 0.0))
        solved = [s == "solved" for s in run["statuses"]]
        lost = sum(c == "solved" and s != "solved" for c, s in zip(cold["statuses"], run["statuses"]))
        ms = {"batched": sgm_ms(run["seconds"], batched), "single": sgm_ms(run["seconds"], single)}
        records[label] = {
            "eps": eps, "median_iterations": float(np.median(run["iterations"])),
            "sgm_iterations": shifted_geometric_mean(run["iterations"]), "solved": int(sum(solved)),
            "contexts": len(solved), "solved_by_cold_but_not_here": lost,
            "sgm_ms_forward_batched": ms["batched"], "sgm_ms_forward_single": ms["single"],
            "speedup_over_cold_batched": cold_sgm / ms["batched"], "speedup_over_cold_single": cold_sgm / ms["single"],
            "forward_ms_batched": 1e3 * batched, "forward_ms_single": 1e3 * single,
            "speedup_over_cold_batched_per_sequence": [c / sgm_ms(p["seconds"], batched)
                                                       for c, p in zip(cold_parts, parts)]}
    return records


def _in_our_core(family: ParametricQPFamily, seq: np.ndarray, starters: list[tuple[str, WarmStarter]]
                 ) -> tuple[list[list[Any]], dict[str, dict[str, Any]]]:
    """RLQP's learned rho combined with the learned starts, in our core (where a vector rho can be set): the
    fourth way to solve the family, in iterations (its seconds would be torch's, not the compiled osqp's)."""
    policy = RhoPolicy.load(SHIPPED_POLICY)
    qps = [family.qp(c) for c in seq]
    rows, methods = [], {}
    for eps in TOLERANCES:
        print(f"  our core at eps {eps:g}: OSQP's and RLQP's rho, cold and learned starts ...")
        osqp_settings = OSQPSettings(eps_abs=eps, eps_rel=eps)
        rlqp = RLQPSolver(policy, RLQPSettings(osqp=osqp_settings, interval=policy.metadata.get("interval", 100)))
        starts = {"cold": None, **{f"learned [{k}]": s.predict(seq) for k, (_, s) in enumerate(starters, 1)}}
        for start, xy in starts.items():
            for rho, solve in (("osqp's", lambda ws: _core_solve(qps, osqp_settings, ws)),
                               ("RLQP", lambda ws: rlqp.solve(qps, warm_start=ws))):
                sol = solve(None if xy is None else (torch.as_tensor(xy[0]), torch.as_tensor(xy[1])))
                its = sol.iterations.tolist()
                solved = int((sol.status == int(Status.SOLVED)).sum())
                record = {"eps": eps, "median_iterations": float(np.median(its)),
                          "sgm_iterations": shifted_geometric_mean(its), "solved": solved, "contexts": len(its)}
                methods[f"core, {rho} rho, {start} @ {eps:g}"] = record
                rows.append([f"{eps:g}", rho, start, record["median_iterations"], f"{record['sgm_iterations']:.1f}",
                             fraction(solved, len(its))])
    return rows, methods


def _core_solve(qps, settings: OSQPSettings, warm_start):
    batch = OSQPBatch(qps, settings)
    if warm_start is not None:
        batch.warm_start(*warm_start)
    return batch.solve()


def _plot(path: Path, methods: dict[str, dict[str, Any]], title: str) -> Path:
    from agents.common.plots import plot_grouped_bars

    timed = [k for k, m in methods.items() if "sgm_ms_forward_batched" in m]  # the real solvers' rows
    labels = list(dict.fromkeys(k.rsplit(" @ ", 1)[0] for k in timed))
    series = {f"eps {eps:g}": [methods[f"{label} @ {eps:g}"]["sgm_ms_forward_batched"] for label in labels]
              for eps in TOLERANCES}
    return plot_grouped_bars(path, labels, series, "ms per context (SGM, forward pass included)",
                             f"{title}: warm starts for the real solvers")
