"""L^RL: stable-baselines3 algorithms trained on our batched envs.

The factory turns a validated config into an SB3 algorithm; the callbacks add
what a run needs on top of SB3: our progress display, held-out evaluation in
TensorBoard, and a rolling checkpoint (model, replay buffer, step count) that
``--resume`` continues from with the step counter intact. Models are rebuilt
from the run's config and read weights-only (``sb3_files``): no file runs code.
"""

from __future__ import annotations

import json
import operator
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from stable_baselines3 import DDPG, PPO, SAC, TD3
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback, CallbackList
from stable_baselines3.common.logger import Logger, TensorBoardOutputFormat
from stable_baselines3.common.noise import NormalActionNoise, VectorizedActionNoise
from stable_baselines3.common.vec_env import VecMonitor
from torch.utils.tensorboard import SummaryWriter

from agents.common.agent import Agent, Predictor
from agents.common.best import BestModel
from agents.common.heldout import HeldOut, cached_heldout
from agents.common.progress import Progress
from agents.common.sb3_files import MODEL as CHECKPOINT_MODEL
from agents.common.sb3_files import (
    complete_checkpoints,
    load_weights,
    read_manifest,
    remove_partial_checkpoints,
    restore_checkpoint,
    save_checkpoint,
)
from agents.common.schedule import TrainSchedule
from agents.common.seeding import seed_everything
from agents.common.shipped import read_record
from agents.common.vec_adapter import SB3VecEnvAdapter
from learned_optimizers.common.files import atomic_write
from learned_optimizers.common.problem import ActionBox

ALGORITHMS: dict[str, type[BaseAlgorithm]] = {"sac": SAC, "td3": TD3, "ddpg": DDPG, "ppo": PPO}
MODEL_FILE = "model.zip"
#: the folder of a run's kept checkpoint models (``train.keep_snapshots``)
SNAPSHOTS = "snapshots"
#: the checkpoint layout before ``sb3_files``: its weights still resume a run; its pickled buffer is never read
LEGACY_MODEL, LEGACY_BUFFER, LEGACY_STATE = "sb3_model.zip", "sb3_replay_buffer.pkl", "sb3_state.json"


def algorithm_kwargs(agent: Any, n_envs: int, action_dim: int, seed: int) -> dict[str, Any]:
    """Constructor arguments of the SB3 algorithm for a validated agent section."""
    kwargs: dict[str, Any] = {
        "learning_rate": agent.learning_rate,
        "gamma": agent.gamma,
        "policy_kwargs": {"net_arch": list(agent.net_arch)},
        "seed": seed,
        "verbose": 0,
    }
    if agent.kind == "ppo":
        kwargs.update(n_steps=agent.n_steps, batch_size=agent.batch_size, n_epochs=agent.n_epochs, ent_coef=agent.ent_coef)
        return kwargs
    kwargs.update(
        batch_size=agent.batch_size,
        buffer_size=agent.buffer_size,
        learning_starts=agent.learning_starts,
        train_freq=agent.train_freq,
        gradient_steps=agent.gradient_steps,
        tau=agent.tau,
    )
    if agent.kind in ("td3", "ddpg") and agent.action_noise > 0:
        noise = NormalActionNoise(np.zeros(action_dim), agent.action_noise * np.ones(action_dim))
        kwargs["action_noise"] = VectorizedActionNoise(noise, n_envs) if n_envs > 1 else noise
    return kwargs


class _TensorBoardFormat(TensorBoardOutputFormat):
    """SB3's TensorBoard output on the run's own writer: one event file per process, whose one purge drops
    what a killed process logged past the checkpoint a resumed run starts from (a second writer's purge
    would drop the first's new points too)."""

    def __init__(self, writer: SummaryWriter) -> None:
        self.writer, self._is_closed = writer, False


