"""Gradient amortizers: the model is trained by backpropagation, not RL.

* ``ObjectiveAmortizer`` (L_obj): minimize E_x f(y_theta(x); x), differentiating
  f through the batched env's ``objective``.
* ``RegressionAmortizer`` (L_reg): minimize E_x ||y_theta(x) - y*(x)||^2 onto
  solver optima computed once for a training set of contexts.

Both draw training contexts from the same batched env and log the env's reward
on them, so their curves are comparable with an RL agent's return.
"""

from __future__ import annotations

import math

from abc import abstractmethod

import torch

from agents.common.agent import Agent, Predictor
from agents.common.best import BestModel
from agents.common.checkpointing import cached_labels, restore_training_state, training_state
from agents.common.heldout import cached_heldout, solve
from agents.common.progress import Progress
from agents.common.schedule import TrainSchedule
from agents.common.seeding import generator, seed_everything
from learned_optimizers.amortized import AmortizedModel

HELDOUT_DURING_TRAINING = 256


class GradientAmortizer(Agent):
    """The shared training loop; subclasses define the loss on one batch."""

    model_file = "model.pt"

    def build(self) -> None:
        agent = self.config.agent
        self.env = self.make_vector_env(agent.batch_size)
        self.model = AmortizedModel(self.problem, agent.hidden_sizes, agent.activation).to(self.device)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=agent.learning_rate)

    def prepare(self, resume: bool) -> None:
        """Work done once before the loop (e.g. labelling a dataset)."""

    @abstractmethod
    def loss(self, contexts: torch.Tensor) -> torch.Tensor:
        """The amortization loss on a batch of env contexts."""

    def train(self, resume: bool = False) -> None:
        cfg, run = self.config, self.run
        seed_everything(cfg.seed)
        self.build()
        obs, _ = self.env.reset(seed=cfg.seed)
        step = 0
        state = run.load_checkpoint(device=self.device) if resume else None
        if state is not None:
            step = restore_training_state(state, self.model, self.optimizer, self.env)
            obs, _ = self.env.reset(options={"contexts": state["obs"]})
        self.prepare(resume)
        heldout = cached_heldout(self.problem, cfg, run, self.device, min(HELDOUT_DURING_TRAINING, cfg.eval.contexts))
        total = cfg.train.total_steps
        writer = run.tensorboard_writer(resumed_from=step)
        schedule = TrainSchedule.from_settings(cfg.train)
        best = BestModel(run, "eval/objective_gap", "min")
        progress = Progress(total, initial=step, desc=f"{run.name} {cfg.agent.kind}")
        try:
            while step < total:
                self.model.train()
                set_learning_rate(self.optimizer, cfg.agent, step, total)
                loss = self.loss(obs)
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                self.optimizer.step()
                with torch.no_grad():
                    actions = self.model.predict(obs)
                obs, rewards, _, _, _ = self.env.step(actions)
                step += 1
                due = schedule.at(step)
                if due.log or due.checkpoint:  # a sync on these steps only, and never a NaN checkpoint
                    require_finite(loss.item(), step, cfg.agent.kind)
                if due.log:
                    reward = rewards.mean().item()
                    writer.add_scalar("train/loss", loss.item(), step)
                    writer.add_scalar("train/reward", reward, step)
                    progress.update(0, loss=loss.item(), reward=reward)
                if due.evaluate:
                    gap = self.heldout_gap(heldout)
                    writer.add_scalar("eval/objective_gap", gap, step)
                    progress.update(0, heldout_gap=gap)
                    best.offer({"eval/objective_gap": gap}, step, self.save_model)
                if due.checkpoint:
                    self.checkpoint(step, obs)
                progress.update(1)
                if due.stop:
                    break
        finally:
            progress.close()
            writer.close()
        self.save_model(run.path)

    def save_model(self, directory) -> None:
        """The deployable model file (weights and problem settings) into ``directory``."""
        self.model.save(directory / self.model_file, self.config.problem_kwargs())

    @torch.no_grad()
    def heldout_gap(self, heldout) -> float:
        self.model.eval()
        y = self.model.predict(heldout.contexts)
        return (self.problem.objective(y, heldout.contexts) - heldout.value).mean().item()

    def checkpoint(self, step: int, obs: torch.Tensor) -> None:
        self.run.save_checkpoint(training_state(step, self.model, self.optimizer, self.env, obs=obs))
        self.save_model(self.run.checkpoints)  # what `--checkpoint latest` reads

    def load_predictor(self) -> Predictor:
        model = AmortizedModel.load(self.model_dir / self.model_file, self.device)
        model.eval()
        return model.predict


def set_learning_rate(optimizer: torch.optim.Optimizer, agent, step: int, total: int) -> None:
    """agent.learning_rate, or its cosine decay at ``step`` of ``total`` (``agent.lr_schedule``)."""
    lr = agent.learning_rate
    if getattr(agent, "lr_schedule", "constant") == "cosine":
        lr *= 0.5 * (1.0 + math.cos(math.pi * min(step, total) / total))
    for group in optimizer.param_groups:
        group["lr"] = lr


def require_finite(loss: float, step: int, kind: str) -> None:
    """Stop a diverged training with a named error instead of saving a NaN model and exiting 0."""
    if not math.isfinite(loss):
        raise FloatingPointError(f"step {step}: the {kind} loss is {loss}: training diverged; "
                                 "lower agent.learning_rate (nothing of this step was saved)")


class ObjectiveAmortizer(GradientAmortizer):
    def loss(self, contexts: torch.Tensor) -> torch.Tensor:
        return self.env.objective(self.model(contexts)).mean()


class RegressionAmortizer(GradientAmortizer):
    def prepare(self, resume: bool) -> None:
        """Label ``dataset_size`` training contexts with the solver (cached in the run dir)."""
        n = self.config.agent.dataset_size
        self.x_train, self.y_train = cached_labels(
            self.run.checkpoints / "regression_dataset.pt", self.device,
            lambda: self.problem.sample_contexts(n, generator(self.config.seed + 1, self.device), self.device),
            lambda x: solve(self.problem, x, self.config).solution)
        self.batch_gen = generator(self.config.seed + 2, self.device)

    def loss(self, contexts: torch.Tensor) -> torch.Tensor:
        idx = torch.randint(0, self.x_train.shape[0], (self.config.agent.batch_size,), generator=self.batch_gen, device=self.device)
        pred = self.problem.canonicalize(self.model(self.x_train[idx]))
        return (pred - self.y_train[idx]).pow(2).sum(dim=1).mean()
