"""Tiny sphere runs that train in a second, shared by the run-directory tests."""

from __future__ import annotations

from agents.common.config import RunConfig
from agents.registry import config_from_dict, make_agent
from agents.workflows import start_run

#: a sphere problem with few held-out contexts and a short solver, so evaluation is quick
SPHERE = {"device": "cpu", "seed": 2, "eval": {"contexts": 32, "episodes": 2, "timing_repeats": 2},
          "solver": {"restarts": 4, "steps": 30}}


def sphere_sac_config(total_steps: int, every: int = 20, eval_every: int | None = None) -> RunConfig:
    """SB3 SAC with two env copies, a 256-transition buffer and a 16-unit net."""
    return config_from_dict({**SPHERE, "agent": {"kind": "sac", "learning_starts": 16, "batch_size": 16, "n_envs": 2,
                                                 "net_arch": [16], "buffer_size": 256},
                             "train": {"total_steps": total_steps, "checkpoint_every": every,
                                       "eval_every": eval_every or every, "log_every": every}})


def trained_sphere_sac(total_steps: int, tmp_path, name: str = "sac", **kwargs):
    """A run directory holding a finished ``sphere_sac_config`` run."""
    cfg = sphere_sac_config(total_steps, **kwargs)
    run = start_run(cfg, name, tmp_path)
    make_agent(cfg, run).train()
    return cfg, run
