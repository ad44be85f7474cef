"""Per-instance solvers: the classical methods that amortized models are judged against.

``multistart_adam`` solves min_y f(y; x) for a whole batch of contexts at once:
every (restart, context) pair is an independent problem, and because the loss
is a sum over rows, Adam's per-coordinate state keeps them independent. The
best restart per context is the solver's answer.

For learning to optimize, the first-order methods a learned update must beat
(gradient descent, heavy-ball momentum, Adam) run batched over tasks with a
learning rate per task, so a learning-rate sweep is one batched run
(``tune_learning_rate``); L-BFGS is scipy's, one task at a time in float64.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property
from typing import Callable

import numpy as np
import torch

from learned_optimizers.common.traces import first_hit

# ---------------------------------------------------------------- first-order optimizers over tasks
#: the batched first-order methods; each has one learning rate (tuned per family)
FIRST_ORDER_METHODS = ("gd", "momentum", "adam")
#: every reported method: the first-order ones and scipy's L-BFGS
CLASSICAL_OPTIMIZERS = (*FIRST_ORDER_METHODS, "lbfgs")
ADAM_BETAS = (0.9, 0.999)
ADAM_EPS = 1e-8
MOMENTUM = 0.9
#: learning rates tried by the sweep: 10^-4 .. 10^1 in quarter decades
LEARNING_RATE_GRID = tuple(float(10.0 ** (e / 4)) for e in range(-16, 5))
#: seed of the tasks a sweep tunes on (training-side: held-out tasks use the eval seed)
TUNING_SEED = 424_242

#: f(phi; x) per row
Objective = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def value_and_grad(objective: Objective, phi: torch.Tensor, x: torch.Tensor,
                   keep_graph: bool = False, second_order: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """f(phi) per task and its gradient.

    ``keep_graph``: the value stays differentiable in phi (for an unrolled loss);
    the gradient is then a constant (Andrychowicz et al.'s first-order
    approximation) unless ``second_order``, which keeps it differentiable too
    (double backprop). Otherwise both come back detached, and autograd is used
    locally even under ``no_grad``.
    """
    if keep_graph and phi.requires_grad:
        value = objective(phi, x)
        (grad,) = torch.autograd.grad(value.sum(), phi, retain_graph=True, create_graph=second_order)
        return value, grad
    with torch.enable_grad():
        p = phi.detach().requires_grad_(True)
        value = objective(p, x)
        (grad,) = torch.autograd.grad(value.sum(), p)
    return value.detach(), grad


@dataclass
class AdamMoments:
    """Adam's per-coordinate state, with a step count per task (tasks of a batch may restart apart)."""

    m: torch.Tensor  # (B, p)
    v: torch.Tensor  # (B, p)
    t: torch.Tensor  # (B,) long: gradients seen

    @classmethod
    def zeros_like(cls, phi: torch.Tensor) -> "AdamMoments":
        return cls(torch.zeros_like(phi), torch.zeros_like(phi), torch.zeros(phi.shape[0], dtype=torch.long, device=phi.device))

    def update(self, grad: torch.Tensor) -> "AdamMoments":
        b1, b2 = ADAM_BETAS
        return AdamMoments(b1 * self.m + (1 - b1) * grad, b2 * self.v + (1 - b2) * grad * grad, self.t + 1)

    # computed once per moments (they are never changed in place): a learned step reads the direction twice and
    # the corrections three times, each a handful of small ops
    @cached_property
    def _corrections(self) -> tuple[torch.Tensor, torch.Tensor]:
        t = self.t.clamp(min=1).unsqueeze(1).double()  # 1 - 0.999^t loses digits in float32
        return (1 - ADAM_BETAS[0] ** t).to(self.m.dtype), (1 - ADAM_BETAS[1] ** t).to(self.m.dtype)

    @cached_property
    def _direction(self) -> torch.Tensor:
        c1, c2 = self._corrections
        return (self.m / c1) / ((self.v / c2).sqrt() + ADAM_EPS)

    def direction(self) -> torch.Tensor:
        """Bias-corrected m / (sqrt(v) + eps): the step of Adam with learning rate 1."""
        return self._direction

    def rms(self) -> torch.Tensor:
        """sqrt of the bias-corrected second moment: each coordinate's recent gradient scale."""
        return (self.v / self._corrections[1]).sqrt()

    def where(self, mask: torch.Tensor, other: "AdamMoments") -> "AdamMoments":
        m = mask.unsqueeze(1)
        return AdamMoments(torch.where(m, other.m, self.m), torch.where(m, other.v, self.v), torch.where(mask, other.t, self.t))




@dataclass
class OptimizerTrace:
    """What an optimizer went through on a batch of tasks."""

    values: torch.Tensor  # (B, T + 1) f(phi_k), k = 0..T (nan once diverged)
    phi: torch.Tensor  # (B, p) the last iterate
    evaluations: torch.Tensor | None = None  # (B,) objective+gradient evaluations (L-BFGS's line search spends more than one per step)

    def steps_to(self, target: torch.Tensor) -> torch.Tensor:
        """Steps until f first reaches ``target`` (B,) (inf where it never does)."""
        first, reached = first_hit(self.values <= target.unsqueeze(1))
        return torch.where(reached, first.to(self.values.dtype), math.inf)


def _as_rates(lr: float | torch.Tensor, phi: torch.Tensor) -> torch.Tensor:
    rates = torch.as_tensor(lr, dtype=phi.dtype, device=phi.device)
    if rates.ndim == 0:
        rates = rates.expand(phi.shape[0])
    if rates.shape != (phi.shape[0],):
        raise ValueError(f"learning rate must be a number or one per task ({phi.shape[0]},), got shape {tuple(rates.shape)}")
    if not bool((rates > 0).all()):
        raise ValueError("learning rates must be > 0")
    return rates.unsqueeze(1)


