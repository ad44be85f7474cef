"""The jobs behind the CLI verbs, callable from Python and tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch.utils.tensorboard import SummaryWriter

from envs import resolve_device

from .base import make_agent
from .config import CONTROL_FAMILY, ConfigError, RunConfig
from .evaluation import amortization_gap_curve, compare_with_solver, gym_episodes, public
from .heldout import heldout_contexts
from .plots import format_table, plot_gap_curve, plot_gap_histogram, plot_sphere_predictions
from .runs import DEFAULT_ROOT, RunDir


def start_run(config: RunConfig, name: str | None = None, root: str | Path = DEFAULT_ROOT) -> RunDir:
    run = RunDir.create(name or config.name or "run", root)
    run.save_config(config)
    return run


def train(config: RunConfig, name: str | None = None, root: str | Path = DEFAULT_ROOT) -> RunDir:
    """Create a run directory and train the configured agent into it."""
    run = start_run(config, name, root)
    print(f"run directory: {run.path}  (tensorboard --logdir {run.path})")
    make_agent(config, run).train(resume=False)
    return run


def resume(run_path: str | Path, overrides: list[str] | None = None, device: str | None = None) -> RunDir:
    """Continue a run from its latest checkpoint; overrides may extend e.g. train.total_steps."""
    run = RunDir.open(run_path)
    old = run.load_config()
    config = run.load_config(overrides)
    if device is not None:
        config.device = device
    for key in ("seed", "env", "problem", "agent"):
        if getattr(old, key) != getattr(config, key):
            raise ConfigError(f"{key}: cannot change on --resume (was {getattr(old, key)!r}); start a new run instead")
    run.save_config(config)
    print(f"resuming {run.path}")
    make_agent(config, run).train(resume=True)
    return run


def evaluate(run_path: str | Path, episodes: int | None = None, device: str | None = None,
             semi_amortized: list[int] | None = None, video: bool = False) -> dict[str, Any]:
    """Gymnasium episodes plus model-vs-solver on held-out contexts; writes eval.json and plots.

    Control runs: deterministic episodes of the policy and of pi + k Adam steps on Q for each k in
    ``semi_amortized``; ``video`` records one episode to an MP4."""
    run = RunDir.open(run_path)
    config = run.load_config()
    if device is not None:
        config.device = device
    agent = make_agent(config, run)
    dev = resolve_device(config.device)
    control = config.problem_family == CONTROL_FAMILY
    if not control and (semi_amortized or video):
        raise ValueError(f"{run.path}: --semi-amortized and --video apply to control runs (problem.family={CONTROL_FAMILY}), "
                         f"not to problem.family={config.problem_family!r}")
    if control:
        from .control_eval import evaluate_control

        result = evaluate_control(agent, episodes or config.eval.episodes, semi_amortized, video)
        result["plots"] = []
        return result
    if config.agent.kind == "rlqp_td3":  # a solver, not a context -> solution model
        from .rlqp_eval import evaluate_rlqp
        from .rlqp_td3 import RLQPTrainer

        policy = run.path / RLQPTrainer.policy_file
        if not policy.is_file():
            raise FileNotFoundError(f"{policy}: no trained policy in this run yet (train or --resume it to the end first)")
        return evaluate_rlqp(run, config, policy, episodes or config.eval.episodes, dev)
    if hasattr(agent, "load_accelerator"):  # a fixed-point accelerator: a solver, not a context -> solution model
        from .fixed_point import evaluate_fixed_point

        result = evaluate_fixed_point(agent, episodes or config.eval.episodes)
        result["plots"] = []
        return result
    if hasattr(agent, "load_optimizer"):  # a learned optimizer: judged by steps against tuned Adam
        from .l2o import evaluate_l2o

        result = evaluate_l2o(agent, episodes or config.eval.episodes)
        result["plots"] = []
        return result
    predictor = agent.load_predictor()
    episodes_result = gym_episodes(config, predictor, episodes or config.eval.episodes, dev)
    contexts = heldout_contexts(agent.problem, config, dev)
    comparison = compare_with_solver(agent.problem, predictor, contexts, config)
    result = {"run": run.name, "agent": config.agent.kind, "gymnasium": episodes_result, "vs_solver": public(comparison)}
    run.write_json("eval.json", result)
    plots = _plots(run, config, {config.agent.kind: comparison})
    result["plots"] = [str(p) for p in plots]
    return result


def _plots(run: RunDir, config: RunConfig, comparisons: dict[str, dict[str, Any]]) -> list[Path]:
    hist = {k: c["_gap"] for k, c in comparisons.items()}
    out = [plot_gap_histogram(run.plots / "objective_gap.png", hist, f"{config.env}: amortization gap on held-out contexts")]
    if config.problem_family == "sphere":
        preds = {k: c["_y_model"] for k, c in comparisons.items()}
        solver = next(iter(comparisons.values()))["_y_solver"]
        out.append(plot_sphere_predictions(run.plots / "sphere.png", preds, solver, "predictions vs solver optima (held-out)"))
    return out


def gap(run_path: str | Path, device: str | None = None) -> dict[str, Any]:
    """The amortization gap curve; writes gap.json, a PNG and TensorBoard scalars."""
    run = RunDir.open(run_path)
    config = run.load_config()
    if device is not None:
        config.device = device
    agent = make_agent(config, run)
    if config.problem_family == CONTROL_FAMILY:
        from .control_gap import control_gap

        return control_gap(agent)
    if hasattr(agent, "load_optimizer"):
        raise ValueError(f"{run.path}: `amortize gap` compares a model's one pass with solving f(y; x) from scratch; a learned "
                         "optimizer is itself an iterative solver: use `amortize bench l2o --checkpoint RUN` for its comparison with Adam")
    if hasattr(agent, "load_accelerator"):
        raise ValueError(f"{run.path}: `amortize gap` compares a model's one pass with solving f(y; x) from scratch; a fixed-point "
                         "accelerator is itself a solver: use `amortize bench fixed-point --checkpoint RUN` for its comparison with AA")
    result = amortization_gap_curve(agent.problem, agent.load_predictor(), config, resolve_device(config.device))
    run.write_json("gap.json", result)
    plot = plot_gap_curve(run.plots / "gap.png", result, f"{run.name}: solving from scratch vs the amortized model")
    with SummaryWriter(str(run.tensorboard / "gap")) as writer:
        for point in result["curve"]:
            writer.add_scalar("gap/solver_value_mean", point["value_mean"], point["iteration"])
            writer.add_scalar("gap/model_value_mean", result["model_value_mean"], point["iteration"])
    result["plot"] = str(plot)
    return result


def eval_table(result: dict[str, Any]) -> str:
    if "variants" in result:  # a control run
        rows = [[name, v["adam_steps"], v["episodes"], v["return_mean"], v["return_std"], v["length_mean"], v.get("critic_q_mean")]
                for name, v in result["variants"].items()]
        return format_table(["policy", "Adam steps on Q", "episodes", "return mean", "return std", "length", "critic Q mean"], rows)
    if "heldout" in result and "adam" in result["heldout"]:
        g, h = result["gymnasium"], result["heldout"]
        rows = [[name, g["return_mean"] if name == "learned" else "-", m["median_steps_to_target"], m["reached_target"],
                 m["diverged"], m["median_value_over_target_at_horizon"]] for name, m in (("learned", h["learned"]), ("adam", h["adam"]))]
        return format_table(["method", "episode return", "med steps to Adam@T", "reached", "diverged", "med f@T / Adam f@T"], rows)
    if "heldout" in result:
        g, h = result["gymnasium"], result["heldout"]
        rows = [[name, g["return_mean"] if name == "learned" else "-", m["median_evaluations_to_0.0001"],
                 m["median_evaluations_to_1e-06"], m["median_ratio_at_K"]] for name, m in (("learned", h["learned"]), ("anderson", h["anderson"]))]
        return format_table(["method", "episode return", "med evals 1e-4", "med evals 1e-6", "med ratio @K"], rows)
    if "vs_osqp" in result:
        from .rlqp_eval import rlqp_eval_table

        return rlqp_eval_table(result)
    c, g = result["vs_solver"], result["gymnasium"]
    rows = [
        [result["agent"], g["return_mean"], c["model_objective_mean"], c["solver_objective_mean"], c["gap_mean"],
         c["gap_median"], c["within_1e-2"], c["model_seconds"], c["solver_seconds"], c["speedup"]],
    ]
    return format_table(
        ["agent", "return", "f(model)", "f(solver)", "gap mean", "gap median", "frac<=1e-2", "model s", "solver s", "speedup"],
        rows,
    )


