"""``amortize bench qp``: our batched OSQP core against the real ``osqp``, same settings, same problems.

Per class: status agreement, median iterations of each, iterations within one
termination-check interval, objective agreement, time. Overall: shifted
geometric means (shift 10) of time and iterations, and a throughput line for a
batch of Random QPs solved batched by our core against looping the real osqp.
"""

from __future__ import annotations

import textwrap
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import osqp
import torch

from agents.common.tables import format_table
from agents.common.progress import Progress
from agents.common.runs import DEFAULT_ROOT, RunDir
from agents.common.scaleout import Resources, Shards, merge_shards, run_jobs
from agents.common.statistics import shifted_geometric_mean
from envs.common.vector import resolve_device
from learned_optimizers.common.timing import synchronize
from learned_optimizers.qp.admm import OSQPBatch, OSQPSettings
from learned_optimizers.qp.problems import QP, QP_CLASSES, generate, load_qp

#: above this many dense matrix entries (n*n + m*n) a problem goes to the sparse backend
DENSE_LIMIT = 4_000_000
#: osqp's setup error codes (its OSQPException's argument), as the status a benchmark records
OSQP_SETUP_REFUSALS = {1: "osqp refused the data", 4: "problem non convex"}


@dataclass
class Record:
    name: str
    group: str
    n: int
    m: int
    osqp_status: str
    ours_status: str
    osqp_iter: int
    ours_iter: int
    osqp_obj: float
    ours_obj: float
    osqp_seconds: float
    ours_seconds: float

    @property
    def obj_rel_diff(self) -> float:
        if self.osqp_status != "solved" or self.ours_status != "solved":
            return float("nan")
        return abs(self.ours_obj - self.osqp_obj) / max(1.0, abs(self.osqp_obj))


def run_real_osqp(qp: QP, settings: OSQPSettings) -> tuple[str, int, float, float]:
    """(status, iterations, objective, seconds) of the real osqp. A problem osqp refuses at setup (n = 0,
    l = u = +-inf, a non-convex P) is a status of its own, so a benchmark records it and goes on."""
    solver = osqp.OSQP()
    t0 = time.perf_counter()
    try:
        solver.setup(**qp.osqp_data(), **settings.osqp_kwargs())
    except osqp.OSQPException as err:
        code = err.args[0] if err.args else None
        return OSQP_SETUP_REFUSALS.get(code, f"osqp setup error {code}"), 0, float("nan"), time.perf_counter() - t0
    res = solver.solve(raise_error=False)
    return res.info.status, int(res.info.iter), float(res.info.obj_val) + qp.r, time.perf_counter() - t0



def run_ours(qps: list[QP], settings: OSQPSettings, device: torch.device, backend: str = "dense"):
    synchronize(device)
    t0 = time.perf_counter()
    sol = OSQPBatch(qps, settings, device=device, backend=backend).solve()
    synchronize(device)
    return sol, time.perf_counter() - t0


def _records(group: str, qps: list[QP], settings: OSQPSettings, device: torch.device, backend: str) -> list[Record]:
    sol, seconds = run_ours(qps, settings, device, backend)
    labels = sol.status_labels()
    out = []
    for i, qp in enumerate(qps):
        st, it, obj, sec = run_real_osqp(qp, settings)
        out.append(Record(qp.name, group, qp.n, qp.m, st, labels[i], it, int(sol.iterations[i]), obj,
                          float(sol.objective[i]) + qp.r, sec, seconds / len(qps)))
    return out


