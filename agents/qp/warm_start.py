"""Warm starts for the real osqp, learned by regression onto its own solutions (``agent.kind: warm_start_regression``)
or, after a regression phase, through the solver (``warm_start_objective``): the log of osqp's residuals after
``agent.unroll_steps`` ADMM steps from the prediction, differentiated through the unrolled iteration
(``learned_optimizers.qp.unrolled``), needs no label and weighs each context by how far osqp still is.

Training contexts are labelled once by the real osqp at ``agent.label_eps`` (set up once, then ``update``), kept
in the run (``labels.pt``) so a resume does not label again; an MLP then regresses the standardized (x*, y*)
onto the standardized context. Every ``train.eval_every`` steps the held-out contexts (``eval.seed``) are
solved by osqp from the prediction at ``problem.eps``: TensorBoard's ``eval/osqp_iterations_cold_over_learned``.
The product is ``warm_start.pt``, a ``WarmStarter`` that needs no training code.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
from dataclasses import dataclass

import numpy as np
import torch

from agents.common.agent import Agent, Predictor
from agents.common.best import BestModel
from agents.common.progress import Progress
from agents.common.schedule import TrainSchedule
from agents.common.seeding import seed_everything
from agents.qp.bench_warm_start import run_osqp
from learned_optimizers.common.files import read_model_file, save_model_file
from learned_optimizers.common.settings import setting
from learned_optimizers.qp.parametric import solve_family
from learned_optimizers.qp.unrolled import UnrolledADMM
from learned_optimizers.qp.warm_start import WarmStarter, WarmStartNet

LABELS = "labels.pt"
HELDOUT_CONTEXTS = 64


@dataclass
class WarmStartAgentSettings:
    kind: str = setting("warm_start_regression", choices=("warm_start_regression", "warm_start_objective"))
    hidden_sizes: tuple[int, ...] = setting((256, 256), ge=1, le=65_536)
    learning_rate: float = setting(1e-3, gt=0.0)
    batch_size: int = setting(256, ge=1, le=1_048_576)
    dataset_size: int = setting(8192, ge=16, le=10_000_000, doc="training contexts labelled once by the real osqp")
    label_eps: float = setting(1e-6, gt=0.0, lt=1.0, doc="eps_abs = eps_rel of the labels' solves")
    final_learning_rate: float = setting(0.01, gt=0.0, le=1.0,
                                         doc="the learning rate at the last step, as a fraction of learning_rate "
                                             "(cosine decay; 1 keeps it constant)")
    unroll_steps: int = setting(10, ge=1, le=1000, doc="warm_start_objective: ADMM steps unrolled from the prediction")
    rho: float = setting(0.1, gt=0.0, doc="warm_start_objective: the unrolled iteration's step size (osqp's default)")
    pretrain_fraction: float = setting(0.5, ge=0.0, lt=1.0,
                                       doc="warm_start_objective: the share of the steps that regress onto the labels "
                                           "before the unrolled objective takes over")


class WarmStartRegression(Agent):
    """L_reg onto osqp's (x*, y*) for a parametric QP family (``problem.family: qp_warm_start``), then, for
    ``warm_start_objective``, the unrolled-ADMM residual."""

    model_file = "warm_start.pt"

    def _labels(self) -> dict[str, torch.Tensor]:
        path = self.run.path / LABELS
        if path.is_file():
            return read_model_file(path, "cpu", "a warm-start label", ("contexts", "x", "y"))
        a, family = self.config.agent, self.problem.qp_family
        contexts = family.sample_contexts(a.dataset_size, np.random.default_rng(self.config.seed))
        bar = Progress(a.dataset_size, desc=f"{self.run.name} labels (osqp, eps {a.label_eps:g})")
        try:
            x, y, statuses = solve_family(family, contexts, a.label_eps, progress=lambda k: bar.update(1))
        finally:
            bar.close()
        solved = np.array([s == "solved" for s in statuses])
        if solved.sum() < 16:
            raise ValueError(f"{family.name}: osqp solved only {int(solved.sum())} of {len(statuses)} training "
                             "contexts; a warm start needs solutions to learn from")
        labels = {k: torch.as_tensor(v[solved]) for k, v in (("contexts", contexts), ("x", x), ("y", y))}
        save_model_file(labels, path)
        return labels

    def train(self, resume: bool = False) -> None:
        cfg, run, a = self.config, self.run, self.config.agent
        seed_everything(cfg.seed)
        family = self.problem.qp_family
        labels = self._labels()
        c, out = labels["contexts"], torch.cat([labels["x"], labels["y"]], dim=1)
        unrolled = UnrolledADMM(family, a.rho) if a.kind == "warm_start_objective" else None
        switch = int(a.pretrain_fraction * cfg.train.total_steps) if unrolled is not None else cfg.train.total_steps
        stats = {"context_mean": c.mean(0), "context_std": c.std(0) + 1e-8,
                 "out_mean": out.mean(0), "out_std": out.std(0) + 1e-6}
        c_n = ((c - stats["context_mean"]) / stats["context_std"]).float()
        out_n = ((out - stats["out_mean"]) / stats["out_std"]).float()
        net = WarmStartNet(family.context_dim, family.n + family.m, tuple(a.hidden_sizes))
        optimizer = torch.optim.Adam(net.parameters(), lr=a.learning_rate)
        gen = torch.Generator().manual_seed(cfg.seed)
        step = 0
        state = run.load_checkpoint(device="cpu") if resume else None
        if state is not None:
            net.load_state_dict(state["net"])
            optimizer.load_state_dict(state["optimizer"])
            gen.set_state(state["generator"])
            step = int(state["step"])
        heldout = family.sample_contexts(HELDOUT_CONTEXTS, np.random.default_rng(cfg.eval.seed))
        cold = _osqp_iterations(family, heldout, None, self.config.problem.eps)
        schedule = TrainSchedule.from_settings(cfg.train)
        best = BestModel(run, "eval/osqp_iterations_cold_over_learned", "max")
        writer = run.tensorboard_writer(resumed_from=step)
        progress = Progress(cfg.train.total_steps, initial=step, desc=f"{run.name} warm-start")

        def starter() -> WarmStarter:
            return WarmStarter(family, dataclasses.asdict(self.config.problem), net,
                               {k: v.numpy() for k, v in stats.items()}, self.config.problem.eps)

        try:
            while step < cfg.train.total_steps:
                fraction = a.final_learning_rate + (1 - a.final_learning_rate) * 0.5 * (
                    1 + math.cos(math.pi * step / cfg.train.total_steps))
                for group in optimizer.param_groups:
                    group["lr"] = a.learning_rate * fraction
                idx = torch.randint(0, c_n.shape[0], (a.batch_size,), generator=gen)
                if step < switch:
                    loss_name, loss = "regression_loss", torch.nn.functional.mse_loss(net(c_n[idx]), out_n[idx])
                else:  # through the solver: osqp's residuals after k steps from the prediction, in its own units
                    start = net(c_n[idx]).double() * stats["out_std"] + stats["out_mean"]
                    loss_name = "admm_log_residual"
                    loss = unrolled.run(c[idx], start[:, :family.n], start[:, family.n:], a.unroll_steps).log_loss()
                if not torch.isfinite(loss):
                    raise FloatingPointError(f"step {step}: the {loss_name.replace('_', ' ')} is {loss.item()}; lower "
                                             "agent.learning_rate (the last checkpoint is kept)")
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                step += 1
                due = schedule.at(step)
                if due.log:
                    writer.add_scalar(f"train/{loss_name}", loss.item(), step)
                    progress.update(0, loss=loss.item())
                if due.evaluate:
                    learned = _osqp_iterations(family, heldout, starter(), self.config.problem.eps)
                    ratio = statistics.median(cold) / statistics.median(learned)
                    writer.add_scalar("eval/osqp_iterations_learned", statistics.median(learned), step)
                    writer.add_scalar("eval/osqp_iterations_cold_over_learned", ratio, step)
                    best.offer({"eval/osqp_iterations_cold_over_learned": ratio}, step,
                               lambda d: starter().save(d / self.model_file, step=step))
                    progress.update(0, cold_over_learned=ratio)
                if due.checkpoint:
                    run.save_checkpoint({"step": step, "net": net.state_dict(), "optimizer": optimizer.state_dict(),
                                         "generator": gen.get_state()})
                    starter().save(run.checkpoints / self.model_file, step=step)
                progress.update(1)
                if due.stop:
                    break
        finally:
            progress.close()
            writer.close()
        starter().save(run.path / self.model_file, step=step, seed=cfg.seed)

    def load_predictor(self) -> Predictor:
        starter = WarmStarter.load(self.model_dir / self.model_file)

        def predict(contexts: torch.Tensor) -> torch.Tensor:
            x, y = starter.predict(contexts.detach().cpu().double().numpy())
            return torch.as_tensor(np.concatenate([x, y], axis=1), dtype=contexts.dtype, device=contexts.device)

        return predict


def _osqp_iterations(family, contexts: np.ndarray, starter: WarmStarter | None, eps: float) -> list[int]:
    """osqp's iterations on each context from the starter's prediction (None: from zero, osqp's cold start)."""
    x, y = starter.predict(contexts) if starter is not None else (np.zeros((len(contexts), family.n)),
                                                                  np.zeros((len(contexts), family.m)))
    return run_osqp(family, contexts, eps, lambda t, c: (x[t], y[t]))["iterations"]
