"""``amortize bench qp --policy PATH``: RLQP against the real ``osqp`` and our core's heuristic.

Same problems, same tolerance (the policy's training eps unless ``--eps``),
same termination-check interval. Groups:

* held-out problems of the training classes and sizes (seeds no training draw can take);
* the same classes at 4x the trained sizes;
* classes never trained on (Huber, Eq QP);
* a folder of real problems (``--problems``, e.g. Maros-Meszaros), at eps and at 1e-3.

Iterations (hardware-free, primary) and time aggregate by shifted geometric
mean (shift 10); a problem a solver fails counts at the iteration limit, as
qpbenchmark counts failures. Times: real osqp per problem; ours and RLQP are
one batched solve per group divided by its problem count.
"""

from __future__ import annotations

import textwrap

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from agents.common.plots import plot_grouped_bars
from agents.common.tables import fewer_or_more, format_table
from agents.common.progress import Progress
from agents.common.runs import DEFAULT_ROOT, RunDir
from agents.common.scaleout import Resources, Shards, merge_shards, run_jobs
from agents.common.statistics import shifted_geometric_mean
from agents.qp.bench import DENSE_LIMIT, run_real_osqp
from envs.common.vector import resolve_device
from learned_optimizers.common.timing import synchronize
from learned_optimizers.qp.admm import OSQPBatch, OSQPSettings
from learned_optimizers.qp.mix import QPMix, QPMixSettings, heldout_problems
from learned_optimizers.qp.problems import QP, load_qp
from learned_optimizers.qp.rlqp import SHIPPED_POLICY, RhoPolicy, RLQPSettings, RLQPSolver

SOLVED = "solved"
UNSEEN_CLASSES = {"huber": (2, 3), "eq": (10, 20, 30)}


@dataclass
class RLQPRecord:
    name: str
    group: str
    eps: float
    osqp_status: str
    osqp_iter: int
    osqp_seconds: float
    heuristic_status: str
    heuristic_iter: int
    rlqp_status: str
    rlqp_iter: int
    rlqp_seconds: float
    fell_back: bool



def run_group(group: str, qps: list[QP], policy: RhoPolicy, settings: RLQPSettings, device: torch.device) -> list[RLQPRecord]:
    """Real osqp one by one, then our heuristic and RLQP each as one batched solve."""
    backend = "dense" if max(q.n * q.n + q.m * q.n for q in qps) <= DENSE_LIMIT else "sparse"
    heuristic = OSQPBatch(qps, settings.osqp, device=device, backend=backend).solve()
    synchronize(device)
    t0 = time.perf_counter()
    learned = RLQPSolver(policy, settings).solve(qps, device=device, backend=backend)
    synchronize(device)
    rlqp_seconds = (time.perf_counter() - t0) / len(qps)
    h_labels, r_labels = heuristic.status_labels(), learned.status_labels()
    out = []
    for i, qp in enumerate(qps):
        status, iters, _, seconds = run_real_osqp(qp, settings.osqp)
        out.append(RLQPRecord(qp.name, group, settings.osqp.eps_abs, status, iters, seconds, h_labels[i],
                              int(heuristic.iterations[i]), r_labels[i], int(learned.iterations[i]), rlqp_seconds,
                              bool(learned.fell_back[i])))
    return out


def rlqp_shard(job: dict[str, Any]) -> list[list[RLQPRecord]]:
    """One Ray worker's share of a sharded ``bench qp --policy``: the records of each of its batches, in order."""
    torch.set_num_threads(job["threads"])
    device = torch.device("cpu")
    policy = RhoPolicy.load(job["policy"], device)
    return [run_group(group, qps, policy, settings, device) for group, qps, settings in job["units"]]