class _RunCallback(BaseCallback):
    """Progress, episode returns and SPS, SB3's losses, held-out evaluation and rolling checkpoints during ``learn``.

    Finished episodes (VecMonitor's ``info['episode']``) are averaged over each
    ``log_every`` env steps and written as ``charts/episodic_return`` and
    ``charts/episodic_length`` at the env step they end, so a resumed run's
    curve continues where it stopped."""

    def __init__(self, agent: "SB3Agent", progress: Progress, heldout: Any, writer: SummaryWriter,
                 warmup_until: int | None = None) -> None:
        super().__init__()
        self.agent, self.progress, self.heldout, self.writer = agent, progress, heldout, writer
        self.warmup_until = warmup_until  # a run started --init-from: updates resume at this step
        self.schedule = TrainSchedule.from_settings(agent.config.train)
        self.best = BestModel(agent.run, *agent.best_metric)
        self.last_step = agent.start_step
        self.episodes: list[tuple[float, int]] = []
        self.clock = (time.perf_counter(), agent.start_step)

    def _on_step(self) -> bool:
        n = self.model.num_timesteps
        for info in self.locals.get("infos", ()):
            if "episode" in info:
                self.episodes.append((float(info["episode"]["r"]), int(info["episode"]["l"])))
        self.progress.update(self.training_env.num_envs)
        if self.warmup_until is not None and n >= self.warmup_until:
            self.model.gradient_steps, self.warmup_until = self.agent.config.agent.gradient_steps, None
        due, self.last_step = self.schedule.due(self.last_step, n, at_end=False), n
        if due.stop:
            return False  # SB3's learn returns; train() checkpoints and saves the model
        if due.log:
            self._log_rollout(n)
        if due.evaluate:
            metrics = self.agent.heldout_metrics(self.model, self.heldout)
            for key, value in metrics.items():
                self.writer.add_scalar(key, value, n)
            self.best.offer(metrics, n, lambda d: atomic_write(d / MODEL_FILE, self.model.save),
                            train_seconds=self.agent.train_seconds)
            self.progress.update(0, **{k.split("/", 1)[-1]: v for k, v in list(metrics.items())[:2]})
        if due.checkpoint and n < self.schedule.total:  # the last one is train()'s, after the last update
            self.progress.write(self.agent.checkpoint(self.model))
        return True

    def _log_rollout(self, n: int) -> None:
        diverged = {k: v for k, v in self.logger.name_to_value.items()
                    if k.startswith("train/") and isinstance(v, float) and not np.isfinite(v)}
        if diverged:
            raise FloatingPointError(f"step {n}: SB3's {', '.join(f'{k}={v}' for k, v in diverged.items())}: "
                                     "training diverged; lower agent.learning_rate (the last checkpoint is kept)")
        self.logger.dump(n)  # SB3's losses on our schedule (its own log_interval counts episodes)
        now, then = time.perf_counter(), self.clock
        self.writer.add_scalar("charts/SPS", (n - then[1]) / max(now - then[0], 1e-9), n)
        self.clock = (now, n)
        if self.episodes:
            returns, lengths = zip(*self.episodes)
            self.writer.add_scalar("charts/episodic_return", sum(returns) / len(returns), n)
            self.writer.add_scalar("charts/episodic_length", sum(lengths) / len(lengths), n)
            self.progress.update(0, ep_return=sum(returns) / len(returns))
            self.episodes.clear()


