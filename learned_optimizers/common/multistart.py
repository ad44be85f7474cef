"""Multi-start Adam: the per-instance solver that amortized models of a ``ContextualProblem`` are judged against.

``multistart_adam`` solves min_y f(y; x) for a whole batch of contexts at once:
every (restart, context) pair is an independent problem, and because the loss
is a sum over rows, Adam's per-coordinate state keeps them independent. The
best restart per context is the solver's answer.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch

from learned_optimizers.common.problem import ContextualProblem
from learned_optimizers.common.settings import setting, validate
from learned_optimizers.common.timing import synchronize


@dataclass(frozen=True)
class MultistartAdamSettings:
    restarts: int = setting(8, ge=1, le=4096, doc="starting points per context")
    steps: int = setting(300, ge=1, doc="Adam iterations per start")
    learning_rate: float = setting(0.05, gt=0.0, doc="Adam step size")
    record_every: int = setting(10, ge=1, doc="iterations between recorded values of the trace")

    def __post_init__(self) -> None:
        validate(self)


@dataclass
class SolveResult:
    """What a per-instance solve returns: the answer and how it got there."""

    solution: torch.Tensor  # (n, solution_dim), canonical
    value: torch.Tensor  # (n,)
    seconds: float
    #: (iteration, seconds since start, best value per context so far) at recorded iterations
    trace: list[tuple[int, float, torch.Tensor]] = field(default_factory=list)


def multistart_adam(
    problem: ContextualProblem,
    contexts: torch.Tensor,
    settings: MultistartAdamSettings | None = None,
    generator: torch.Generator | None = None,
    initial: torch.Tensor | None = None,
) -> SolveResult:
    """Minimize f(y; x) for every context with Adam from several starting points.

    ``initial`` (restarts, n, d) overrides the problem's own starting points,
    e.g. a model's prediction for a warm-started solve.
    """
    settings = settings or MultistartAdamSettings()
    problem.check_contexts(contexts)
    device = contexts.device
    if generator is None:
        generator = torch.Generator(device=device).manual_seed(0)
    synchronize(device)
    start = time.perf_counter()
    y0 = initial if initial is not None else problem.initial_guesses(contexts, settings.restarts, generator)
    restarts, n, d = y0.shape
    x_rep = contexts.unsqueeze(0).expand(restarts, -1, -1).reshape(restarts * n, -1)
    y = y0.reshape(restarts * n, d).clone().requires_grad_(True)
    opt = torch.optim.Adam([y], lr=settings.learning_rate)
    best_value = torch.full((n,), float("inf"), device=device)
    best_y = torch.zeros(n, d, device=device)
    trace: list[tuple[int, float, torch.Tensor]] = []

    def keep_best(values: torch.Tensor, ys: torch.Tensor) -> None:
        per_start = values.detach().reshape(restarts, n)
        v, idx = per_start.min(dim=0)
        better = v < best_value
        cand = ys.detach().reshape(restarts, n, d)[idx, torch.arange(n, device=device)]
        best_value.copy_(torch.where(better, v, best_value))
        best_y.copy_(torch.where(better.unsqueeze(1), cand, best_y))

    for it in range(settings.steps + 1):
        values = problem.objective(y, x_rep)
        keep_best(values, y)
        if it % settings.record_every == 0 or it == settings.steps:
            synchronize(device)
            trace.append((it, time.perf_counter() - start, best_value.clone()))
        if it == settings.steps:
            break
        opt.zero_grad(set_to_none=True)
        values.sum().backward()
        opt.step()
    synchronize(device)
    seconds = time.perf_counter() - start
    return SolveResult(problem.canonicalize(best_y), best_value.clone(), seconds, trace)
