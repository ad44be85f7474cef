"""Plots of the control domain: the amortization gap of an actor on max_u Q."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from agents.common.plots import save_with_legend_below  # noqa: E402


def plot_control_gap(path: Path, gap: dict[str, Any], title: str) -> Path:
    """Adam's normalized max-Q value vs iterations and vs seconds (log), the policy dashed at 0.

    Clamped at 0 (the tutorial's measure): mean +- std over states. Unclamped: the
    median, since per-state ratios explode where Q(pi) barely beats Q(0)."""
    curve = gap["curve"]
    it = np.array([p["iteration"] for p in curve])
    sec = np.array([p["seconds"] for p in curve])
    mean = np.array([p["value_mean"] for p in curve])
    std = np.array([p["value_std"] for p in curve])
    median_unclamped = np.array([p["value_median_unclamped"] for p in curve])
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, xs, xlabel in ((axes[0], it, "Adam iterations"), (axes[1], sec, "seconds")):
        line, = ax.plot(xs, mean, label="Adam, clamped at 0: mean +- std")
        ax.fill_between(xs, np.maximum(mean - std, -1.0), mean + std, color=line.get_color(), alpha=0.2)
        ax.plot(xs, median_unclamped, ":", color="tab:orange", label="Adam, unclamped: median")
        ax.axhline(0.0, ls="--", color="k", label="policy (one forward pass)")
        ax.axhline(-1.0, ls=":", color="gray", label="zero action")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("normalized Q value")
        ax.set_ylim(-1.1, max(0.3, float(np.nanmax(median_unclamped)) + 0.2))
    axes[1].set_xscale("log")
    axes[1].axvline(gap["policy_seconds"], ls="--", color="tab:red", label="the policy's time")
    if gap.get("seconds_to_policy"):
        axes[1].axvline(gap["seconds_to_policy"], ls="-.", color="tab:green", label=f"Adam reaches {gap['reach_level']}")
    return save_with_legend_below(fig, axes[1], path, title, fontsize=7, bottom=0.12)


def plot_gap_across_training(path: Path, result: dict[str, Any], title: str) -> Path:
    """Per snapshot: where Adam ends against the actor (unclamped, 0 = the actor) and how long it takes to match it."""
    points = [p for p in result["snapshots"] if "skipped" not in p]
    steps = np.array([p["step"] for p in points])
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    ax = axes[0]
    ax.plot(steps, [p["final_value_median_unclamped"] for p in points], "o-", label="Adam after all iterations: median")
    ax.plot(steps, [p["final_value_of_means_unclamped"] for p in points], "s--", label="Adam: of the mean Qs")
    ax.axhline(0.0, ls="--", color="k", label="the actor (one forward pass)")
    ax.set_xlabel("training step")
    ax.set_ylabel("normalized Q value (unclamped)")
    ax.legend(fontsize=7, loc="best", framealpha=0.6)
    ax = axes[1]
    reached = [p for p in points if p["speedup"] is not None]
    ax.plot([p["step"] for p in reached], [p["speedup"] for p in reached], "o-", color="tab:green")
    ax.set_xlabel("training step")
    ax.set_ylabel(f"speedup (Adam to {result['reach_level']} / actor)")
    ax.set_yscale("log")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
