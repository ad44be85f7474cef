"""PNG figures of runs and benchmarks (matplotlib, no display needed)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

MAX_POINTS = 20






def plot_gap_histogram(path: Path, gaps: dict[str, np.ndarray], title: str) -> Path:
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for label, g in gaps.items():  # outlines: filled histograms on one axis blend into each other
        ax.hist(np.clip(g, 1e-6, None), bins=np.logspace(-6, 1, 40), histtype="step", linewidth=1.6, label=label)
    ax.set_xscale("log")
    ax.set_xlabel("f(model) - f(solver)  (clipped at 1e-6)")
    ax.set_ylabel("contexts")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_gap_curve(path: Path, gap: dict[str, Any], title: str) -> Path:
    """Solver value vs iterations and vs seconds, the model as a dashed line."""
    curve = gap["curve"]
    it = [p["iteration"] for p in curve]
    sec = [p["seconds"] for p in curve]
    mean = np.array([p["value_mean"] for p in curve])
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
    for ax, xs, xlabel in ((axes[0], it, "solver iterations"), (axes[1], sec, "seconds")):
        ax.plot(xs, mean, label="solver (multi-start Adam)")
        ax.axhline(gap["model_value_mean"], ls="--", color="k", label="amortized model")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("mean objective")
    axes[1].set_xscale("log")  # the model's one pass and the solver's seconds lie orders of magnitude apart
    axes[1].axvline(gap["model_seconds"], ls=":", color="gray", label="the model's time")
    return save_with_legend_below(fig, axes[1], path, title, fontsize=8, bottom=0.08)


def save_with_legend_below(fig, ax, path: Path, title: str, fontsize: int = 8, bottom: float = 0.1) -> Path:
    """``ax``'s legend below the axes (never over the curves), the title on top; saved and closed."""
    handles, labels = ax.get_legend_handles_labels()
    fig.legend(handles, labels, fontsize=fontsize, loc="lower center", ncol=3)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, bottom, 1, 1))
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path




def plot_grouped_bars(path: Path, groups: list[str], series: dict[str, list[float]], ylabel: str, title: str,
                      labels: dict[str, list[str]] | None = None) -> Path:
    """One bar per series in each group (e.g. iterations of two solvers per problem class); ``labels``: a text
    above each bar (e.g. its solved count), per series."""
    fig, ax = plt.subplots(figsize=(max(6.0, 0.9 * len(groups) + 2), 4.5))
    width = 0.8 / max(len(series), 1)
    x = np.arange(len(groups))
    for k, (label, values) in enumerate(series.items()):
        bars = ax.bar(x + (k - (len(series) - 1) / 2) * width, values, width, label=label)
        if labels and label in labels:
            ax.bar_label(bars, labels[label], fontsize=6, rotation=90, padding=2)
    ax.set_xticks(x, groups, rotation=30, ha="right")
    ax.set_ylabel(ylabel)
    ax.set_yscale("log")
    top = max((v for values in series.values() for v in values if v == v and v > 0), default=1.0)
    ax.set_ylim(top=top * (2.0 if labels else 1.3))  # room for the labels above the tallest bar
    ax.set_title(title, fontsize=10)
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_quantile_curves(path: Path, curves: dict[str, torch.Tensor], marker_step: int, marker_label: str, title: str,
                         xlabel: str, ylabel: str, hlines: Sequence[float] = ()) -> Path:
    """Median (line) and quartiles (band) over rows of each (rows, steps + 1) curve against the step, log scale."""
    fig, ax = plt.subplots(figsize=(9, 4.5))
    for label, r in curves.items():
        logs = torch.log10(r.double().clamp(min=1e-30)).nan_to_num(nan=np.inf).cpu()
        q = torch.quantile(logs.clamp(max=10), torch.tensor([0.25, 0.5, 0.75], dtype=torch.float64), dim=0).numpy()
        steps = np.arange(logs.shape[1])
        (line,) = ax.plot(steps, 10 ** q[1], label=label, lw=1.6)
        ax.fill_between(steps, 10 ** q[0], 10 ** q[2], color=line.get_color(), alpha=0.15)
    ax.axvline(marker_step, color="0.4", ls=":", lw=1, label=marker_label)
    for level in hlines:
        ax.axhline(level, color="0.7", ls="--", lw=0.8)
    ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # beside the axes: many curves, no data hidden
    ax.grid(True, alpha=0.3, which="both")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_residual_curves(path: Path, ratios: dict[str, torch.Tensor], trained_steps: int, title: str) -> Path:
    """Residual ratio against the iteration for fixed-point methods, with the 1e-4 and 1e-6 levels."""
    return plot_quantile_curves(path, ratios, trained_steps, f"K = {trained_steps} (trained horizon)", title,
                                "iteration (map evaluations)", "||R(y_k)|| / ||R(y_default)||", (1e-4, 1e-6))
