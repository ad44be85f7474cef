"""Agents on ``amortize/LearnToOptimize-v0``: one coordinatewise update, two ways to learn it.

* ``l2o_objective`` (Andrychowicz et al. 2016): unroll the learned optimizer on
  a batch of tasks and backpropagate the objective along the trajectory
  (mean log10 f_t / f_0 by default), in truncated segments with one gradient
  step each.
* ``td3`` / ``ddpg`` (Li & Malik's RL view): stable-baselines3 on the env's
  per-coordinate action with the coordinatewise actor and set critic of
  ``agents.policies``, through the project's one VecEnv adapter.

Every run evaluates on held-out tasks (``eval.seed``, float64) against tuned
Adam measured in the same call: the steps the learned optimizer needs to reach
Adam's objective after the horizon. TensorBoard gets the training loss, those
metrics, and objective-vs-step curves (median and quartiles).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.tensorboard import SummaryWriter

from agents.common.amortizers import set_learning_rate
from agents.common.agent import Agent, Predictor
from agents.common.checkpointing import begin_training, training_state
from agents.common.evaluation import policy_episodes
from agents.common.progress import Progress
from agents.common.sb3 import SB3Agent
from agents.common.best import BestModel
from agents.common.interrupt import stop_requested
from agents.common.schedule import TrainSchedule
from agents.common.seeding import generator
from agents.common.statistics import reach_statistics
from agents.l2o.policies import CoordinatewiseTD3Policy
from learned_optimizers.l2o import core as l2o
from learned_optimizers.l2o.classical import OptimizerTrace
from learned_optimizers.l2o.coordinatewise import CoordinatewiseUpdate
from learned_optimizers.l2o.tasks import TrainingTaskFamily

#: the seed of the benches' held-out tasks (never a training seed)
HELDOUT_SEED = 1_000_003
#: held-out tasks evaluated during training (the full eval.contexts at the end)
HELDOUT_DURING_TRAINING = 256
#: the log_gap loss stops rewarding a task once its gap is below this fraction of the way down to f_ref
LOG_GAP_FLOOR = 1e-6
#: consecutive unrolls with a non-finite loss before training stops with an error
MAX_SKIPPED_UNROLLS = 20


@dataclass
class LearnedOptimizer:
    """What a trained run deploys: a policy on ``l2o.observe`` features and the Adam rate its actions are in units of."""

    policy: l2o.Policy
    learning_rate: float
    #: the features' dtype: float32, what the trained networks (ours and SB3's) compute in
    feature_dtype: torch.dtype = torch.float32

    @torch.no_grad()
    def solve(self, tasks: TrainingTaskFamily, x: torch.Tensor, phi0: torch.Tensor, steps: int,
              learning_rate: float | None = None) -> OptimizerTrace:
        return l2o.solve(tasks, x, phi0, steps, self.policy, learning_rate or self.learning_rate, self.feature_dtype)


def heldout_tasks(tasks: TrainingTaskFamily, seed: int, n: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Held-out datasets and starting points in float64 (seeded apart from training)."""
    gen = generator(seed, device)
    x = tasks.sample_contexts(n, gen, device)
    return x.double(), tasks.initial_iterate(x, gen).double()


def optimizer_metrics(trace: OptimizerTrace, target: torch.Tensor, horizon: int) -> dict[str, float]:
    """Steps to reach ``target`` (median; shifted geometric mean with unreached counted at the trace's length),
    the fraction that reaches it and that diverges, and the median f ratio to the target at the horizon."""
    median, sgm, reached = reach_statistics(trace.steps_to(target), trace.values.shape[1] - 1)
    at_horizon = trace.values[:, min(horizon, trace.values.shape[1] - 1)]
    return {
        "median_steps_to_target": median,
        "sgm_steps_to_target": sgm,
        "reached_target": reached,
        "diverged": float(torch.isnan(trace.values[:, -1]).double().mean()),
        "median_value_over_target_at_horizon": float((at_horizon / target).median()),
    }


def log_objective_curves(writer: SummaryWriter, tag: str, trace: OptimizerTrace) -> None:
    """Median and quartiles of f_t / f_0 against the step, as TensorBoard scalars."""
    ratio = (trace.values / trace.values[:, :1]).nan_to_num(nan=math.inf).float()
    q = torch.quantile(ratio, torch.tensor([0.25, 0.5, 0.75], device=ratio.device), dim=0)
    for k in range(ratio.shape[1]):
        for i, name in enumerate(("q25", "median", "q75")):  # plain tags: add_scalars makes a TensorBoard run of each
            writer.add_scalar(f"objective_vs_step/{tag}/{name}", q[i, k].item(), k)


