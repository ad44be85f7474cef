"""Held-out contexts and their solver optima, computed once per run and cached.

Train contexts come from generators seeded with the run seed; held-out ones
from ``eval.seed``, which the config loader keeps different.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from agents.common.checkpointing import read_cache
from agents.common.config import RunConfig
from agents.common.runs import RunDir
from agents.common.seeding import generator
from learned_optimizers.common.files import save_model_file
from learned_optimizers.common.multistart import SolveResult, multistart_adam
from learned_optimizers.common.problem import ContextualProblem
from learned_optimizers.common.timing import synchronize


@dataclass
class HeldOut:
    contexts: torch.Tensor
    solution: torch.Tensor
    value: torch.Tensor


def heldout_contexts(problem: ContextualProblem, config: RunConfig, device: torch.device, n: int | None = None) -> torch.Tensor:
    n = n or config.eval.contexts
    return problem.sample_heldout_contexts(n, generator(config.eval.seed, device), device)


def solve(problem: ContextualProblem, contexts: torch.Tensor, config: RunConfig, from_scratch: bool = False) -> SolveResult:
    """The configured solver on ``contexts``: the family's own exact solver where it has one, else multi-start Adam.

    ``from_scratch`` starts from uninformed random points instead of the
    family's informed starting guesses: the reference for the amortization gap.
    """
    if not from_scratch:
        exact = _reference(problem, contexts)
        if exact is not None:
            return exact
    # the solver's own random starts are independent of both train and held-out draws
    gen = generator(config.eval.seed + 1, contexts.device)
    initial = None
    if from_scratch:
        initial = problem.random_solutions((config.solver.restarts, contexts.shape[0]), gen, contexts.device)
    return multistart_adam(problem, contexts, config.solver, generator=gen, initial=initial)


def _reference(problem: ContextualProblem, contexts: torch.Tensor) -> SolveResult | None:
    """The family's own exact solver (e.g. Sinkhorn), timed, where it has one."""
    start = time.perf_counter()
    solution = problem.reference_solutions(contexts)
    if solution is None:
        return None
    synchronize(contexts.device)
    seconds = time.perf_counter() - start
    with torch.no_grad():
        value = problem.objective(solution, contexts)
    return SolveResult(solution, value, seconds)


def cached_heldout(problem: ContextualProblem, config: RunConfig, run: RunDir, device: torch.device, n: int) -> HeldOut:
    """Held-out contexts with solver optima, stored in the run dir for reuse on resume."""
    path = run.checkpoints / f"heldout-{n}.pt"
    blob = read_cache(path, device, ("contexts", "solution", "value"))
    if blob is not None:
        return HeldOut(blob["contexts"], blob["solution"], blob["value"])
    x = heldout_contexts(problem, config, device, n)
    result = solve(problem, x, config)
    save_model_file({"contexts": x, "solution": result.solution, "value": result.value}, path)
    return HeldOut(x, result.solution, result.value)
