"""RLQP's TD3: one actor shared by every constraint, twin critics, a replay buffer on the device.

Why not SB3's TD3: each env step yields one transition per constraint row
(hundreds per problem, a different number per problem), all sharing the
problem's reward. SB3 would need every row presented as a sub-environment of
a fixed-size VecEnv and a numpy round trip per step; here the rows of the whole
batch go to the buffer as one tensor copy. Everything else is TD3 as published:
clipped double-Q, target policy smoothing, delayed actor updates, Polyak targets.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from agents.common.agent import Agent, Predictor
from agents.common.progress import Progress
from agents.common.runs import RunDir
from agents.common.best import BestModel
from agents.common.schedule import TrainSchedule
from agents.common.seeding import seed_everything
from agents.common.statistics import shifted_geometric_mean
from learned_optimizers.qp.admm import OSQPSettings, solve_qps
from learned_optimizers.qp.rlqp import (
    CONSTRAINT_FEATURES,
    LOG_RHO_MAX,
    LOG_RHO_MIN,
    RhoPolicy,
    RLQPSettings,
    RLQPSolver,
)


class Critic(nn.Module):
    """Q(features, log10 rho) of one constraint row."""

    def __init__(self, hidden_sizes: tuple[int, ...]) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = CONSTRAINT_FEATURES + 1
        for h in hidden_sizes:
            layers += [nn.Linear(width, h), nn.ReLU()]
            width = h
        layers.append(nn.Linear(width, 1))
        self.net = nn.Sequential(*layers)

    def forward(self, features: torch.Tensor, log_rho: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([features, (log_rho / LOG_RHO_MAX).unsqueeze(-1)], dim=-1)).squeeze(-1)


class RowReplayBuffer:
    """A ring buffer of per-row transitions (s, a, r, s', terminal), kept on the device."""

    def __init__(self, capacity: int, device: torch.device) -> None:
        f = CONSTRAINT_FEATURES
        self.capacity, self.device = capacity, device
        self.obs = torch.zeros(capacity, f, device=device)
        self.next_obs = torch.zeros(capacity, f, device=device)
        self.action = torch.zeros(capacity, device=device)
        self.reward = torch.zeros(capacity, device=device)
        self.terminal = torch.zeros(capacity, device=device)
        self.pos, self.size = 0, 0

    def add(self, obs, action, reward, next_obs, terminal) -> None:
        k = obs.shape[0]
        idx = (self.pos + torch.arange(k, device=self.device)) % self.capacity
        self.obs[idx], self.next_obs[idx], self.action[idx] = obs, next_obs, action
        self.reward[idx], self.terminal[idx] = reward, terminal
        self.pos = (self.pos + k) % self.capacity
        self.size = min(self.size + k, self.capacity)

    def sample(self, batch_size: int, generator: torch.Generator):
        idx = torch.randint(0, self.size, (batch_size,), device=self.device, generator=generator)
        return self.obs[idx], self.action[idx], self.reward[idx], self.next_obs[idx], self.terminal[idx]

    def state_dict(self) -> dict:
        n = self.size
        return {"obs": self.obs[:n].clone(), "next_obs": self.next_obs[:n].clone(), "action": self.action[:n].clone(),
                "reward": self.reward[:n].clone(), "terminal": self.terminal[:n].clone(), "pos": self.pos, "size": n}

    def load_state_dict(self, state: dict) -> None:
        n = state["size"]
        for key in ("obs", "next_obs", "action", "reward", "terminal"):
            getattr(self, key)[:n] = state[key].to(self.device)
        self.pos, self.size = state["pos"], n


@dataclass
class TD3Stats:
    critic_loss: float = float("nan")
    actor_loss: float = float("nan")


class RowTD3:
    """The learner: actor (the deployable ``RhoPolicy``), twin critics and their targets."""

    def __init__(self, agent, device: torch.device) -> None:
        self.cfg, self.device = agent, device
        self.actor = RhoPolicy(CONSTRAINT_FEATURES, agent.hidden_sizes).to(device)
        self.critics = nn.ModuleList([Critic(agent.hidden_sizes), Critic(agent.hidden_sizes)]).to(device)
        self.actor_target = copy.deepcopy(self.actor)
        self.critics_target = copy.deepcopy(self.critics)
        self.actor_opt = torch.optim.Adam(self.actor.parameters(), lr=agent.actor_learning_rate)
        self.critic_opt = torch.optim.Adam(self.critics.parameters(), lr=agent.critic_learning_rate)
        self.updates = 0

    def act(self, features: torch.Tensor, noise_std: float, generator: torch.Generator) -> torch.Tensor:
        with torch.no_grad():
            a = self.actor(features)
            if noise_std > 0:
                a = a + noise_std * torch.randn(a.shape, device=a.device, generator=generator)
        return a.clamp(LOG_RHO_MIN, LOG_RHO_MAX)

    def update(self, buffer: RowReplayBuffer, generator: torch.Generator) -> TD3Stats:
        c = self.cfg
        obs, action, reward, next_obs, terminal = buffer.sample(c.batch_size, generator)
        stats = TD3Stats()
        with torch.no_grad():
            noise = (c.target_noise * torch.randn(action.shape, device=self.device, generator=generator)).clamp(
                -c.target_noise_clip, c.target_noise_clip)
            next_a = (self.actor_target(next_obs) + noise).clamp(LOG_RHO_MIN, LOG_RHO_MAX)
            q_next = torch.minimum(*(q(next_obs, next_a) for q in self.critics_target))
            target = reward + c.gamma * (1.0 - terminal) * q_next
        q1, q2 = (q(obs, action) for q in self.critics)
        critic_loss = (q1 - target).pow(2).mean() + (q2 - target).pow(2).mean()
        self.critic_opt.zero_grad(set_to_none=True)
        critic_loss.backward()
        self.critic_opt.step()
        stats.critic_loss = float(critic_loss.detach())
        self.updates += 1
        if self.updates % c.policy_delay == 0:
            actor_loss = -self.critics[0](obs, self.actor(obs)).mean()
            self.actor_opt.zero_grad(set_to_none=True)
            actor_loss.backward()
            self.actor_opt.step()
            stats.actor_loss = float(actor_loss.detach())
            with torch.no_grad():
                for net, tgt in ((self.actor, self.actor_target), (self.critics, self.critics_target)):
                    for p, tp in zip(net.parameters(), tgt.parameters()):
                        tp.lerp_(p, c.tau)
        return stats

    def state_dict(self) -> dict:
        return {name: getattr(self, name).state_dict() for name in
                ("actor", "critics", "actor_target", "critics_target", "actor_opt", "critic_opt")} | {"updates": self.updates}

    def load_state_dict(self, state: dict) -> None:
        for name in ("actor", "critics", "actor_target", "critics_target", "actor_opt", "critic_opt"):
            getattr(self, name).load_state_dict(state[name])
        self.updates = state["updates"]


def select_rows(mask: torch.Tensor, per_problem: int, generator: torch.Generator) -> torch.Tensor:
    """At most ``per_problem`` random policy rows of each problem, as a (B, m) bool mask.

    Caps how much one large problem floods the buffer in one step."""
    scores = torch.rand(mask.shape, device=mask.device, generator=generator).masked_fill(~mask, 2.0)
    rank = scores.argsort(dim=1).argsort(dim=1)
    return mask & (rank < per_problem)


class RLQPTrainer:
    """The training loop: env steps, row transitions into the buffer, TD3 updates, logs, checkpoints."""

    policy_file = "policy.pt"

    def __init__(self, config, run: RunDir, device: torch.device) -> None:
        from envs.qp import QPVectorEnv

        self.config, self.run, self.device = config, run, device
        self.agent = config.agent
        seed_everything(config.seed)  # before any network is built: one seed, the same weights
        self.env = QPVectorEnv(self.agent.num_envs, "vector", device, **config.problem_kwargs())
        self.td3 = RowTD3(self.agent, device)
        self.buffer = RowReplayBuffer(self.agent.buffer_size, device)
        self.generator = torch.Generator(device=device).manual_seed(config.seed + 17)

    def train(self, resume: bool = False) -> None:
        cfg, agent, run = self.config, self.agent, self.run
        step = 0
        state = run.load_checkpoint(device=self.device) if resume else None
        if state is not None:
            self.td3.load_state_dict(state["td3"])
            self.buffer.load_state_dict(state["buffer"])
            self.generator.set_state(state["generator"])
            step = state["step"]
        # a resumed run draws fresh problems from a seed tied to the step it resumes at
        obs, _ = self.env.reset(seed=cfg.seed + 7919 * step)
        heldout = self.env.mix.heldout(agent.eval_problems_per_size)
        baseline = solve_qps(heldout, self._osqp_settings(), device=self.device)
        writer = run.tensorboard_writer(resumed_from=step)
        total = cfg.train.total_steps
        schedule = TrainSchedule.from_settings(cfg.train)
        best = BestModel(run, "eval/iteration_ratio_heuristic_over_rlqp", "max")
        progress = Progress(total, initial=step, desc=f"{run.name} rlqp-td3")
        finished_steps: list[int] = []
        finished_iters: list[int] = []
        stats = TD3Stats()
        t0, s0 = time.perf_counter(), step
        try:
            while step < total:
                feats, mask = obs["features"], obs["mask"]
                actions = self.td3.act(feats, agent.exploration_noise, self.generator)
                next_obs, rewards, terminated, truncated, info = self.env.step(actions)
                rows = select_rows(mask, agent.rows_per_problem, self.generator)
                b_idx = rows.nonzero(as_tuple=True)[0]
                self.buffer.add(feats[rows], actions[rows], rewards[b_idx], info["final_obs"]["features"][rows],
                                terminated[b_idx].float())
                done = terminated | truncated
                if bool(done.any()):
                    finished_steps += info["episode_steps"][done].tolist()
                    finished_iters += info["iterations"][done].tolist()
                obs = next_obs
                step += 1
                if step >= agent.learning_starts:
                    for _ in range(agent.gradient_steps):
                        s = self.td3.update(self.buffer, self.generator)
                        stats.critic_loss = s.critic_loss
                        stats.actor_loss = s.actor_loss if not np.isnan(s.actor_loss) else stats.actor_loss
                due = schedule.at(step)
                if (due.log or due.checkpoint) and step >= agent.learning_starts and not np.isfinite(stats.critic_loss):
                    raise FloatingPointError(f"step {step}: the TD3 critic loss is {stats.critic_loss}: training "
                                             "diverged; lower agent.learning_rate (the last checkpoint is kept)")
                if due.log:
                    sps = (step - s0) / max(time.perf_counter() - t0, 1e-9)
                    self._log(writer, step, finished_steps, finished_iters, stats, actions[mask], sps)
                    if finished_iters:
                        progress.update(0, episode_steps=float(np.mean(finished_steps)),
                                        admm_iters=float(np.mean(finished_iters)))
                    finished_steps, finished_iters = [], []
                if due.evaluate:
                    ratio = self.heldout_ratio(heldout, baseline)
                    writer.add_scalar("eval/iteration_ratio_heuristic_over_rlqp", ratio, step)
                    best.offer({"eval/iteration_ratio_heuristic_over_rlqp": ratio}, step,
                               lambda d: self.save_policy(d / self.policy_file))
                    progress.update(0, heldout_speedup=ratio)
                if due.checkpoint:
                    self.checkpoint(step)
                progress.update(1)
                if due.stop:
                    break
        finally:
            progress.close()
            writer.close()
        self.save_policy(run.path / self.policy_file)

    def _osqp_settings(self) -> OSQPSettings:
        eps = self.config.problem.eps
        return OSQPSettings(eps_abs=eps, eps_rel=eps)

    def solver_settings(self) -> RLQPSettings:
        return RLQPSettings(osqp=self._osqp_settings(), interval=self.config.problem.interval)

    def heldout_ratio(self, heldout, baseline) -> float:
        """SGM iterations of OSQP's heuristic over SGM iterations of the current policy (> 1: RLQP wins)."""
        ours = RLQPSolver(self.td3.actor, self.solver_settings()).solve(heldout, device=self.device)
        self.td3.actor.train()
        return shifted_geometric_mean(baseline.iterations.tolist()) / shifted_geometric_mean(ours.iterations.tolist())

    def _log(self, writer, step, ep_steps, ep_iters, stats, log_rho, sps) -> None:
        if ep_steps:
            writer.add_scalar("rollout/episode_length", float(np.mean(ep_steps)), step)
            writer.add_scalar("rollout/admm_iterations", float(np.mean(ep_iters)), step)
        writer.add_scalar("train/critic_loss", stats.critic_loss, step)
        writer.add_scalar("train/actor_loss", stats.actor_loss, step)
        writer.add_scalar("time/sps", sps, step)
        writer.add_histogram("rollout/log10_rho", log_rho.float().cpu(), step)

    def checkpoint(self, step: int) -> None:
        self.run.save_checkpoint({"step": step, "td3": self.td3.state_dict(), "buffer": self.buffer.state_dict(),
                                  "generator": self.generator.get_state()})
        self.save_policy(self.run.checkpoints / self.policy_file)  # what `--checkpoint latest` reads

    def save_policy(self, path) -> None:
        p = self.config.problem
        self.td3.actor.save(path, mix=list(p.mix), eps=p.eps, interval=p.interval, seed=self.config.seed)


class RLQPAgent(Agent):
    """``amortize train`` entry for RLQP: the trainer above; the product is ``policy.pt``."""

    def train(self, resume: bool = False) -> None:
        RLQPTrainer(self.config, self.run, self.device).train(resume)

    def load_predictor(self) -> Predictor:
        raise ValueError(f"{self.run.path}: an RLQP run is a solver, not a context -> solution model; measure it with "
                         f"`amortize eval {self.run.path}` or `amortize bench qp --policy "
                         f"{self.run.path / RLQPTrainer.policy_file}`")
