"""What a gradient-trained agent saves and restores, shared by every such agent.

A checkpoint holds the step, the model and optimizer, the env's generator and
torch's global RNG, so a resumed run draws the same contexts and ends at the
same weights as an uninterrupted one. Labelled datasets (contexts with solver
answers) are computed once and cached in the run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from learned_optimizers.common.files import read_model_file, save_model_file


def training_state(step: int, model: nn.Module, optimizer: torch.optim.Optimizer, env: Any, **extra: Any) -> dict[str, Any]:
    return {"step": step, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
            "env_generator": env.generator.get_state(), "torch_rng": torch.get_rng_state(), **extra}


def restore_training_state(state: dict[str, Any], model: nn.Module, optimizer: torch.optim.Optimizer, env: Any) -> int:
    """Load a ``training_state`` back; returns its step."""
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    env.generator.set_state(state["env_generator"].to(env.generator.get_state().device))
    torch.set_rng_state(state["torch_rng"])
    return int(state["step"])


def begin_training(agent: Any, resume: bool) -> int:
    """Seed, build the agent's model, optimizer and env, draw the first batch, and restore the checkpoint
    when resuming; returns the step training starts from. The agent has ``build()``, ``model``,
    ``optimizer`` and ``env``."""
    from agents.common.seeding import seed_everything

    seed_everything(agent.config.seed)
    agent.build()
    agent.env.reset(seed=agent.config.seed)
    state = agent.run.load_checkpoint(device=agent.device) if resume else None
    return 0 if state is None else restore_training_state(state, agent.model, agent.optimizer, agent.env)


def cached_labels(path: Path, device: torch.device, sample: Callable[[], torch.Tensor],
                  label: Callable[[torch.Tensor], torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """(contexts, solutions): read from ``path``, or sampled, labelled once and saved there."""
    blob = read_cache(path, device, ("contexts", "solution"))
    if blob is not None:
        return blob["contexts"], blob["solution"]
    x = sample()
    y = label(x)
    save_model_file({"contexts": x, "solution": y}, path)
    return x, y


def read_cache(path: Path, device: torch.device, keys: tuple[str, ...]) -> dict[str, Any] | None:
    """A cached dataset, read weights-only; None where it is missing or unreadable (then it is computed again)."""
    if not path.is_file():
        return None
    try:
        return read_model_file(path, device, "a cached dataset", keys)
    except ValueError as err:
        print(f"{err}; computing it again")
        return None
