"""Agents on ``amortize/FixedPoint-v0``: three losses, one environment.

* ``fp_objective`` (NeuralFP): unroll the env's iteration K steps from the
  learned initial iterate and backpropagate the summed residuals.
* ``fp_regression`` (HyperAnderson): the same unroll, loss = distance of every
  iterate (the initial one included) to y*(x) from a converged solve.
* ``sac`` / ``td3`` / ``ddpg``: stable-baselines3 on the env's actions through
  the project's one adapter (``FixedPointSB3Agent``).

Every run evaluates on held-out contexts (``eval.seed``) in float64 against
Anderson acceleration measured in the same call, and logs residual-vs-iteration
curves to TensorBoard.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any, Callable

import torch
from torch.utils.tensorboard import SummaryWriter

from agents.common.agent import Agent, Predictor
from agents.common.amortizers import set_learning_rate
from agents.common.checkpointing import begin_training, cached_labels, training_state
from agents.common.evaluation import policy_episodes
from agents.common.progress import Progress
from agents.common.sb3 import SB3Agent, deterministic_actions
from agents.common.best import BestModel
from agents.common.schedule import TrainSchedule
from agents.common.seeding import generator
from agents.common.statistics import reach_statistics
from learned_optimizers.common.fixed_point_map import FixedPointMap, FixedPointTaskSettings
from learned_optimizers.fixed_point import core as fp
from learned_optimizers.fixed_point.neural_fp import FixedPointAccelerator

#: held-out contexts evaluated during training (the full eval.contexts at the end)
HELDOUT_DURING_TRAINING = 256
#: the two tolerances every report uses
TOLERANCES = (1e-4, 1e-6)


@dataclass
class LearnedAccelerator:
    """What a trained run deploys: an optional initializer and a policy (observation -> action)."""

    policy: fp.Policy
    initializer: Callable[[torch.Tensor], torch.Tensor | None] | None = None

    @torch.no_grad()
    def solve(self, fp_map: FixedPointMap, x: torch.Tensor, steps: int, safeguard: float | None = None) -> fp.FixedPointTrace:
        y0 = self.initializer(x) if self.initializer is not None else None
        return fp.solve(fp_map, x, fp_map.settings, steps, policy=self.policy, y0=y0, safeguard=safeguard)


#: the seed of the benchmarks' held-out contexts (``amortize bench fixed-point``, the fixed-point speed rows)
HELDOUT_SEED = 1_000_003


def heldout_fixed_point_contexts(fp_map: FixedPointMap, seed: int, n: int, device: torch.device) -> torch.Tensor:
    """Held-out contexts in float64 (so AA's and the learner's tails are not float32 noise)."""
    return fp_map.sample_heldout_contexts(n, generator(seed, device), device).double()


def anderson_settings(fp_map: FixedPointMap) -> FixedPointTaskSettings:
    """The map's task with the zero action meaning Anderson acceleration: the reference of every report."""
    return replace(fp_map.settings, mode="hyper_aa")


def trace_metrics(trace: fp.FixedPointTrace, steps: int) -> dict[str, float]:
    """Per tolerance: median and shifted geometric mean (shift 10) of the map evaluations to reach it
    (unreached counted at the trace's length) and the fraction reaching it; the median ratio after ``steps``."""
    out: dict[str, float] = {}
    budget = float(trace.ratios.shape[1] - 1)
    for tol in TOLERANCES:
        stats = reach_statistics(trace.evaluations_to(tol), budget)
        out[f"median_evaluations_to_{tol:g}"], out[f"sgm_evaluations_to_{tol:g}"], out[f"reached_{tol:g}"] = stats
    ratio = trace.ratios[:, min(steps, trace.ratios.shape[1] - 1)]
    out["median_ratio_at_K"] = float(ratio.median())
    return out


#: the quartiles a curve is logged at, as the last part of its tags
QUARTILE_TAGS = ("q25", "median", "q75")


def log_curves(writer: SummaryWriter, tag: str, trace: fp.FixedPointTrace) -> None:
    """Median and quartiles of log10 residual ratio against the iteration, as TensorBoard scalars."""
    logs = torch.log10(trace.ratios.clamp(min=1e-30)).nan_to_num(nan=math.inf)
    q = torch.quantile(logs.float(), torch.tensor([0.25, 0.5, 0.75], dtype=torch.float32, device=logs.device), dim=0)
    for k in range(logs.shape[1]):
        for i, name in enumerate(QUARTILE_TAGS):  # plain tags: add_scalars would make a TensorBoard run of each
            writer.add_scalar(f"residual_vs_iteration/{tag}/{name}", q[i, k].item(), k)