def summarize(records: list[RLQPRecord], max_iter: int) -> dict[str, Any]:
    """Per group: success rates, SGM iterations and seconds (failures counted at the limit), the ratio."""

    def it(status: str, n: int) -> int:
        return n if status == SOLVED else max_iter

    groups: dict[str, list[RLQPRecord]] = {}
    for r in records:
        groups.setdefault(r.group, []).append(r)
    out = {}
    for g, rs in groups.items():
        osqp_it = shifted_geometric_mean([it(r.osqp_status, r.osqp_iter) for r in rs])
        rlqp_it = shifted_geometric_mean([it(r.rlqp_status, r.rlqp_iter) for r in rs])
        out[g] = {
            "problems": len(rs), "eps": rs[0].eps,
            "osqp_solved": float(np.mean([r.osqp_status == SOLVED for r in rs])),
            "rlqp_solved": float(np.mean([r.rlqp_status == SOLVED for r in rs])),
            "rlqp_failed_where_osqp_solved": int(sum(r.osqp_status == SOLVED and r.rlqp_status != SOLVED for r in rs)),
            "osqp_sgm_iter": osqp_it,
            "heuristic_sgm_iter": shifted_geometric_mean([it(r.heuristic_status, r.heuristic_iter) for r in rs]),
            "rlqp_sgm_iter": rlqp_it,
            "iteration_ratio_osqp_over_rlqp": osqp_it / rlqp_it,
            "osqp_sgm_seconds": shifted_geometric_mean([r.osqp_seconds for r in rs]),
            "rlqp_sgm_seconds": shifted_geometric_mean([r.rlqp_seconds for r in rs]),
            "fallbacks": int(sum(r.fell_back for r in rs)),
        }
    return out


def heldout_groups(mix: QPMix, per_size: int) -> list[tuple[str, list[QP]]]:
    """Per training class: ``per_size`` problems of every trained size, with seeds training never draws."""
    return [(f"{name} (held-out)", heldout_problems(name, sizes, per_size)) for name, sizes in mix.entries]


def _problem_groups(mix: QPMix, per_size: int, problems_dir: str | None) -> list[tuple[str, list[QP], float | None]]:
    """(group name, problems, eps override) in table order."""
    groups: list[tuple[str, list[QP], float | None]] = [(g, qps, None) for g, qps in heldout_groups(mix, per_size)]
    for name, sizes in mix.entries:
        groups.append((f"{name} x4 size", heldout_problems(name, [4 * n for n in sizes], per_size), None))
    trained = {name for name, _ in mix.entries}
    for name, sizes in UNSEEN_CLASSES.items():
        if name not in trained:
            groups.append((f"{name} (unseen)", heldout_problems(name, sizes, per_size), None))
    if problems_dir:
        files = sorted([*Path(problems_dir).glob("*.mat"), *Path(problems_dir).glob("*.npz")])
        if not files:
            raise ValueError(f"--problems {problems_dir!r}: no .mat or .npz files there")
        folder = Path(problems_dir).name
        qps = [load_qp(f) for f in files]
        groups.append((f"{folder} @eps", qps, None))
        groups.append((f"{folder} @1e-3", qps, 1e-3))
    return groups


