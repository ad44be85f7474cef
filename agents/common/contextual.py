"""``amortize eval`` and ``amortize gap`` for amortized models of any ``ContextualProblem`` family.

The model is judged against multi-start Adam on held-out contexts: the gap in
objective and the time of its one batched forward pass against the solver's.
A domain of that shape (the sphere) gets its ``Domain`` from
``contextual_domain``, adding only its own picture of the predictions.
"""

from __future__ import annotations

import textwrap

from pathlib import Path
from typing import Any, Callable

import torch
from torch.utils.tensorboard import SummaryWriter

from agents.common.agent import Agent
from agents.common.amortizers import ObjectiveAmortizer, RegressionAmortizer
from agents.common.config import (
    OFF_POLICY_ALGORITHMS,
    ObjectiveAgentSettings,
    OffPolicyAgentSettings,
    PPOAgentSettings,
    RegressionAgentSettings,
    RunConfig,
)
from agents.common.domain import BenchCommand, Domain, DomainRuns
from agents.common.evaluation import amortization_gap_curve, compare_with_solver, gym_episodes, public
from agents.common.heldout import heldout_contexts
from agents.common.plots import plot_gap_curve, plot_gap_histogram
from agents.common.runs import RunDir
from agents.common.sb3 import SB3Agent
from agents.common.tables import format_table, share_of

#: (path, {label: predictions}, solver optima, title) -> the written PNG
PredictionPlot = Callable[[Path, dict[str, torch.Tensor], torch.Tensor, str], Path]


def evaluate(agent: Agent, episodes: int, plot_predictions: PredictionPlot | None = None) -> dict[str, Any]:
    """Gymnasium episodes plus model-vs-solver on held-out contexts; writes eval.json, the gap histogram and,
    where the domain draws one, its picture of the predictions against the solver's optima."""
    config, run = agent.config, agent.run
    predictor = agent.load_predictor()
    episodes_result = gym_episodes(config, predictor, episodes, agent.device)
    contexts = heldout_contexts(agent.problem, config, agent.device)
    comparison = compare_with_solver(agent.problem, predictor, contexts, config)
    result = {"run": run.name, "agent": config.agent.kind, "gymnasium": episodes_result, "vs_solver": public(comparison)}
    run.write_json("eval.json", result)
    hist = {config.agent.kind: comparison["_gap"]}
    plots = [plot_gap_histogram(run.plot_path("objective_gap.png"), hist, f"{config.env}: amortization gap on held-out contexts")]
    if plot_predictions is not None:
        plots.append(plot_predictions(run.plot_path(f"{agent.problem.family}.png"), {config.agent.kind: comparison["_y_model"]},
                                      comparison["_y_solver"], "predictions vs solver optima (held-out)"))
    result["plots"] = [str(p) for p in plots]
    return result


def eval_table(result: dict[str, Any]) -> str:
    c, g = result["vs_solver"], result["gymnasium"]
    rows = [
        [result["agent"], g["return_mean"], c["model_objective_mean"], c["solver_objective_mean"], c["gap_mean"],
         c["gap_median"], share_of(c["within_1e-2"], c["contexts"]), c["model_seconds"], c["solver_seconds"],
         c["speedup"]],
    ]
    table = format_table(
        ["agent", "return", "f(model)", "f(solver)", "gap mean", "gap median", "gap<=1e-2", "model s", "solver s",
         "solver s / model s"], rows)
    return table + "\n" + textwrap.fill(
        "gap<=1e-2: held-out contexts within 1e-2 of the solver. solver s: the solver's whole budget (restarts x "
        "steps) on the held-out contexts; `amortize gap` reports instead the time the solver needs from scratch to "
        "match the model, a smaller ratio", 110)


def gap(agent: Agent) -> dict[str, Any]:
    """The amortization gap curve; writes gap.json, a PNG and TensorBoard scalars."""
    run = agent.run
    result = amortization_gap_curve(agent.problem, agent.load_predictor(), agent.config, agent.device)
    run.write_json("gap.json", result)
    plot = plot_gap_curve(run.plot_path("gap.png"), result, f"{run.name}: solving from scratch vs the amortized model")
    with SummaryWriter(str(run.tensorboard / "gap")) as writer:
        for point in result["curve"]:
            writer.add_scalar("gap/solver_value_mean", point["value_mean"], point["iteration"])
            writer.add_scalar("gap/model_value_mean", result["model_value_mean"], point["iteration"])
    result["plot"] = str(plot)
    return result


def gap_report(r: dict[str, Any]) -> str:
    lines = [f"model: mean objective {r['model_value_mean']:.5g} in {r['model_seconds'] * 1e3:.3f} ms for {r['contexts']} contexts",
             f"solver from scratch: final mean objective {r['solver_final_value_mean']:.5g}"]
    if r["solver_iterations_to_match"] is None:
        lines.append("solver never reached the model's mean objective within its budget")
    else:
        lines.append(f"solver needs {r['solver_iterations_to_match']} iterations, {r['solver_seconds_to_match']:.4f}s, "
                     f"to match the model: {r['speedup_to_match']:.1f}x the model's time (`amortize eval` reports "
                     "the solver's whole budget over the model's time instead)")
    return "\n".join(lines)


def make_contextual_agent(config: RunConfig, run: RunDir) -> Agent:
    """The agent of a one-step ``ContextualProblem`` run: L_obj, L_reg, or an SB3 algorithm on its env."""
    if config.agent.kind == "objective":
        return ObjectiveAmortizer(config, run)
    if config.agent.kind == "regression":
        return RegressionAmortizer(config, run)
    return SB3Agent(config, run)


def contextual_agent_kinds(objective: str, regression: str, env: str = "") -> dict[str, tuple[type, str]]:
    """The agent kinds of such a family, with the domain's words for its two gradient losses."""
    return {
        "objective": (ObjectiveAgentSettings, objective),
        "regression": (RegressionAgentSettings, regression),
        **{k: (OffPolicyAgentSettings, f"L^RL: stable-baselines3 {k.upper()}{env}") for k in OFF_POLICY_ALGORITHMS},
        "ppo": (PPOAgentSettings, f"L^RL: stable-baselines3 PPO{env}"),
    }


def contextual_domain(runs: DomainRuns, plot_predictions: PredictionPlot | None = None,
                      benches: tuple[BenchCommand, ...] = ()) -> Domain:
    """The ``Domain`` of a one-step ``ContextualProblem`` family: eval and gap against multi-start Adam."""

    def evaluate_run(agent: Agent, episodes: int) -> dict[str, Any]:
        return evaluate(agent, episodes, plot_predictions)

    return Domain(runs=runs, evaluate=evaluate_run, eval_table=eval_table, gap=gap, gap_report=gap_report,
                  benches=benches)