class _HeldOut:
    """Held-out tasks with tuned Adam's trajectory on them: the reference of every report."""

    def __init__(self, tasks: TrainingTaskFamily, seed: int, n: int, device: torch.device) -> None:
        self.tasks, self.horizon = tasks, tasks.settings.horizon
        self.x, self.phi0 = heldout_tasks(tasks, seed, n, device)
        self.adam = l2o.solve(tasks, self.x, self.phi0, self.horizon)
        self.target = self.adam.values[:, -1]

    def metrics(self, optimizer: LearnedOptimizer) -> dict[str, float]:
        trace = optimizer.solve(self.tasks, self.x, self.phi0, self.horizon)
        return optimizer_metrics(trace, self.target, self.horizon)

    def log_curves(self, writer: SummaryWriter, optimizer: LearnedOptimizer) -> None:
        """Objective-vs-step curves over twice the horizon, learned and Adam."""
        log_objective_curves(writer, "learned", optimizer.solve(self.tasks, self.x, self.phi0, 2 * self.horizon))
        log_objective_curves(writer, "adam", l2o.solve(self.tasks, self.x, self.phi0, 2 * self.horizon))


#: what every learning-to-optimize run deploys, whichever agent trained it
OPTIMIZER_FILE = "optimizer.pt"


#: what keeps a learning-to-optimize run's best model: fewer steps to tuned Adam's final objective
BEST_METRIC = "eval/median_steps_to_target"


def load_optimizer(agent: Agent) -> LearnedOptimizer:
    path = agent.model_dir / OPTIMIZER_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{str(path)!r} is missing: the run has not finished training")
    model = CoordinatewiseUpdate.load(path, agent.device).eval()
    return LearnedOptimizer(model.act, model.learning_rate)


class L2OObjectiveAgent(Agent):
    """Train ``CoordinatewiseUpdate`` by backpropagating the objective through truncated unrolls."""

    def build(self) -> None:
        agent = self.config.agent
        self.env = self.make_vector_env(agent.batch_size)
        self.tasks: TrainingTaskFamily = self.problem
        self.model = CoordinatewiseUpdate.for_tasks(self.tasks, hidden_sizes=agent.hidden_sizes,
                                                    activation=agent.activation).to(self.device)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=agent.learning_rate)

    def loss(self, ratios: torch.Tensor, reference: torch.Tensor | None) -> torch.Tensor:
        """``ratios``: f_t / f_0 along the unroll; ``reference``: f_ref / f_0 on the same tasks (``log_gap``)."""
        if self.config.agent.loss == "ratio":
            return ratios.mean()
        if self.config.agent.loss == "log_gap":
            # the suboptimality left, as a fraction of the way from f_0 down to f_ref
            ref = reference.unsqueeze(1)
            gap = (ratios - ref).clamp(min=0) / (1 - ref).clamp(min=1e-12)
            return torch.log10(gap + LOG_GAP_FLOOR).mean()
        return torch.log10(ratios.clamp(min=1e-12)).mean()

    def train(self, resume: bool = False) -> None:
        cfg, run = self.config, self.run
        step = begin_training(self, resume)
        horizon = self.tasks.settings.horizon
        segment = cfg.agent.truncation or horizon
        heldout = _HeldOut(self.tasks, cfg.eval.seed, min(HELDOUT_DURING_TRAINING, cfg.eval.contexts), self.device)
        total = cfg.train.total_steps
        writer = run.tensorboard_writer(resumed_from=step)
        self.best = BestModel(run, BEST_METRIC, "min")
        progress = Progress(total, initial=step, desc=f"{run.name} {cfg.agent.kind}")
        skipped = 0
        try:
            while step < total:
                self.env.reset()  # fresh tasks and starting points from the env's seeded generator
                x = self.env.contexts
                current = l2o.start(self.tasks, x, self.env.state.phi, keep_graph=True, second_order=cfg.agent.second_order)
                reference = None
                if cfg.agent.loss == "log_gap":  # f*'s stand-in: tuned Adam's best value in twice the horizon
                    adam = l2o.solve(self.tasks, x, self.env.state.phi, 2 * horizon).values
                    reference = adam.nan_to_num(nan=math.inf).min(1).values / adam[:, 0]
                done = 0
                while done < horizon and step < total:
                    self.model.train()
                    set_learning_rate(self.optimizer, cfg.agent, step, total)
                    ratios, current = l2o.unroll(self.tasks, x, current, min(segment, horizon - done), self.model.act,
                                                 self.model.learning_rate)
                    done += ratios.shape[1]
                    loss = self.loss(ratios, reference)
                    if not torch.isfinite(loss):  # a task blew up: drop this unroll, draw fresh tasks
                        skipped += 1
                        if skipped >= MAX_SKIPPED_UNROLLS:
                            raise FloatingPointError(f"step {step}: {skipped} unrolls in a row diverged; "
                                                     "lower agent.learning_rate or problem.max_correction")
                        break
                    skipped = 0
                    self.optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.agent.grad_clip)
                    self.optimizer.step()
                    current = current.detached()
                    step += 1
                    stop = self._after_step(step, loss.item(), heldout, writer, progress)
                    if stop:
                        break
                if stop_requested():
                    break
            self.model.eval()
            heldout.log_curves(writer, LearnedOptimizer(self.model.act, self.model.learning_rate))
        finally:
            progress.close()
            writer.close()
        self.model.save(run.path / OPTIMIZER_FILE)

    def _after_step(self, step: int, loss: float, heldout: _HeldOut, writer: SummaryWriter, progress: Progress) -> bool:
        """Log, evaluate and checkpoint as scheduled; True where the run is asked to stop."""
        cfg = self.config
        due = TrainSchedule.from_settings(cfg.train).at(step)
        if due.log:
            writer.add_scalar("train/loss", loss, step)
            progress.update(0, loss=loss)
        if due.evaluate:
            self.model.eval()
            metrics = heldout.metrics(LearnedOptimizer(self.model.act, self.model.learning_rate))
            for key, value in metrics.items():
                writer.add_scalar(f"eval/{key}", value, step)
            self.best.offer({f"eval/{k}": v for k, v in metrics.items()}, step,
                            lambda d: self.model.save(d / OPTIMIZER_FILE))
            progress.update(0, steps_to_adam=metrics["median_steps_to_target"], adam=heldout.horizon)
        if due.checkpoint:
            self.run.save_checkpoint(training_state(step, self.model, self.optimizer, self.env))
            self.model.save(self.run.checkpoints / OPTIMIZER_FILE)  # what `--checkpoint latest` reads
        progress.update(1)
        return due.stop

    def load_optimizer(self) -> LearnedOptimizer:
        return load_optimizer(self)

    def load_predictor(self) -> Predictor:
        return _final_parameters(self)