def bench_rlqp(
    policy_path: str,
    name: str = "bench-rlqp",
    per_size: int = 5,
    problems_dir: str | None = None,
    eps: float | None = None,
    device: str = "auto",
    root: str | Path = DEFAULT_ROOT,
    groups: list[str] | None = None,
    workers: int | None = None,
    address: str | None = None,
    threads_per_worker: int = 1,
) -> dict[str, Any]:
    """RLQP against the real osqp and our core's rule; ``workers``: the problem batches dealt over that many Ray
    tasks (local, or the cluster at ``address``), the table being the serial one."""
    dev = resolve_device(device)
    if str(policy_path) == "shipped":
        policy_path = str(SHIPPED_POLICY)
    if not Path(policy_path).is_file():
        raise FileNotFoundError(f"--policy {policy_path!r}: no such file")
    policy = RhoPolicy.load(policy_path, dev)
    meta = getattr(policy, "metadata", {})
    if "mix" not in meta or "interval" not in meta:
        raise ValueError(f"--policy {policy_path!r}: the file does not record its training mix and interval")
    eps = eps or meta.get("eps", 1e-6)
    mix = QPMix(QPMixSettings(mix=tuple(meta["mix"]), eps=eps, interval=meta["interval"]))
    if per_size < 1:
        raise ValueError(f"--instances={per_size}: must be >= 1")
    todo = _problem_groups(mix, per_size, problems_dir)
    if groups:
        todo = [g for g in todo if any(k in g[0] for k in groups)]
        if not todo:
            names = [g for g, _, _ in _problem_groups(mix, per_size, problems_dir)]
            raise ValueError(f"--groups {','.join(groups)}: matches none of the groups {names}")
    units = []  # (group, problems solved as one batch, settings): real problems differ in size, one at a time
    for group, qps, eps_override in todo:
        e = eps_override or eps
        settings = RLQPSettings(osqp=OSQPSettings(eps_abs=e, eps_rel=e), interval=meta["interval"])
        if group.endswith(("@eps", "@1e-3")):
            units += [(group, [qp], settings) for qp in qps]
        else:
            units.append((group, qps, settings))
    out_dir = RunDir.create(name, root)
    if workers is None:
        records: list[RLQPRecord] = []
        progress = Progress(sum(len(qps) for _, qps, _ in units), desc="bench rlqp", unit="problem")
        for group, qps, settings in units:
            records += run_group(group, qps, policy, settings, dev)
            progress.update(len(qps), last=f"{group} {qps[0].name}" if len(qps) == 1 else group)
        progress.close()
    else:
        if dev.type != "cpu":
            raise ValueError(f"--workers shards the problems over CPU workers; give --device cpu (not {dev})")
        shards = Shards(units, workers)
        jobs = [{"units": part, "policy": str(Path(policy_path).resolve()), "threads": threads_per_worker}
                for part in shards.parts()]
        print(f"bench rlqp: {len(units)} batches over {len(jobs)} Ray workers, {threads_per_worker} torch thread(s) "
              "each" + (f" on {address}" if address else ""), flush=True)
        outcomes = run_jobs(rlqp_shard, jobs, [f"shard {j}" for j in range(len(jobs))], address=address,
                            resources=Resources(cpus=threads_per_worker), what="bench qp --policy --workers")
        records = [r for per_unit in merge_shards(shards, outcomes) for r in per_unit]
    summary = summarize(records, OSQPSettings().max_iter)
    headers = ["group", "osqp ok", "RLQP ok", "lost", "osqp iter", "core iter", "RLQP iter",
               "RLQP iter", "osqp ms", "RLQP ms", "fallback"]

    def solved(share: float, n: int) -> str:
        return f"{round(share * n)}/{n}"

    rows = [[g, solved(s["osqp_solved"], s["problems"]), solved(s["rlqp_solved"], s["problems"]),
             s["rlqp_failed_where_osqp_solved"], s["osqp_sgm_iter"], s["heuristic_sgm_iter"], s["rlqp_sgm_iter"],
             fewer_or_more(s["iteration_ratio_osqp_over_rlqp"], ""), f"{1e3 * s['osqp_sgm_seconds']:.3g}",
             f"{1e3 * s['rlqp_sgm_seconds']:.3g}", s["fallbacks"]] for g, s in summary.items()]
    held = [r for r in records if r.group.endswith("(held-out)")]
    lines = [format_table(headers, rows), *textwrap.wrap(
        f"eps {eps:g} (groups named @1e-3: 1e-3). ok: solved of the group's problems. iter, ms: shifted geometric means (shift 10; a failure counts as max_iter); the second RLQP "
        "iter column: against real osqp's. core: our batched OSQP with "
        "osqp's own rho rule. lost: problems osqp solved and RLQP did not. fallback: problems RLQP's "
        "safeguard handed back to osqp's rule.", 110)]
    result: dict[str, Any] = {"policy": str(policy_path), "policy_metadata": meta, "device": str(dev),
                              "workers": workers,
                              "torch_threads": threads_per_worker if workers else torch.get_num_threads(),
                              "groups": summary}
    if held:
        o = summarize([RLQPRecord(**{**asdict(r), "group": "all"}) for r in held], OSQPSettings().max_iter)["all"]
        result["heldout_training_classes"] = o
        lines += ["", *textwrap.wrap(
            f"held-out problems of the training classes ({o['problems']}): SGM iterations real osqp "
            f"{o['osqp_sgm_iter']:.1f} vs RLQP {o['rlqp_sgm_iter']:.1f}: "
            f"{fewer_or_more(o['iteration_ratio_osqp_over_rlqp'])}; RLQP failed {o['rlqp_failed_where_osqp_solved']} "
            "problems that osqp solved", 110)]
    result["table"] = "\n".join(lines)
    result["records"] = [asdict(r) for r in records]
    plot = plot_grouped_bars(out_dir.plots / "rlqp_iterations.png", list(summary),
                             {"real osqp": [s["osqp_sgm_iter"] for s in summary.values()],
                              "RLQP": [s["rlqp_sgm_iter"] for s in summary.values()]},
                             "shifted geometric mean of ADMM iterations",
                             f"{out_dir.name}: RLQP vs real osqp (eps {eps:g}); above the bars: solved/problems",
                             labels={"real osqp": [f"{round(s['osqp_solved'] * s['problems'])}/{s['problems']}"
                                                   for s in summary.values()],
                                     "RLQP": [f"{round(s['rlqp_solved'] * s['problems'])}/{s['problems']}"
                                              for s in summary.values()]})
    path = out_dir.write_json("bench.json", result)
    result["paths"] = {"json": str(path), "plots": [str(plot)], "tensorboard": str(out_dir.path)}
    return result
