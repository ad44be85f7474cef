"""The OT benchmark's figure: one held-out pair, its converged plan beside the plan of each predicted potential,
and the median marginal violation against Sinkhorn iterations for every start."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import torch

from agents.common.plots import plt
from learned_optimizers.ot import sinkhorn as sk
from learned_optimizers.ot.problem import OTPotentialProblem


def plot_ot_bench(path: Path, problem: OTPotentialProblem, x: torch.Tensor,
                  starts: dict[str, Callable[[torch.Tensor], torch.Tensor] | None], title: str) -> Path:
    pairs, k = problem.pairs, problem.settings.grid
    a, b = pairs.split(x.double())
    kernel, eps, cost = pairs.kernel_on(a), pairs.epsilon, pairs.cost_on(a)
    learned = {label: p for label, p in starts.items() if p is not None}
    converged = sk.sinkhorn(a[:1], b[:1], kernel, eps, tol=1e-9, max_iterations=20_000, validate=False)
    panels = 3 + len(learned)
    fig, axes = plt.subplots(1, panels, figsize=(3.1 * panels, 3.4))
    axes[0].imshow(np.concatenate([a[0].view(k, k).cpu().numpy(), b[0].view(k, k).cpu().numpy()], 1), cmap="magma")
    axes[0].set_title("pair 0: a | b", fontsize=9)
    plan = sk.plan(converged, cost)[0].cpu().numpy()
    vmax = float(plan.max())
    axes[1].imshow(plan, cmap="viridis", vmin=0, vmax=vmax)
    axes[1].set_title("converged plan", fontsize=9)
    for ax, (label, predictor) in zip(axes[2:], learned.items()):
        with torch.no_grad():
            f = predictor(x[:1]).double()
        u = f / eps  # the predicted potential's plan: u from the model, v its c-transform
        v = sk.update_v(kernel, u, torch.log(b[:1]))
        predicted = torch.exp(-cost / eps + u.unsqueeze(-1) + v.unsqueeze(-2))[0].cpu().numpy()
        ax.imshow(predicted, cmap="viridis", vmin=0, vmax=vmax)
        ax.set_title(f"plan of the prediction\n{label[:28]}", fontsize=8)
    for ax in axes[1:-1]:
        ax.set_xlabel("target point j")
        ax.set_ylabel("source point i")
    for ax in axes[:-1]:
        ax.set_xticks([])
        ax.set_yticks([])
    curves = axes[-1]
    for label, predictor in starts.items():
        u0 = None
        if predictor is not None:
            with torch.no_grad():
                u0 = predictor(x).double() / eps
        result = sk.sinkhorn(a, b, kernel, eps, tol=1e-6, max_iterations=2_000, u0=u0, validate=False)
        errors = result.errors_at_checks.clone()
        last = torch.where(torch.isfinite(errors), errors, torch.nan)  # a stopped pair drops out of the median
        median = torch.nanmedian(last, dim=0).values.cpu().numpy()
        its = np.arange(errors.shape[1]) * result.check_every + 1
        curves.semilogy(its, median, label=f"{label[:24]} start", linewidth=1.6)
    for tol in (1e-3, 1e-6):
        curves.axhline(tol, color="grey", linewidth=0.8, linestyle=":")
    curves.set_xlabel("Sinkhorn iterations")
    curves.set_ylabel("median marginal violation")
    curves.legend(fontsize=7, loc="upper right")
    curves.set_title("our Sinkhorn, held-out pairs", fontsize=9)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
