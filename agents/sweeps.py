"""``amortize sweep`` and ``amortize plot``: many runs of one config (seeds x grid values) as Ray tasks, and
their curves across seeds.

A sweep is a folder ``runs/<sweep>/`` with its plan, a copy of the config, one ordinary run directory per
(grid value, seed), each run's log under ``logs/`` and ``sweep-status.json``. Every job is
``workflows.start_or_continue``, so running the sweep again (``--resume``) skips finished runs, resumes
interrupted ones from their checkpoints and starts the rest. One run's failure (its exception, or its worker
killed) is reported and the others go on.
"""

from __future__ import annotations

import json
import os
import sys
import time
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path
from typing import Any

from agents import workflows
from agents.common.curves import curves_across_runs
from agents.common.runs import DEFAULT_ROOT, RunDir
from agents.common.scaleout import Outcome, Resources, require_ray, run_jobs
from agents.common.sweep import CONFIG_COPY, SweepPlan, create_sweep_folder, make_plan, parse_seeds
from agents.common.tables import format_table
from learned_optimizers.common.files import atomic_write

STATUS = "sweep-status.json"
LOGS = "logs"


def sweep_job(job: dict[str, Any]) -> dict[str, Any]:
    """One run of a sweep, in a Ray worker or in this process: its output goes to the run's log file."""
    import torch

    if job.get("threads"):
        torch.set_num_threads(int(job["threads"]))
    log = Path(job["log"])
    log.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with open(log, "a", buffering=1) as stream, redirect_stdout(stream), redirect_stderr(stream):
        print(f"=== {time.strftime('%Y-%m-%d %H:%M:%S')} job {job['name']} (process {os.getpid()})", flush=True)
        result = workflows.start_or_continue(job["config"], job["overrides"], job["name"], job["root"])
        print(f"=== {result['status']}", flush=True)
    return {**result, "seconds": time.perf_counter() - start}