class L2OSB3Agent(SB3Agent):
    """SB3 TD3/DDPG with the coordinatewise policy; held-out metric: median steps to tuned Adam's final objective.

    The trained actor is the same per-coordinate network as the objective agent's: at the end it is
    exported as a ``CoordinatewiseUpdate`` (``optimizer.pt``), deployable without SB3.
    """

    policy_class = CoordinatewiseTD3Policy
    best_metric = (BEST_METRIC, "min")

    def train(self, resume: bool = False) -> None:
        super().train(resume)
        actor = self.load_model().policy.actor
        update = CoordinatewiseUpdate.for_tasks(self.problem, hidden_sizes=tuple(self.config.agent.net_arch), activation="relu")
        update.net.load_state_dict({k.removeprefix("mu."): v for k, v in actor.state_dict().items() if k.startswith("mu.")})
        update.save(self.run.path / OPTIMIZER_FILE)
        optimizer = self.load_optimizer()
        with SummaryWriter(str(self.run.tensorboard)) as writer:
            self.make_heldout().log_curves(writer, optimizer)

    def make_heldout(self) -> Any:
        return _HeldOut(self.problem, self.config.eval.seed, min(HELDOUT_DURING_TRAINING, self.config.eval.contexts), self.device)

    def heldout_metrics(self, model, heldout: _HeldOut) -> dict[str, float]:
        metrics = heldout.metrics(self._as_optimizer(model))
        return {f"eval/{k}": v for k, v in metrics.items()}

    def _as_optimizer(self, model) -> LearnedOptimizer:
        bound = self.problem.settings.max_correction
        actor = model.policy.actor

        def policy(obs: torch.Tensor) -> torch.Tensor:
            return bound * actor(obs.to(model.device)).to(obs.device)

        return LearnedOptimizer(policy, l2o.base_learning_rate(self.problem))

    def load_optimizer(self) -> LearnedOptimizer:
        """The exported ``optimizer.pt`` of the finished run; the actor of a checkpoint's or the best SB3 model."""
        if self.model_choice == "final":
            return load_optimizer(self)
        return self._as_optimizer(self.load_model())

    def load_predictor(self) -> Predictor:
        return _final_parameters(self)


def _final_parameters(agent: Any) -> Predictor:
    """y_theta(x): the parameters after one horizon of learned steps from seeded starting points."""
    optimizer, tasks = agent.load_optimizer(), agent.problem

    def predict(x: torch.Tensor) -> torch.Tensor:
        phi0 = tasks.initial_iterate(x, generator(agent.config.eval.seed, x.device))
        return optimizer.solve(tasks, x, phi0, tasks.settings.horizon).phi

    return predict


@torch.no_grad()
def evaluate_l2o(agent: Agent, episodes: int) -> dict[str, Any]:
    """``amortize eval`` for a learning-to-optimize run: Gymnasium episodes, then held-out tasks against tuned Adam."""
    config = agent.config
    optimizer = agent.load_optimizer()
    episodes_result = policy_episodes(config, optimizer.policy, episodes, "objective_ratio")
    heldout = _HeldOut(agent.problem, config.eval.seed, config.eval.contexts, agent.device)
    ours = heldout.metrics(optimizer)
    adam = optimizer_metrics(heldout.adam, heldout.target, heldout.horizon)
    result = {
        "run": agent.run.name, "agent": config.agent.kind, "gymnasium": episodes_result,
        "heldout": {"tasks": int(heldout.x.shape[0]), "horizon": heldout.horizon, "learned": ours, "adam": adam},
    }
    agent.run.write_json("eval.json", result)
    return result