class SB3Agent(Agent):
    #: SB3's policy: its name for the flat MLP, or a structured class from ``agents.policies``
    policy_class: Any = "MlpPolicy"
    #: the periodic evaluation's metric that keeps the best model, and whether lower or higher is better
    best_metric: tuple[str, str] = ("eval/objective_gap", "min")

    def make_env(self) -> VecMonitor:
        return VecMonitor(SB3VecEnvAdapter(self.make_vector_env(self.config.agent.n_envs)))

    def make_spaces_env(self) -> Any:
        """An env with the run's spaces, to rebuild a saved model on (the batched env itself here)."""
        return self.make_env()

    @property
    def start_step(self) -> int:
        return getattr(self, "_start_step", 0)

    @property
    def train_seconds(self) -> float:
        """Wall-clock spent training this run, over all its processes (resumes add to the checkpoint's)."""
        started = getattr(self, "_started", None)
        return getattr(self, "_seconds_before", 0.0) + (time.perf_counter() - started if started else 0.0)

    def train(self, resume: bool = False) -> None:
        cfg, run = self.config, self.run
        seed_everything(cfg.seed)
        env = self.make_env()
        model = self.build_model(env)
        source = getattr(self, "_source", None)
        warmup_until = None
        if resume:
            self._seconds_before = self.restore(model)
        elif source is not None:
            self._seconds_before, warmup_until = self._initialize(model, source)
        else:
            self._seconds_before = 0.0
        self._started = time.perf_counter()
        self._start_step = model.num_timesteps
        writer = run.tensorboard_writer(self._start_step)  # one writer: ours and SB3's scalars, one purge
        model.set_logger(Logger(str(run.tensorboard), [_TensorBoardFormat(writer)]))
        heldout = self.make_heldout()
        total = cfg.train.total_steps
        # SB3 steps all n_envs copies at once: a budget that is no multiple of n_envs ends on the next one
        n_envs = max(cfg.agent.n_envs, 1)
        steps = self._start_step + -(-max(total - self._start_step, 0) // n_envs) * n_envs
        progress = Progress(steps, initial=self._start_step, desc=f"{run.name} {cfg.agent.kind}")
        try:
            if total > self._start_step:
                model.learn(
                    total_timesteps=total - self._start_step,
                    callback=CallbackList([_RunCallback(self, progress, heldout, writer, warmup_until)]),
                    reset_num_timesteps=not (resume or source is not None),
                    log_interval=max(1, cfg.train.log_every // max(cfg.agent.n_envs, 1)) if cfg.agent.kind != "ppo" else 1,
                )
        finally:
            progress.close()
            writer.close()  # SB3's losses too reach the disk now, not when the writer is collected
            if hasattr(heldout, "close"):
                heldout.close()
        print(self.checkpoint(model), file=sys.stderr)
        atomic_write(run.path / MODEL_FILE, model.save)
        env.close()

    def start_from(self, source: "SB3Agent") -> None:
        for key in ("env", "agent.kind", "agent.net_arch"):
            mine, theirs = operator.attrgetter(key)(self.config), operator.attrgetter(key)(source.config)
            if mine != theirs:
                raise ValueError(f"--init-from {source.run.path}: {key}={theirs!r} there, {mine!r} in this config; "
                                 "the networks must match")
        step = source.model_step() or 0
        if step >= self.config.train.total_steps:
            raise ValueError(f"--init-from {source.run.path}: its model is at step {step}, not below "
                             f"train.total_steps={self.config.train.total_steps}; give a larger budget")
        self._source = source

    def _initialize(self, model: BaseAlgorithm, source: "SB3Agent") -> tuple[float, int | None]:
        """Copy ``source``'s networks (the policy with its critics and targets, SAC's entropy coefficient) into the
        fresh ``model``; optimizers and the replay buffer start empty. The step counter and the training seconds
        continue the source's. An off-policy run first refills its buffer for ``agent.learning_starts`` steps
        with the loaded policy's own (stochastic) actions, without updates, rather than with uniform random
        actions that would teach the trained critic about a walker that falls; returns (seconds, warm-up end)."""
        cfg = self.config
        trained = source.load_model()
        copy_networks(trained, model)
        model.num_timesteps = source.model_step() or 0
        seconds = source.train_seconds_of_model() or 0.0
        if cfg.agent.kind == "ppo" or cfg.agent.learning_starts == 0:
            return seconds, None
        model.learning_starts = model.num_timesteps  # actions come from the policy from the first step on
        model.gradient_steps = 0  # ... and updates begin once the buffer is refilled (_RunCallback)
        return seconds, model.num_timesteps + cfg.agent.learning_starts

    def build_model(self, env: Any) -> BaseAlgorithm:
        """A fresh SB3 algorithm for the configured agent on ``env``."""
        cfg = self.config
        kwargs = algorithm_kwargs(cfg.agent, cfg.agent.n_envs, int(env.action_space.shape[0]), cfg.seed)
        return ALGORITHMS[cfg.agent.kind](self.policy_class, env, device=self.device, **kwargs)

    def checkpoint(self, model: BaseAlgorithm) -> str:
        """One complete checkpoint directory (model, buffer unless train.checkpoint_replay_buffer is false,
        counters; manifest last) replacing the previous one; returns a line saying where and how big."""
        final = save_checkpoint(model, self.run.checkpoints, with_buffer=self.config.train.checkpoint_replay_buffer,
                                train_seconds=self.train_seconds)
        if self.config.train.keep_snapshots:
            snapshot = self.run.path / SNAPSHOTS / f"model-{int(model.num_timesteps):012d}.zip"
            snapshot.parent.mkdir(exist_ok=True)
            with open(final / CHECKPOINT_MODEL, "rb") as src:
                atomic_write(snapshot, lambda f: shutil.copyfileobj(src, f))
        sizes = {f.name: f.stat().st_size for f in final.iterdir() if f.is_file()}
        parts = ", ".join(f"{name} {_size(n)}" for name, n in sorted(sizes.items()))
        return f"checkpoint at step {model.num_timesteps}: {_size(sum(sizes.values()))} ({parts}) in {final}"

    def latest_model_dir(self) -> Path:
        """The newest complete checkpoint directory (its model.zip)."""
        complete = complete_checkpoints(self.run.checkpoints)
        if not complete:
            raise FileNotFoundError(f"{str(self.run.checkpoints)!r} holds no complete checkpoint yet "
                                    "(train.checkpoint_every)")
        return complete[-1]

    def newest_manifest(self) -> dict[str, Any] | None:
        """The manifest of the newest complete checkpoint (step, counters, training seconds), or None."""
        complete = complete_checkpoints(self.run.checkpoints)
        return read_manifest(complete[-1]) if complete else None

    def checkpoint_step(self) -> int | None:
        ckpts = self.run.checkpoints
        manifest = self.newest_manifest()
        if manifest is not None:
            return manifest["step"]
        if (ckpts / LEGACY_MODEL).is_file() and (ckpts / LEGACY_STATE).is_file():
            return _legacy_step(ckpts / LEGACY_STATE)
        return None

    def restore(self, model: BaseAlgorithm) -> float:
        """Continue ``model`` from the newest complete checkpoint (or the legacy files); returns the seconds
        of training it records."""
        ckpts = self.run.checkpoints
        remove_partial_checkpoints(ckpts)
        complete = complete_checkpoints(ckpts)
        if complete:
            restore_checkpoint(model, complete[-1])
            return read_manifest(complete[-1])["train_seconds"]
        if not (ckpts / LEGACY_MODEL).is_file():
            raise ValueError(f"{str(ckpts)!r} holds no complete checkpoint to resume from")
        load_weights(model, ckpts / LEGACY_MODEL)
        model.num_timesteps = _legacy_step(ckpts / LEGACY_STATE)
        if (ckpts / LEGACY_BUFFER).is_file():
            print(f"{ckpts / LEGACY_BUFFER}: not loaded (a pickle can run code); the replay buffer starts empty "
                  "and the next checkpoint stores it as arrays")
        return 0.0

    def make_heldout(self) -> Any:
        """What periodic evaluation runs on: held-out contexts with solver optima, cached in the run."""
        return cached_heldout(self.problem, self.config, self.run, self.device, min(256, self.config.eval.contexts))

    def heldout_metrics(self, model: BaseAlgorithm, heldout: HeldOut) -> dict[str, float]:
        """TensorBoard tag -> value; the first two also go to the progress line."""
        y = _predict(model, heldout.contexts, self.problem)
        with torch.no_grad():
            return {"eval/objective_gap": (self.problem.objective(y, heldout.contexts) - heldout.value).mean().item()}

    def load_model(self) -> BaseAlgorithm:
        """The trained model, rebuilt from the run's config with its weights read weights-only."""
        path: Path = self.model_dir / MODEL_FILE
        if not path.is_file():
            raise FileNotFoundError(f"{str(path)!r} is missing: the run has not finished training")
        env = self.make_spaces_env()
        try:
            model = self.build_model(env)
        finally:
            env.close()
        load_weights(model, path)
        return model

    def model_step(self) -> int | None:
        """The training step of the chosen model: its checkpoint's, or the best evaluation's."""
        if self.model_choice == "best":
            record = BestModel.record(self.run)
            return None if record is None else int(record["step"])
        manifest = self.newest_manifest()
        return manifest["step"] if manifest is not None else self._shipped_figure("steps")

    def _shipped_figure(self, key: str) -> Any:
        """What a shipped run (which keeps no checkpoints) records about its model in shipped.json; else None."""
        return (read_record(self.run.path) or {}).get(key)

    def train_seconds_of_model(self) -> float | None:
        """The wall-clock of training that produced the chosen model (None where it was not recorded)."""
        if self.model_choice == "best":
            seconds = (BestModel.record(self.run) or {}).get("train_seconds")
            return None if seconds is None else float(seconds)
        manifest = self.newest_manifest()
        return manifest["train_seconds"] if manifest is not None else self._shipped_figure("train_seconds")

    def export_model(self, path: Path) -> None:
        """The chosen model's weights as an SB3 zip with fresh optimizer states and no replay buffer: a few MB
        that hold no training state, which this project reads weights-only and SB3's own ``load`` also reads."""
        trained = self.load_model()
        env = self.make_spaces_env()
        try:
            fresh = self.build_model(env)
        finally:
            env.close()
        copy_networks(trained, fresh)
        fresh.num_timesteps = self.model_step() or 0
        atomic_write(path, fresh.save)

    def load_predictor(self) -> Predictor:
        model = self.load_model()
        return lambda contexts: _predict(model, contexts, self.problem)


def copy_networks(source: BaseAlgorithm, target: BaseAlgorithm) -> None:
    """``source``'s trained tensors into ``target`` of the same architecture: the policy (actor, critics, their
    targets) and the variables outside it (SAC's log_ent_coef); optimizer states are not copied."""
    target.policy.load_state_dict(source.policy.state_dict())
    for name in target._get_torch_save_params()[1]:
        operator.attrgetter(name)(target).data.copy_(operator.attrgetter(name)(source).data)


def _size(n_bytes: int) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n_bytes >= scale:
            return f"{n_bytes / scale:.1f} {unit}"
    return f"{n_bytes} B"


def _legacy_step(path: Path) -> int:
    try:
        return int(json.loads(path.read_text())["step"])
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ValueError(f"{str(path)!r} is not a checkpoint state file: {err}") from None


@torch.no_grad()
def deterministic_actions(model: BaseAlgorithm, obs: torch.Tensor) -> torch.Tensor:
    """Deterministic batched actions of an SB3 policy in the env's action units, on ``obs``'s device."""
    policy = model.policy
    actions = policy._predict(obs.to(policy.device, torch.float32), deterministic=True).float()
    if getattr(policy, "squash_output", False):  # SAC, TD3 and DDPG act in [-1, 1]
        actions = ActionBox.from_bounds(model.action_space.low, model.action_space.high, actions.device).from_unit(actions)
    return actions.to(obs.device)


def _predict(model: BaseAlgorithm, contexts: torch.Tensor, problem) -> torch.Tensor:
    """Deterministic batched actions of an SB3 policy, as canonical solutions."""
    return problem.canonicalize(deterministic_actions(model, contexts))