def _last_line(path: Path) -> str:
    """The newest progress line of a run's log (its tail, without reading a long log whole)."""
    try:
        with open(path, "rb") as f:
            f.seek(max(0, f.seek(0, 2) - 4096))
            lines = [ln.strip() for ln in f.read().decode(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return "queued"
    return lines[-1][:110] if lines else "starting"


def sweep(config: str | None = None, seeds: str = "0", items: list[str] | None = None, name: str | None = None,
          resume: str | None = None, root: str | Path = DEFAULT_ROOT, serial: bool = False, address: str | None = None,
          cpus_per_run: float = 1.0, gpus_per_run: float = 0.0, max_parallel: int | None = None, retries: int = 0,
          metric: str | None = None, device: str | None = None, wait_s: float = 15.0) -> dict[str, Any]:
    """Plan (or read back) a sweep, run its jobs, then tabulate them and plot the metric across seeds."""
    if not serial:
        require_ray("amortize sweep (or run it with --serial, one run after another in this process)")
    resources = Resources(cpus_per_run, gpus_per_run, retries)  # bad values are named before anything is created
    if max_parallel is not None and max_parallel < 1:
        raise ValueError(f"--max-parallel must be >= 1, got {max_parallel}")
    if not wait_s > 0:
        raise ValueError(f"--status-every must be > 0 seconds, got {wait_s}")
    plan, folder, config_path = _open_sweep(config, seeds, items, name, resume, root, device, gpus_per_run, serial)
    where = folder.resolve()  # the jobs' paths: a worker's working directory may differ (or a cluster node's)
    jobs = [{"name": r.name, "config": str(config_path.resolve()), "overrides": r.overrides, "root": str(where),
             "log": str(where / LOGS / f"{r.name}.log"), "threads": None if serial else max(1, int(cpus_per_run))}
            for r in plan.runs]
    labels = [r.name for r in plan.runs]
    executor = "serial" if serial else "ray"
    print(f"sweep {plan.name}: {len(jobs)} runs ({executor}"
          + (f", {cpus_per_run:g} CPU{'s' if cpus_per_run != 1 else ''} each" if not serial else "")
          + (f", at most {max_parallel} at once" if max_parallel else "")
          + (f", cluster {address}" if address else "") + f") into {folder}; logs: {folder / LOGS}/", flush=True)

    def on_done(o: Outcome, counts: dict[str, int]) -> None:
        word = f"{o.result['status']} ({o.result['seconds']:.0f} s)" if o.ok else f"FAILED: {o.error}"
        print(f"[sweep {plan.name}] {counts['done'] + counts['failed']}/{counts['total']} {o.label}: {word}", flush=True)

    def on_wait(running: list[int]) -> None:
        shown = "; ".join(f"{labels[i]}: {_last_line(Path(jobs[i]['log']))}" for i in running[:4])
        more = f"; +{len(running) - 4} more" if len(running) > 4 else ""
        print(f"[sweep {plan.name}] submitted {len(running)}: {shown}{more}", flush=True)

    start = time.perf_counter()
    try:
        outcomes = run_jobs(sweep_job, jobs, labels, executor=executor, address=address, resources=resources,
                            max_parallel=max_parallel, on_done=on_done, on_wait=on_wait, wait_s=wait_s,
                            what="amortize sweep")
    except KeyboardInterrupt:
        print(f"[sweep {plan.name}] interrupted: the running runs were asked to checkpoint and stop; continue with: "
              f"amortize sweep --resume {folder}", file=sys.stderr, flush=True)
        raise
    wall = time.perf_counter() - start
    _write_status(folder, plan, executor, address, cpus_per_run, wall, outcomes)
    table = format_table(["run", "outcome", "seconds"],
                         [[o.label, o.result["status"], round(o.result["seconds"], 1)] if o.ok else [o.label, "failed", None]
                          for o in outcomes])
    failed = [o for o in outcomes if not o.ok]
    result: dict[str, Any] = {"folder": str(folder), "table": table, "wall_seconds": wall, "failed": failed,
                              "outcomes": outcomes, "curves": None}
    if len(failed) < len(outcomes):
        try:
            result["curves"] = curves_across_runs([str(folder)], metric, folder, f"{plan.name}: across seeds",
                                                  skip_missing=True)
        except (ValueError, FileNotFoundError) as err:  # e.g. runs too short to have evaluated once
            result["curves_error"] = str(err)
    return result


def show_plan(config: str | None, seeds: str = "0", items: list[str] | None = None, name: str | None = None,
              resume: str | None = None, device: str | None = None, root: str | Path = DEFAULT_ROOT) -> str:
    """``amortize sweep --plan``: the runs a sweep would make (or a planned sweep holds), each config checked."""
    if resume is not None:
        plan = SweepPlan.read(resume)
        done = [r for r in plan.runs if (Path(resume) / r.name / "config.yaml").is_file()]
        head = f"sweep {plan.name} ({resume}): {len(plan.runs)} runs, {len(done)} of them started"
    else:
        plan, _ = _new_plan(config, seeds, items, name, device)
        head = f"sweep {plan.name}: {len(plan.runs)} runs (every config checked; nothing created)"
        if (Path(root) / plan.name).exists():
            head += (f"\nnote: {Path(root) / plan.name} exists: run this sweep under another --name, or continue "
                     f"that one with --resume {Path(root) / plan.name}")
    rows = [[r.name, " ".join(r.overrides)] for r in plan.runs]
    return head + "\n" + format_table(["run", "overrides"], rows)


def _open_sweep(config: str | None, seeds: str, items: list[str] | None, name: str | None, resume: str | None,
                root: str | Path, device: str | None, gpus_per_run: float,
                serial: bool) -> tuple[SweepPlan, Path, Path]:
    """(plan, folder, config copy): a resumed sweep's, or a new one's after every run's config was checked."""
    if resume is not None:
        if config is not None or items or device is not None:
            raise ValueError("--resume continues a sweep as it was planned: give no CONFIG, overrides or --device "
                             "with it")
        folder = Path(resume)
        plan = SweepPlan.read(folder)
        if not (folder / CONFIG_COPY).is_file():
            raise FileNotFoundError(f"{str(folder)!r}: its config copy {CONFIG_COPY} is missing")
        return plan, folder, folder / CONFIG_COPY
    plan, configs = _new_plan(config, seeds, items, name, device)
    if not serial:
        _check_gpus(configs[0].device, gpus_per_run)
    folder = create_sweep_folder(plan, root, Path(plan.config_source))
    return plan, folder, folder / CONFIG_COPY


def _new_plan(config: str | None, seeds: str, items: list[str] | None, name: str | None,
              device: str | None) -> tuple[SweepPlan, list[Any]]:
    """A new sweep's plan and every run's validated config (a named error before anything is created)."""
    if config is None:
        raise ValueError("CONFIG is required (or --resume SWEEP_DIR)")
    extra = [*(items or []), *([f"device={device}"] if device else [])]
    plan = make_plan(name or _default_name(Path(config)), str(config), parse_seeds(seeds), extra)
    return plan, [workflows.check_config(config, r.overrides) for r in plan.runs]


def _write_status(folder: Path, plan: SweepPlan, executor: str, address: str | None, cpus_per_run: float,
                  wall: float, outcomes: list[Outcome]) -> None:
    """``sweep-status.json``: how each run of this invocation ended, and the wall-clock of all of them."""
    runs = [{"name": o.label, "ok": o.ok,
             **({"status": o.result["status"], "seconds": o.result["seconds"]} if o.ok else {"error": o.error})}
            for o in outcomes]
    text = json.dumps({"sweep": plan.name, "executor": executor, "address": address, "cpus_per_run": cpus_per_run,
                       "wall_seconds": wall, "runs": runs}, indent=2) + "\n"
    atomic_write(folder / STATUS, lambda f: f.write(text.encode()))


def _check_gpus(device: str, gpus_per_run: float) -> None:
    """Ray hides the GPUs from a task that reserves none: a cuda run needs --gpus-per-run."""
    if device.startswith("cuda") and gpus_per_run <= 0:
        raise ValueError(f"device={device}: Ray shows a run only the GPUs it reserves; give --gpus-per-run "
                         "(e.g. 1, or 0.5 for two runs per GPU)")
    if device == "auto" and gpus_per_run <= 0:
        import torch

        if torch.cuda.is_available():
            print("note: device=auto and no --gpus-per-run: Ray hides the GPUs from the runs, which train on CPUs",
                  flush=True)


def _default_name(config_path: Path) -> str:
    return f"sweep-{config_path.stem.replace('_', '-')}"


def plot(paths: list[str], metric: str | None = None, name: str | None = None,
         root: str | Path = DEFAULT_ROOT) -> dict[str, Any]:
    """``amortize plot``: a scalar across runs; into the sweep's folder when one sweep is given, else a new folder."""
    one_sweep = len(paths) == 1 and (Path(paths[0]) / "sweep.json").is_file()
    if one_sweep and name is None:
        out = Path(paths[0])
        title = f"{SweepPlan.read(out).name}: across seeds"
    else:
        out = RunDir.create(name or "curves", root).path
        title = name or ", ".join(Path(p).name for p in paths)[:80]
    return curves_across_runs(paths, metric, out, title)


def print_sweep(result: dict[str, Any]) -> int:
    """The CLI's report of a sweep; the exit code is 1 where a run failed."""
    print()
    print(result["table"])
    print(f"\nwall-clock {result['wall_seconds']:.1f} s; status: {Path(result['folder']) / STATUS}; "
          f"every run's curves: tensorboard --logdir {result['folder']}")
    if result["curves"]:
        c = result["curves"]
        print(f"\n{c['metric']} across seeds (last common step):\n{c['table']}\nwrote {c['json']}; plot: {c['plot']}")
    elif result.get("curves_error"):
        print(f"\nno curves: {result['curves_error']}")
    if result["failed"]:
        print(f"\n{len(result['failed'])} run(s) failed; the others are kept. Logs: {Path(result['folder']) / LOGS}/. "
              f"Continue with: amortize sweep --resume {result['folder']}", file=sys.stderr)
        return 1
    return 0