@torch.no_grad()
def first_order_trace(objective: Objective, x: torch.Tensor, phi0: torch.Tensor, method: str,
                      lr: float | torch.Tensor, steps: int) -> OptimizerTrace:
    """Run ``method`` (gd, momentum, adam) for ``steps`` steps on every task; ``lr`` may differ per task.

    A task whose objective or iterate turns NaN/inf keeps NaN from then on (it diverged).
    """
    if method not in FIRST_ORDER_METHODS:
        raise ValueError(f"method={method!r}; allowed: {', '.join(FIRST_ORDER_METHODS)}")
    rates = _as_rates(lr, phi0)
    phi = phi0.detach().clone()
    value, grad = value_and_grad(objective, phi, x)
    values = [value]
    velocity = torch.zeros_like(phi)
    adam = AdamMoments.zeros_like(phi)
    for _ in range(steps):
        if method == "gd":
            phi = phi - rates * grad
        elif method == "momentum":
            velocity = MOMENTUM * velocity + grad
            phi = phi - rates * velocity
        else:
            adam = adam.update(grad)
            phi = phi - rates * adam.direction()
        value, grad = value_and_grad(objective, phi, x)
        values.append(value)
    trace = torch.stack(values, 1)
    bad = ~torch.isfinite(trace)
    trace = torch.where(bad.cummax(1).values, torch.full_like(trace, math.nan), trace)
    return OptimizerTrace(trace, phi)


def lbfgs_trace(objective: Objective, x: torch.Tensor, phi0: torch.Tensor, steps: int, memory: int = 10) -> OptimizerTrace:
    """scipy's L-BFGS-B (no bounds) for ``steps`` iterations per task, in float64, one task at a time.

    ``values[:, k]`` is f after iteration k; once scipy stops early (converged)
    the last value is carried forward. ``evaluations`` counts scipy's objective
    and gradient evaluations (its line search may spend several per iteration).
    """
    x64, phi64 = x.detach().double().cpu(), phi0.detach().double().cpu()
    values = np.full((x.shape[0], steps + 1), np.nan)
    finals = np.zeros(tuple(phi0.shape))
    evaluations = np.zeros(x.shape[0])
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # one tiny task at a time: thread hand-offs would cost more than the math
    try:
        for i in range(x.shape[0]):
            _lbfgs_one(objective, x64[i: i + 1], phi64[i], steps, memory, values[i], finals[i], evaluations[i: i + 1])
    finally:
        torch.set_num_threads(threads)
    return OptimizerTrace(torch.from_numpy(values).to(x.device, x.dtype), torch.from_numpy(finals).to(x.device, x.dtype),
                          torch.from_numpy(evaluations).to(x.device))


def _lbfgs_one(objective: Objective, xi: torch.Tensor, phi0: torch.Tensor, steps: int, memory: int,
               values: np.ndarray, final: np.ndarray, evaluations: np.ndarray) -> None:
    """One task's L-BFGS run, written into the given rows."""
    from scipy.optimize import minimize

    def fun(p: np.ndarray) -> tuple[float, np.ndarray]:
        value, grad = value_and_grad(objective, torch.from_numpy(p).unsqueeze(0), xi)
        return float(value[0]), grad[0].numpy()

    record = [fun(phi0.numpy())[0]]
    result = minimize(fun, phi0.numpy(), jac=True, method="L-BFGS-B",
                      callback=lambda intermediate_result: record.append(float(intermediate_result.fun)),
                      options={"maxiter": steps, "maxfun": 20 * steps, "maxcor": memory, "ftol": 0.0, "gtol": 0.0})
    record = record[: steps + 1]
    values[: len(record)] = record
    values[len(record):] = record[-1]
    final[:], evaluations[0] = result.x, result.nfev


@dataclass(frozen=True)
class LearningRateSweep:
    """A sweep's outcome: the chosen rate and each tried rate's score (mean f_T / f_0; inf if any task diverged)."""

    method: str
    steps: int
    best: float
    scores: dict[float, float]


def tune_learning_rate(objective: Objective, x: torch.Tensor, phi0: torch.Tensor, method: str, steps: int,
                       grid: tuple[float, ...] = LEARNING_RATE_GRID) -> LearningRateSweep:
    """The rate of ``grid`` with the lowest mean f(phi_steps) / f(phi_0) over the given tasks, all rates in one batched run."""
    if not grid:
        raise ValueError("grid: at least one learning rate is needed")
    k, n = len(grid), x.shape[0]
    rates = torch.tensor(grid, dtype=phi0.dtype, device=phi0.device).repeat_interleave(n)
    trace = first_order_trace(objective, x.repeat(k, 1), phi0.repeat(k, 1), method, rates, steps)
    ratio = (trace.values[:, -1] / trace.values[:, 0]).reshape(k, n)
    score = torch.where(torch.isfinite(ratio).all(1), ratio.mean(1), torch.full((k,), math.inf, dtype=ratio.dtype, device=ratio.device))
    scores = {lr: float(s) for lr, s in zip(grid, score.tolist())}
    best = min(scores, key=scores.__getitem__)
    if not math.isfinite(scores[best]):
        raise ValueError(f"{method}: every learning rate of the sweep ({min(grid):g} to {max(grid):g}) diverged on some task; "
                         "the family's objective or starting points give NaN/inf")
    return LearningRateSweep(method, steps, best, scores)