def summarize(records: list[Record], check_interval: int) -> tuple[list[list[Any]], dict[str, Any]]:
    groups: dict[str, list[Record]] = {}
    for r in records:
        groups.setdefault(r.group, []).append(r)
    rows, per_group = [], {}
    for g, rs in groups.items():
        agree = np.mean([r.osqp_status == r.ours_status for r in rs])
        within = np.mean([abs(r.osqp_iter - r.ours_iter) <= check_interval for r in rs])
        diffs = [r.obj_rel_diff for r in rs if not np.isnan(r.obj_rel_diff)]
        stats = {
            "problems": len(rs), "status_agreement": float(agree), "iter_within_interval": float(within),
            "osqp_median_iter": float(np.median([r.osqp_iter for r in rs])),
            "ours_median_iter": float(np.median([r.ours_iter for r in rs])),
            "max_obj_rel_diff": float(max(diffs)) if diffs else None,
            "osqp_sgm_seconds": shifted_geometric_mean([r.osqp_seconds for r in rs]),
            "ours_sgm_seconds": shifted_geometric_mean([r.ours_seconds for r in rs]),
        }
        per_group[g] = stats
        rows.append([g, len(rs), stats["status_agreement"], stats["osqp_median_iter"], stats["ours_median_iter"],
                     stats["iter_within_interval"], stats["max_obj_rel_diff"], stats["osqp_sgm_seconds"], stats["ours_sgm_seconds"]])
    overall = {
        "osqp_sgm_iter": shifted_geometric_mean([r.osqp_iter for r in records]),
        "ours_sgm_iter": shifted_geometric_mean([r.ours_iter for r in records]),
        "osqp_sgm_seconds": shifted_geometric_mean([r.osqp_seconds for r in records]),
        "ours_sgm_seconds": shifted_geometric_mean([r.ours_seconds for r in records]),
        "status_agreement": float(np.mean([r.osqp_status == r.ours_status for r in records])),
    }
    return rows, {"groups": per_group, "overall": overall}


def throughput(settings: OSQPSettings, device: torch.device, batch: int = 256, n: int = 50, seed: int = 0) -> dict[str, float]:
    """Problems per second: one batched solve of ``batch`` Random QPs against looping the real osqp."""
    qps = [generate("random", n, seed + i) for i in range(batch)]
    run_ours(qps[:2], settings, device)  # warm-up
    sol, ours_s = run_ours(qps, settings, device)
    t0 = time.perf_counter()
    for qp in qps:
        run_real_osqp(qp, settings)
    osqp_s = time.perf_counter() - t0
    return {"batch": batch, "n": n, "device": str(device), "ours_problems_per_s": batch / ours_s,
            "osqp_problems_per_s": batch / osqp_s, "ours_seconds": ours_s, "osqp_seconds": osqp_s,
            "ours_solved": int((sol.status == 1).sum())}


def _bench_item(item: tuple[str, Any], settings: OSQPSettings, device: str,
                progress: Progress | None = None) -> list[Record]:
    """The records of one unit of work: a QP file (solved alone), or one class and size (solved as one batch)."""
    group, what = item
    dev = torch.device(device)
    if isinstance(what, str):
        qps = [load_qp(what)]
        last = qps[0].name
    else:
        c, n, seed, instances = what
        qps = [generate(c, n, seed + i) for i in range(instances)]
        last = f"{c}-{n}"
    backend = "dense" if max(q.n * q.n + q.m * q.n for q in qps) <= DENSE_LIMIT else "sparse"
    records = _records(group, qps, settings, dev, backend)
    if progress is not None:
        progress.update(1, last=last)
    return records


def bench_shard(job: dict[str, Any]) -> list[list[Record]]:
    """One Ray worker's share of a sharded ``bench qp``: the records of each of its items, in order."""
    torch.set_num_threads(job["threads"])
    return [_bench_item(item, job["settings"], "cpu") for item in job["items"]]


def _sharded(items: list[tuple[str, Any]], settings: OSQPSettings, device: torch.device, workers: int,
             address: str | None, threads: int) -> list[Record]:
    """The items dealt over ``workers`` Ray tasks (``threads`` CPUs and torch threads each), merged in the serial
    order. Iterations, statuses and objectives equal a serial run's with as many torch threads (bit for bit:
    a different thread count changes a matrix product's last bits)."""
    if device.type != "cpu":
        raise ValueError(f"--workers shards the problems over CPU workers; give --device cpu (not {device})")
    shards = Shards(items, workers)
    jobs = [{"items": part, "settings": settings, "threads": threads} for part in shards.parts()]
    print(f"bench qp: {len(items)} items over {len(jobs)} Ray workers, {threads} torch thread(s) each"
          + (f" on {address}" if address else ""), flush=True)
    outcomes = run_jobs(bench_shard, jobs, [f"shard {j}" for j in range(len(jobs))], address=address,
                        resources=Resources(cpus=threads),
                        what="bench qp --workers",
                        on_done=lambda o, c: print(f"[bench qp] shard {o.index}: "
                                                   + ("done" if o.ok else f"FAILED: {o.error}")
                                                   + f" ({o.seconds:.1f} s), {c['done'] + c['failed']}/{c['total']}",
                                                   flush=True))
    return [r for per_item in merge_shards(shards, outcomes) for r in per_item]


