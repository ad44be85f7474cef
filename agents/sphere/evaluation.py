"""``amortize eval`` and ``amortize gap`` for amortized models of a ``ContextualProblem`` (the sphere domain).

The model is judged against multi-start Adam on held-out contexts: the gap in
objective and the time of its one batched forward pass against the solver's.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch.utils.tensorboard import SummaryWriter

from agents.common.agent import Agent
from agents.common.evaluation import amortization_gap_curve, compare_with_solver, gym_episodes, public
from agents.common.heldout import heldout_contexts
from agents.common.plots import format_table, plot_gap_curve, plot_gap_histogram
from agents.sphere.plots import plot_sphere_predictions


def evaluate(agent: Agent, episodes: int) -> dict[str, Any]:
    """Gymnasium episodes plus model-vs-solver on held-out contexts; writes eval.json and plots."""
    config, run = agent.config, agent.run
    predictor = agent.load_predictor()
    episodes_result = gym_episodes(config, predictor, episodes, agent.device)
    contexts = heldout_contexts(agent.problem, config, agent.device)
    comparison = compare_with_solver(agent.problem, predictor, contexts, config)
    result = {"run": run.name, "agent": config.agent.kind, "gymnasium": episodes_result, "vs_solver": public(comparison)}
    run.write_json("eval.json", result)
    hist = {config.agent.kind: comparison["_gap"]}
    plots = [plot_gap_histogram(run.plots / "objective_gap.png", hist, f"{config.env}: amortization gap on held-out contexts"),
             plot_sphere_predictions(run.plots / "sphere.png", {config.agent.kind: comparison["_y_model"]},
                                     comparison["_y_solver"], "predictions vs solver optima (held-out)")]
    result["plots"] = [str(p) for p in plots]
    return result


def eval_table(result: dict[str, Any]) -> str:
    c, g = result["vs_solver"], result["gymnasium"]
    rows = [
        [result["agent"], g["return_mean"], c["model_objective_mean"], c["solver_objective_mean"], c["gap_mean"],
         c["gap_median"], c["within_1e-2"], c["model_seconds"], c["solver_seconds"], c["speedup"]],
    ]
    return format_table(
        ["agent", "return", "f(model)", "f(solver)", "gap mean", "gap median", "frac<=1e-2", "model s", "solver s", "speedup"],
        rows,
    )


def gap(agent: Agent) -> dict[str, Any]:
    """The amortization gap curve; writes gap.json, a PNG and TensorBoard scalars."""
    run = agent.run
    result = amortization_gap_curve(agent.problem, agent.load_predictor(), agent.config, agent.device)
    run.write_json("gap.json", result)
    plot = plot_gap_curve(run.plots / "gap.png", result, f"{run.name}: solving from scratch vs the amortized model")
    with SummaryWriter(str(run.tensorboard / "gap")) as writer:
        for point in result["curve"]:
            writer.add_scalar("gap/solver_value_mean", point["value_mean"], point["iteration"])
            writer.add_scalar("gap/model_value_mean", result["model_value_mean"], point["iteration"])
    result["plot"] = str(plot)
    result["json"] = str(Path(run.path) / "gap.json")
    return result


def gap_report(r: dict[str, Any]) -> str:
    lines = [f"model: mean objective {r['model_value_mean']:.5g} in {r['model_seconds'] * 1e3:.3f} ms for {r['contexts']} contexts",
             f"solver from scratch: final mean objective {r['solver_final_value_mean']:.5g}"]
    if r["solver_iterations_to_match"] is None:
        lines.append("solver never reached the model's mean objective within its budget")
    else:
        lines.append(f"solver needs {r['solver_iterations_to_match']} iterations, {r['solver_seconds_to_match']:.4f}s, "
                     f"to match the model: {r['speedup_to_match']:.1f}x the model's time")
    return "\n".join(lines)
