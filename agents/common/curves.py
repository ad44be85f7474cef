"""Curves across seeds: any TensorBoard scalar of many runs as a mean with a bootstrap confidence interval.

One seed proves little in this field. ``amortize plot RUNS... --metric TAG`` (and the end of every sweep) reads
the scalar from each run's ``tb/`` folder as TensorBoard shows it (every event file, resumes' purges applied),
groups the runs (a sweep groups its runs by grid value; plain run directories form one group), and gives per
group and step: the mean over runs, a 95% percentile-bootstrap interval of that mean (runs resampled with
replacement) and the interquartile mean (the mean of the middle 50% of runs, robust to one diverged seed).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from agents.common.best import BestModel
from agents.common.runs import RunDir
from agents.common.sweep import PLAN, SweepPlan, slug
from agents.common.tables import format_table
from learned_optimizers.common.files import atomic_write

BOOTSTRAP_SAMPLES = 2000
CONFIDENCE = 0.95


@dataclass
class RunCurve:
    group: str
    path: Path
    steps: np.ndarray
    values: np.ndarray


def expand(paths: list[str]) -> list[tuple[str, Path]]:
    """(group, run directory) for each path: a sweep folder gives its runs that exist, grouped by grid value
    (prefixed by the sweep's name when several sweeps are given); a run directory is in group ''."""
    sweeps = [p for p in paths if (Path(p) / PLAN).is_file()]
    out: list[tuple[str, Path]] = []
    for p in paths:
        folder = Path(p)
        if (folder / PLAN).is_file():
            plan = SweepPlan.read(folder)
            for r in plan.runs:
                if (folder / r.name / "config.yaml").is_file():
                    label = r.group if len(sweeps) == 1 else (f"{plan.name}: {r.group}" if r.group else plan.name)
                    out.append((label, folder / r.name))
        else:
            out.append(("", RunDir.open(folder).path))
    if not out:
        raise FileNotFoundError(f"no runs in {', '.join(paths)} (a sweep's runs appear once they start)")
    return out


def read_scalar(run: Path, tag: str) -> tuple[np.ndarray, np.ndarray]:
    """Steps and values of ``tag`` in the run's TensorBoard folder, each step once (the last value written)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    if not (run / "tb").is_dir():  # killed before it logged anything
        raise ValueError(f"--metric {tag!r}: {str(run)!r} has no TensorBoard events (no tb/ folder) yet")
    acc = EventAccumulator(str(run / "tb"), size_guidance={"scalars": 0})
    acc.Reload()
    tags = acc.Tags().get("scalars", [])
    if tag not in tags:
        raise ValueError(f"--metric {tag!r}: {str(run)!r} logged no such scalar; it has: {', '.join(sorted(tags)) or 'none'}")
    by_step = {int(e.step): float(e.value) for e in acc.Scalars(tag)}
    steps = np.array(sorted(by_step), dtype=np.int64)
    return steps, np.array([by_step[s] for s in steps])


def default_metric(runs: list[Path]) -> str:
    """The metric the runs keep their best model by (``best.json``), e.g. eval/objective_gap."""
    for run in runs:
        record = BestModel.record(RunDir(run))
        if record is not None:
            return str(record["metric"])
    raise ValueError("--metric: none given and no run has a best model to take it from; give a TensorBoard tag, "
                     "e.g. --metric eval/objective_gap")


def bootstrap_mean_interval(x: np.ndarray, rng: np.random.Generator) -> tuple[float, float]:
    """The percentile-bootstrap interval of the mean of ``x`` (runs x steps -> per step)."""
    n = x.shape[0]
    idx = rng.integers(0, n, size=(BOOTSTRAP_SAMPLES, n))
    means = x[idx].mean(axis=1)
    alpha = (1 - CONFIDENCE) / 2
    return np.quantile(means, alpha, axis=0), np.quantile(means, 1 - alpha, axis=0)


def interquartile_mean(x: np.ndarray) -> np.ndarray:
    """The mean of the middle 50% of runs per step (runs on axis 0), with fractional weights at the quartiles."""
    n = x.shape[0]
    s = np.sort(x, axis=0)
    lo, hi = 0.25 * n, 0.75 * n
    weights = np.clip(np.minimum(np.arange(1, n + 1), hi) - np.maximum(np.arange(n), lo), 0, None)
    return (weights[:, None] * s).sum(axis=0) / weights.sum()


def aggregate(curves: list[RunCurve], seed: int = 0) -> dict[str, Any]:
    """Per group: the steps every run of it logged, and mean, interval and IQM at each of them."""
    groups: dict[str, list[RunCurve]] = {}
    for c in curves:
        groups.setdefault(c.group, []).append(c)
    rng = np.random.default_rng(seed)
    out = {}
    for group, members in groups.items():
        common = members[0].steps
        for c in members[1:]:
            common = np.intersect1d(common, c.steps)
        if common.size == 0:
            raise ValueError(f"group {group or 'runs'!r}: its runs logged the metric at no common step "
                             f"({', '.join(str(c.path) for c in members)})")
        x = np.stack([c.values[np.searchsorted(c.steps, common)] for c in members])
        lo, hi = bootstrap_mean_interval(x, rng)
        out[group] = {"runs": [str(c.path) for c in members], "steps": common.tolist(), "mean": x.mean(0).tolist(),
                      "ci_low": np.asarray(lo).tolist(), "ci_high": np.asarray(hi).tolist(),
                      "iqm": interquartile_mean(x).tolist(), "per_run": x.tolist()}
    return out


def summary_table(metric: str, groups: dict[str, Any]) -> str:
    """Per group at the last step every run logged: mean of ``metric``, its interval, IQM, the extreme runs."""
    rows = []
    for group, g in groups.items():
        final = [v[-1] for v in g["per_run"]]
        rows.append([group or "runs", len(g["runs"]), g["steps"][-1], g["mean"][-1],
                     f"[{g['ci_low'][-1]:.4g}, {g['ci_high'][-1]:.4g}]", g["iqm"][-1], min(final), max(final)])
    return format_table(["group", "runs", "last common step", "mean", "95% bootstrap CI", "IQM",
                         "min run", "max run"], rows)


def plot_curves(path: Path, metric: str, groups: dict[str, Any], title: str) -> Path:
    from agents.common import plots  # matplotlib only when a figure is drawn

    plt = plots.plt
    fig, ax = plt.subplots(figsize=(7, 4))
    positive = all(v > 0 for g in groups.values() for run in g["per_run"] for v in run)
    for k, (group, g) in enumerate(groups.items()):
        color = f"C{k % 10}"
        steps = np.array(g["steps"])
        for run in g["per_run"]:
            ax.plot(steps, run, color=color, linewidth=0.6, alpha=0.35)
        label = f"{group or 'runs'} (mean of {len(g['runs'])}, 95% CI)"
        ax.plot(steps, g["mean"], color=color, linewidth=2.0, label=label)
        ax.fill_between(steps, g["ci_low"], g["ci_high"], color=color, alpha=0.2, linewidth=0)
    values = [v for g in groups.values() for run in g["per_run"] for v in run]
    if positive and values and max(values) / max(min(values), 1e-300) > 100:
        ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel(metric)
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    # below the axes, so that it never covers a curve
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=min(len(groups), 2), frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def curves_across_runs(paths: list[str], metric: str | None, out_dir: Path, title: str,
                       skip_missing: bool = False) -> dict[str, Any]:
    """Read, aggregate, tabulate and plot ``metric`` across the runs of ``paths``; JSON and PNG into ``out_dir``.
    ``skip_missing``: a run that has not logged the metric yet (stopped early) is left out and named, not an error."""
    members = expand(paths)
    metric = metric or default_metric([p for _, p in members])
    curves, skipped = [], []
    for group, run in members:
        try:
            steps, values = read_scalar(run, metric)
        except ValueError:
            if not skip_missing:
                raise
            skipped.append(str(run))
            continue
        finite = np.isfinite(values)
        curves.append(RunCurve(group, run, steps[finite], values[finite]))
    if not curves:
        raise ValueError(f"--metric {metric!r}: no run has logged it yet")
    groups = aggregate(curves)
    stem = slug(metric)
    (out_dir / "plots").mkdir(parents=True, exist_ok=True)
    png = plot_curves(out_dir / "plots" / f"curves-{stem}.png", metric, groups, title)
    table = summary_table(metric, groups)
    if skipped:
        table += f"\nleft out (no {metric} logged yet): {', '.join(skipped)}"
    result = {"metric": metric, "confidence": CONFIDENCE, "bootstrap_samples": BOOTSTRAP_SAMPLES, "groups": groups,
              "skipped": skipped}
    path = out_dir / f"curves-{stem}.json"
    text = json.dumps(result, indent=2, default=lambda v: None if isinstance(v, float) and not math.isfinite(v) else v)
    atomic_write(path, lambda f: f.write((text + "\n").encode()))
    return {"metric": metric, "table": table, "json": str(path), "plot": str(png), "groups": groups}