def bench_qp(
    name: str = "bench-qp",
    classes: list[str] | None = None,
    sizes: list[int] | None = None,
    instances: int = 10,
    problems_dir: str | None = None,
    device: str = "auto",
    seed: int = 0,
    with_throughput: bool = True,
    root: str | Path = DEFAULT_ROOT,
    settings: OSQPSettings | None = None,
    workers: int | None = None,
    address: str | None = None,
    threads_per_worker: int = 1,
) -> dict[str, Any]:
    """Our core against the real osqp on generated classes or a folder of QPs. ``workers``: the problems dealt
    over that many Ray tasks (local, or the cluster at ``address``); the table is the serial one."""
    settings = settings or OSQPSettings()
    dev = resolve_device(device)
    classes = classes or list(QP_CLASSES)
    unknown = [c for c in classes if c not in QP_CLASSES]
    if unknown:
        raise ValueError(f"--classes: unknown {', '.join(unknown)}; allowed: {', '.join(QP_CLASSES)}")
    sizes = sizes or [10, 20, 50]
    if instances < 1 or any(s < 1 for s in sizes):
        raise ValueError("--instances and --sizes must be >= 1")
    files: list[Path] = []
    if problems_dir:
        files = sorted([*Path(problems_dir).glob("*.mat"), *Path(problems_dir).glob("*.npz")])
        if not files:
            raise ValueError(f"--problems {problems_dir!r}: no .mat or .npz files there")
    if files:
        items = [(Path(problems_dir).name, str(f.resolve())) for f in files]
        desc = ("bench qp", "problem")
    else:
        items = [(c, (c, n, seed, instances)) for c in classes for n in sizes]
        desc = ("bench qp", "group")
    out_dir = RunDir.create(name, root)
    if workers is None:
        progress = Progress(len(items), desc=desc[0], unit=desc[1])
        records = [r for item in items for r in _bench_item(item, settings, str(dev), progress)]
        progress.close()
    else:
        records = _sharded(items, settings, dev, workers, address, threads_per_worker)
    rows, summary = summarize(records, settings.check_termination)
    table = format_table(["class", "problems", "status agree", "osqp med iter", "ours med iter", "iter within 25",
                          "obj rel diff", "osqp ms", "ours ms"],
                         [[r[0], r[1], f"{round(r[2] * r[1])}/{r[1]}", r[3], r[4], f"{round(r[5] * r[1])}/{r[1]}", r[6],
                           f"{1e3 * r[7]:.3g}", f"{1e3 * r[8]:.3g}"] for r in rows])
    o = summary["overall"]
    lines = [table, "", *textwrap.wrap(
        f"shifted geometric mean (shift 10): iterations osqp {o['osqp_sgm_iter']:.1f} vs ours {o['ours_sgm_iter']:.1f}; "
        f"seconds per problem osqp {o['osqp_sgm_seconds']:.4g} vs ours {o['ours_sgm_seconds']:.4g}", 110)]
    result: dict[str, Any] = {"settings": settings.osqp_kwargs(), "device": str(dev), "workers": workers,
                              "torch_threads": threads_per_worker if workers else torch.get_num_threads(), **summary,
                              "records": [r.__dict__ for r in records]}
    if with_throughput:
        tp = throughput(settings, dev, seed=seed + 10_000)
        result["throughput"] = tp
        lines.append(f"throughput ({tp['batch']} Random QPs, n={tp['n']}, {tp['device']}): ours batched "
                     f"{tp['ours_problems_per_s']:.1f} problems/s vs real osqp looped {tp['osqp_problems_per_s']:.1f} problems/s")
    result["table"] = "\n".join(lines)
    path = out_dir.write_json("bench.json", result)
    result["paths"] = {"json": str(path), "plots": [], "tensorboard": str(out_dir.path)}
    return result

