"""Plots of the sphere domain: predictions against solver optima on the sphere's surface."""

from __future__ import annotations

from pathlib import Path

import matplotlib

from agents.common.plots import MAX_POINTS

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402


def _lon_lat(p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    p = p / np.linalg.norm(p, axis=-1, keepdims=True)
    return np.arctan2(p[:, 1], p[:, 0]), np.arcsin(np.clip(p[:, 2], -1, 1))


def plot_sphere_predictions(path: Path, predictions: dict[str, torch.Tensor], solver: torch.Tensor, title: str) -> Path:
    """Mollweide map: solver optima (stars) and each model's prediction, joined per context."""
    fig = plt.figure(figsize=(8, 4.5))
    ax = fig.add_subplot(111, projection="mollweide")
    s_lon, s_lat = _lon_lat(solver[:MAX_POINTS].cpu().numpy())
    ax.scatter(s_lon, s_lat, marker="*", s=90, color="#aa0000", label="solver optimum", zorder=3)
    for (label, pred), color in zip(predictions.items(), ["#1f77b4", "#2ca02c", "#9467bd", "#ff7f0e"]):
        lon, lat = _lon_lat(pred[:MAX_POINTS].cpu().numpy())
        ax.scatter(lon, lat, s=18, color=color, label=label, zorder=2)
        for a, b, c, d in zip(lon, lat, s_lon, s_lat):
            if abs(a - c) < np.pi:  # skip segments that wrap around the map
                ax.plot([a, c], [b, d], color=color, lw=0.6, alpha=0.5)
    ax.grid(True, alpha=0.3)
    ax.set_xticklabels([])
    fig.suptitle(title, fontsize=11)
    fig.legend(loc="lower center", ncol=4, fontsize=9, frameon=False)
    fig.subplots_adjust(left=0.03, right=0.97, top=0.9, bottom=0.12)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