#: what keeps a fixed-point run's best model: fewer map evaluations to a residual of 1e-4
BEST_METRIC = "eval/median_evaluations_to_0.0001"


class FixedPointUnrollAgent(Agent):
    """The training loop shared by the two gradient losses; subclasses define ``loss``."""

    model_file = "accelerator.pt"

    def build(self) -> None:
        agent = self.config.agent
        self.env = self.make_vector_env(agent.batch_size)
        self.fp_map: FixedPointMap = self.problem  # the map family, built from the config by ``Agent``
        self.model = FixedPointAccelerator(self.config.problem_family, self.config.problem_kwargs(), agent.hidden_sizes,
                                           agent.activation, agent.learn_init).to(self.device)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=agent.learning_rate)

    def prepare(self, resume: bool) -> None:
        """Work done once before the loop (labelling a dataset)."""

    def unroll(self) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """The model's iterations from the env's current contexts, differentiable."""
        y0 = self.model.initial_iterate(self.env.contexts)
        return self.env.rollout(self.model.act, y0)

    def loss(self) -> torch.Tensor:
        raise NotImplementedError

    def train(self, resume: bool = False) -> None:
        cfg, run = self.config, self.run
        step = begin_training(self, resume)
        self.prepare(resume)
        K = self.fp_map.settings.max_steps
        heldout = heldout_fixed_point_contexts(self.fp_map, cfg.eval.seed, min(HELDOUT_DURING_TRAINING, cfg.eval.contexts), self.device)
        aa = fp.solve(self.fp_map, heldout, anderson_settings(self.fp_map), K)
        aa_metrics = trace_metrics(aa, K)
        total = cfg.train.total_steps
        writer = run.tensorboard_writer(resumed_from=step)
        schedule = TrainSchedule.from_settings(cfg.train)
        best = BestModel(run, BEST_METRIC, "min")
        progress = Progress(total, initial=step, desc=f"{run.name} {cfg.agent.kind}")
        try:
            while step < total:
                self.env.reset()  # fresh contexts from the env's seeded generator
                self.model.train()
                set_learning_rate(self.optimizer, cfg.agent, step, total)
                loss = self.loss()
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if not torch.isfinite(loss):
                    raise FloatingPointError(f"step {step}: the {cfg.agent.kind} loss is {loss.item()}; lower agent.learning_rate")
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.agent.grad_clip)
                self.optimizer.step()
                step += 1
                due = schedule.at(step)
                if due.log:
                    writer.add_scalar("train/loss", loss.item(), step)
                    progress.update(0, loss=loss.item())
                if due.evaluate:
                    metrics = trace_metrics(self.model.solve(heldout, K), K)
                    for key, value in metrics.items():
                        writer.add_scalar(f"eval/{key}", value, step)
                        writer.add_scalar(f"eval_anderson/{key}", aa_metrics[key], step)
                    progress.update(0, evals_to_1e4=metrics["median_evaluations_to_0.0001"],
                                    anderson=aa_metrics["median_evaluations_to_0.0001"])
                    best.offer({f"eval/{k}": v for k, v in metrics.items()}, step, self.save_model)
                if due.checkpoint:
                    self.checkpoint(step)
                progress.update(1)
                if due.stop:
                    break
            self.model.eval()
            log_curves(writer, "learned", self.model.solve(heldout, 2 * K))
            log_curves(writer, "anderson", fp.solve(self.fp_map, heldout, anderson_settings(self.fp_map), 2 * K))
        finally:
            progress.close()
            writer.close()
        self.save_model(run.path)

    def save_model(self, directory) -> None:
        self.model.save(directory / self.model_file)

    def checkpoint(self, step: int) -> None:
        self.run.save_checkpoint(training_state(step, self.model, self.optimizer, self.env))
        self.save_model(self.run.checkpoints)  # what `--checkpoint latest` reads

    def load_accelerator(self) -> LearnedAccelerator:
        path = self.model_dir / self.model_file
        if not path.is_file():
            raise FileNotFoundError(f"{str(path)!r} is missing: the run has not finished training")
        model = FixedPointAccelerator.load(path, self.device).eval()
        return LearnedAccelerator(model.act, model.initial_iterate)

    def load_predictor(self) -> Predictor:
        """y_theta(x): the iterate after K learned steps (the amortized solution)."""
        acc, fp_map = self.load_accelerator(), self.problem
        return lambda x: acc.solve(fp_map, x, fp_map.settings.max_steps).y


class FixedPointObjectiveAgent(FixedPointUnrollAgent):
    """NeuralFP: minimize the residuals along the unroll (their sum, or the mean of their logs)."""

    def loss(self) -> torch.Tensor:
        ratios, _ = self.unroll()
        if self.config.agent.loss == "ratio":
            return ratios.sum(1).mean()
        return torch.log10(ratios.clamp(min=1e-12)).mean()


class FixedPointRegressionAgent(FixedPointUnrollAgent):
    """HyperAnderson: distance of every iterate to y*(x), relative to the classical start's distance."""

    def prepare(self, resume: bool) -> None:
        n = self.config.agent.dataset_size
        self.x_train, self.y_train = cached_labels(
            self.run.checkpoints / "fixed_point_dataset.pt", self.device,
            lambda: self.fp_map.sample_contexts(n, generator(self.config.seed + 1, self.device), self.device),
            lambda x: fp.converged_solution(self.fp_map, x, self.fp_map.settings))
        self.batch_gen = generator(self.config.seed + 2, self.device)

    def loss(self) -> torch.Tensor:
        idx = torch.randint(0, self.x_train.shape[0], (self.config.agent.batch_size,), generator=self.batch_gen, device=self.device)
        x, target = self.x_train[idx], self.y_train[idx]
        self.env.reset(options={"contexts": x})
        _, iterates = self.unroll()
        scale = (self.fp_map.initial_iterate(x) - target).norm(dim=1).clamp(min=1e-8)
        distances = torch.stack([(y - target).norm(dim=1) / scale for y in iterates], 1)
        return distances.mean()


class FixedPointSB3Agent(SB3Agent):
    """SB3 on the fixed-point env; held-out metric: median map evaluations to 1e-4 (AA's alongside)."""

    best_metric = (BEST_METRIC, "min")

    def make_heldout(self) -> Any:
        fp_map = self.problem
        x = heldout_fixed_point_contexts(fp_map, self.config.eval.seed, min(HELDOUT_DURING_TRAINING, self.config.eval.contexts), self.device)
        K = fp_map.settings.max_steps
        return fp_map, x, trace_metrics(fp.solve(fp_map, x, anderson_settings(fp_map), K), K)

    def heldout_metrics(self, model, heldout) -> dict[str, float]:
        fp_map, x, aa = heldout
        K = fp_map.settings.max_steps
        acc = LearnedAccelerator(sb3_policy(model))
        ours = trace_metrics(acc.solve(fp_map, x, K), K)
        return {**{f"eval/{k}": v for k, v in ours.items()}, **{f"eval_anderson/{k}": v for k, v in aa.items()}}

    def load_accelerator(self) -> LearnedAccelerator:
        return LearnedAccelerator(sb3_policy(self.load_model()))

    def load_predictor(self) -> Predictor:
        acc, fp_map = self.load_accelerator(), self.problem
        return lambda x: acc.solve(fp_map, x, fp_map.settings.max_steps).y


def sb3_policy(model) -> fp.Policy:
    """An SB3 policy's deterministic action as a batched torch function, in the env's action units."""
    return lambda obs: deterministic_actions(model, obs)


@torch.no_grad()
def evaluate_fixed_point(agent: Agent, episodes: int) -> dict[str, Any]:
    """``amortize eval`` for a fixed-point run: Gymnasium episodes, then held-out contexts against AA."""
    config = agent.config
    fp_map = agent.problem
    acc = agent.load_accelerator()

    def learned_start(env: Any) -> Any:  # the learned start goes in through the env's reset option
        x = env.vec.contexts
        return env.reset(options={"contexts": x, "initial_iterates": acc.initializer(x)})[0]

    episodes_result = policy_episodes(config, acc.policy, episodes, "residual_ratio",
                                      learned_start if acc.initializer is not None else None)
    K = fp_map.settings.max_steps
    x = heldout_fixed_point_contexts(fp_map, config.eval.seed, config.eval.contexts, agent.device)
    ours = trace_metrics(acc.solve(fp_map, x, K), K)
    aa = trace_metrics(fp.solve(fp_map, x, anderson_settings(fp_map), K), K)
    result = {
        "run": agent.run.name, "agent": config.agent.kind, "gymnasium": episodes_result,
        "heldout": {"contexts": int(x.shape[0]), "learned": ours, "anderson": aa},
    }
    agent.run.write_json("eval.json", result)
    return result
