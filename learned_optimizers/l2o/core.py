"""Learning to optimize as a batched iteration: the core shared by the env, the agents and the benchmark.

An ``L2OState`` holds a batch of training runs, one per task. ``advance``
applies a per-coordinate action a to Adam's step d_Adam (bias-corrected
m / sqrt(v)), in one of two forms (``settings.action``):

    correction:  phi+ = phi + lr * (a - d_Adam)       (any move, in units of the learning rate)
    step_scale:  phi+ = phi - lr * exp(a) * d_Adam    (a learned per-coordinate step size)

so the zero action *is* Adam with learning rate ``lr`` (the family's tuned rate
unless the settings fix one), and evaluates the objective and its gradient
once. A correction can move anywhere, but it does not shrink at the optimum
(the trained updates stall near 1e-5 relative suboptimality); a step scale
shrinks with Adam's steps but can only rescale them, and trained worse on
logreg (74 vs 34 steps to Adam's step-100 objective after 600 unrolls).

``observe`` gives each coordinate the same scale-free features (Li & Malik's
history of gradients and objective changes):

* Adam's direction d (bias-corrected m / sqrt(v)),
* the last H gradients of the coordinate divided by its gradient RMS, asinh-compressed,
* the last H moves of the coordinate in units of the learning rate (with the
  gradients, what a secant estimate of its curvature needs), asinh-compressed,
* the last H relative objective changes (f_k - f_{k-1}) / |f_{k-1}| as signed logs (shared by all coordinates),
* log10 f / f_0 and the fraction of the horizon done.

A network applied per coordinate on these (``CoordinatewiseUpdate``) serves
parameter vectors of any size and is permutation equivariant by construction.
The same functions run under ``no_grad`` in the env and under autograd when an
agent backpropagates the objective through an unroll: by default gradients are
inputs, not differentiated (the first-order approximation of Andrychowicz et
al.); second-order unrolls differentiate through them too, which non-convex
objectives need (on ``robust`` the first-order meta-gradient does not even
lower the training loss on a fixed batch). The objective-change, move and
progress features stay constants either way: differentiating through them as
well was measured to train worse (robust, 350 steps: 63 vs 35 steps to Adam's
step-100 objective).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, replace
from enum import IntEnum

import torch

from learned_optimizers.common.features import compress
from learned_optimizers.common.iteration import Policy, iterate
from learned_optimizers.l2o.classical import (
    TUNING_SEED,
    AdamMoments,
    LearningRateSweep,
    OptimizerTrace,
    tune_learning_rate,
    value_and_grad,
)
from learned_optimizers.l2o.tasks import L2OTaskSettings, TrainingTaskFamily

#: tasks the learning-rate sweep tunes on
TUNING_TASKS = 64
_LOG_SCALE = 8.0
#: every feature lies in [-FEATURE_BOUND, FEATURE_BOUND] (the env's observation space)
FEATURE_BOUND = 16.0


class L2OStatus(IntEnum):
    RUNNING = 0
    MAX_STEPS = 1  # the horizon was reached
    DIVERGED = 2  # phi or f is NaN/inf, or f rose above blowup * f_0

    @property
    def label(self) -> str:
        return self.name.lower()


def features_per_coordinate(settings: L2OTaskSettings) -> int:
    return 3 * settings.history + 3


@dataclass
class L2OState:
    phi: torch.Tensor  # (B, p)
    value: torch.Tensor  # (B,) f(phi), differentiable in the actions during an unroll
    grad: torch.Tensor  # (B, p)
    adam: AdamMoments
    #: history first: a step shifts whole (B, p) blocks and the features are built as contiguous (F, B, p) blocks
    #: (history last, each shift and feature concatenation copied 25 short rows per coordinate: 0.5 ms of a 3 ms
    #: learned step on 512 logistic regressions); both kept in the features' dtype (``start``'s ``history_dtype``),
    #: whose float32 halves their memory traffic against float64 tasks
    grads: torch.Tensor  # (H, B, p) past gradients, newest first (zero where not yet filled)
    moves: torch.Tensor  # (H, B, p) past steps phi_k - phi_{k-1} over the learning rate, newest first
    changes: torch.Tensor  # (B, H) past relative objective changes, newest first
    initial_value: torch.Tensor  # (B,) f(phi_0)
    steps: torch.Tensor  # (B,) long
    #: gradients (so Adam's moments and the gradient features) stay differentiable in phi
    second_order: bool = False

    def where(self, mask: torch.Tensor, other: "L2OState") -> "L2OState":
        m1, m2 = mask.unsqueeze(1), mask.view(1, -1, 1)
        return L2OState(torch.where(m1, other.phi, self.phi), torch.where(mask, other.value, self.value),
                        torch.where(m1, other.grad, self.grad), self.adam.where(mask, other.adam),
                        torch.where(m2, other.grads, self.grads), torch.where(m2, other.moves, self.moves),
                        torch.where(m1, other.changes, self.changes),
                        torch.where(mask, other.initial_value, self.initial_value), torch.where(mask, other.steps, self.steps),
                        self.second_order)

    def detached(self) -> "L2OState":
        """The same state cut from the autograd graph (the truncation point of a truncated unroll)."""
        phi = self.phi.detach().requires_grad_(self.phi.requires_grad)
        adam = AdamMoments(self.adam.m.detach(), self.adam.v.detach(), self.adam.t)
        return replace(self, phi=phi, value=self.value.detach(), grad=self.grad.detach(), adam=adam,
                       grads=self.grads.detach(), moves=self.moves.detach(), changes=self.changes.detach())

    def diverged(self, settings: L2OTaskSettings) -> torch.Tensor:
        finite = torch.isfinite(self.value) & torch.isfinite(self.phi).all(1)
        return ~finite | (self.value.detach().abs() > settings.blowup * self.initial_value.abs())


_TUNED: dict[tuple, LearningRateSweep] = {}


def tuned_learning_rate(tasks: TrainingTaskFamily, method: str = "adam") -> LearningRateSweep:
    """``method``'s learning rate tuned on training tasks of the family (seed ``TUNING_SEED``) over the horizon.

    Computed once per (family, settings, method) and process; deterministic.
    """
    key = (tasks.family, replace(tasks.settings, learning_rate=0.0), method)
    if key not in _TUNED:
        gen = torch.Generator().manual_seed(TUNING_SEED)
        x = tasks.sample_contexts(TUNING_TASKS, gen)
        phi0 = tasks.initial_iterate(x, gen)
        _TUNED[key] = tune_learning_rate(tasks.objective, x, phi0, method, tasks.settings.horizon)
    return _TUNED[key]


def base_learning_rate(tasks: TrainingTaskFamily) -> float:
    """The Adam step size the action corrects: the settings' value, or the tuned one when it is 0."""
    return tasks.settings.learning_rate or tuned_learning_rate(tasks, "adam").best


def start(tasks: TrainingTaskFamily, x: torch.Tensor, phi0: torch.Tensor, keep_graph: bool = False,
          second_order: bool = False, history_dtype: torch.dtype | None = None) -> L2OState:
    """Evaluate f and its gradient at phi_0; Adam's moments take that first gradient. The gradient and move
    histories are kept in ``history_dtype`` (default: the tasks'), what the features are computed in."""
    tasks.check_contexts(x)
    tasks.check_iterates(phi0, x)
    H = tasks.settings.history
    phi = phi0.to(x.dtype)
    if keep_graph:
        phi = phi.detach().requires_grad_(True)
    value, grad = value_and_grad(tasks.objective, phi, x, keep_graph, second_order)
    B, p = phi.shape
    grads = torch.zeros(H, B, p, dtype=history_dtype or x.dtype, device=x.device)
    grads[0] = grad
    return L2OState(phi, value, grad, AdamMoments.zeros_like(phi.detach()).update(grad), grads, torch.zeros_like(grads),
                    torch.zeros(B, H, dtype=x.dtype, device=x.device), value.detach(),
                    torch.zeros(B, dtype=torch.long, device=x.device), second_order)


def advance(tasks: TrainingTaskFamily, x: torch.Tensor, state: L2OState, action: torch.Tensor | None, lr: float,
            keep_graph: bool = False) -> L2OState:
    """One optimizer step under ``action`` (``None`` = the zero action = Adam), then f and its gradient
    (differentiable too when the state is second-order)."""
    direction = state.adam.direction()
    if action is None:
        update = -direction
    elif tasks.settings.action == "correction":
        update = action.to(state.phi.dtype) - direction
    else:
        update = -torch.exp(action.to(state.phi.dtype)) * direction
    phi = state.phi + lr * update
    value, grad = value_and_grad(tasks.objective, phi, x, keep_graph, state.second_order)
    previous = state.value.detach()
    change = (value.detach() - previous) / previous.abs().clamp(min=torch.finfo(previous.dtype).tiny)
    grads = torch.cat([grad.to(state.grads.dtype).unsqueeze(0), state.grads[:-1]], 0)
    moves = torch.cat([update.detach().to(state.moves.dtype).unsqueeze(0), state.moves[:-1]], 0)
    changes = torch.cat([change.unsqueeze(1), state.changes[:, :-1]], 1)
    return L2OState(phi, value, grad, state.adam.update(grad), grads, moves, changes, state.initial_value, state.steps + 1,
                    state.second_order)


def _signed_log(v: torch.Tensor) -> torch.Tensor:
    """sign(v) (log10 |v| + 8) / 8 on |v| in [1e-8, 1e2]: 0 for |v| <= 1e-8, at most 1.25."""
    return torch.sign(v) * (torch.log10(v.abs().clamp(1e-8, 1e2)) + 8.0) / _LOG_SCALE


def observe(state: L2OState, settings: L2OTaskSettings, dtype: torch.dtype | None = None) -> torch.Tensor:
    """(B, p, 3H + 3) scale-free features of every coordinate (see the module docstring), in ``dtype``
    (default: the state's). A float32 network reads them in float32: computing them so halves a learned
    step's feature cost against float64 tasks (measured on 512 logistic regressions).

    Built as contiguous (3H + 3, B, p) blocks and returned as its (B, p, 3H + 3) view: a linear layer reads
    that view as a transposed matrix, without a copy."""
    H, B, p = state.grads.shape
    rms = state.adam.rms().to(state.grads.dtype).clamp(min=torch.finfo(state.grads.dtype).tiny)
    grads = compress(state.grads / rms, dtype)
    changes = _signed_log(state.changes).to(grads.dtype).T.unsqueeze(2).expand(H, B, p)
    progress = torch.log10((state.value.detach() / state.initial_value).abs().clamp(1e-12, 1e12)) / _LOG_SCALE
    fraction = (state.steps.to(progress.dtype) / settings.horizon).clamp(max=1.0)
    tail = torch.stack([progress, fraction]).to(grads.dtype).unsqueeze(2).expand(2, B, p)
    out = torch.cat([compress(state.adam.direction(), dtype).unsqueeze(0), grads, compress(state.moves, dtype), changes,
                     tail])
    if torch.is_grad_enabled() and out.requires_grad:
        out = torch.nan_to_num(out, nan=0.0, posinf=_LOG_SCALE, neginf=-_LOG_SCALE).clamp(-FEATURE_BOUND, FEATURE_BOUND)
    else:
        out = out.nan_to_num_(nan=0.0, posinf=_LOG_SCALE, neginf=-_LOG_SCALE).clamp_(-FEATURE_BOUND, FEATURE_BOUND)
    return out.permute(1, 2, 0)


@dataclass(frozen=True)
class L2OIteration:
    """Training on ``tasks`` at learning rate ``lr`` as a ``BatchedIteration``: a (B, p, F) observation,
    a (B, p) action, zero action = Adam. There is no default start: pass the initial parameters."""

    tasks: TrainingTaskFamily
    lr: float
    keep_graph: bool = False
    second_order: bool = False
    #: the observation's dtype (None: the state's): a policy's own precision
    feature_dtype: torch.dtype | None = None

    def start(self, x: torch.Tensor, initial: torch.Tensor | None = None) -> L2OState:
        if initial is None:
            raise ValueError("learning to optimize has no default start: pass the initial parameters phi0 "
                             "(e.g. tasks.initial_iterate(x, generator))")
        return start(self.tasks, x, initial, self.keep_graph, self.second_order, self.feature_dtype)

    def advance(self, x: torch.Tensor, state: L2OState, action: torch.Tensor | None) -> L2OState:
        return advance(self.tasks, x, state, action, self.lr, self.keep_graph)

    def observe(self, state: L2OState) -> torch.Tensor:
        return observe(state, self.tasks.settings, self.feature_dtype)


def unroll(tasks: TrainingTaskFamily, x: torch.Tensor, state: L2OState, steps: int, policy: Policy,
           lr: float) -> tuple[torch.Tensor, L2OState]:
    """Differentiable: f(phi_k) / f(phi_0) for the next ``steps`` steps, (B, steps), and the state after them.

    Start from ``start(..., keep_graph=True)``; with ``second_order=True`` there the gradients (and Adam's
    moments and the gradient features built from them) stay differentiable in phi, while the objective-change,
    move and progress features stay constants. Cut with ``state.detached()`` for truncated unrolls.
    """
    method = L2OIteration(tasks, lr, keep_graph=True, second_order=state.second_order)
    values = []
    for state in itertools.islice(iterate(method, x, steps, policy, state=state), 1, None):
        values.append(state.value)
    return torch.stack(values, 1) / state.initial_value.unsqueeze(1), state


def rollout(tasks: TrainingTaskFamily, x: torch.Tensor, phi0: torch.Tensor, steps: int, policy: Policy,
            lr: float | None = None) -> torch.Tensor:
    """Differentiable: f(phi_k) / f(phi_0) for k = 0..steps, shape (B, steps + 1)."""
    lr = base_learning_rate(tasks) if lr is None else lr
    state = start(tasks, x, phi0, keep_graph=True)
    ratios, _ = unroll(tasks, x, state, steps, policy, lr)
    return torch.cat([torch.ones_like(ratios[:, :1]), ratios], 1)


@torch.no_grad()
def solve(tasks: TrainingTaskFamily, x: torch.Tensor, phi0: torch.Tensor, steps: int, policy: Policy | None = None,
          lr: float | None = None, feature_dtype: torch.dtype | None = None) -> OptimizerTrace:
    """Run the method ``policy`` defines (Adam when ``None``) for ``steps`` steps; diverged tasks read NaN from then on.
    ``feature_dtype``: what the policy reads its features in (default: the tasks' dtype)."""
    lr = base_learning_rate(tasks) if lr is None else lr
    states = iterate(L2OIteration(tasks, lr, feature_dtype=feature_dtype), x, steps, policy, phi0)
    state = next(states)
    values, dead = [state.value], state.diverged(tasks.settings)
    for state in states:
        dead = dead | state.diverged(tasks.settings)
        values.append(torch.where(dead, torch.full_like(state.value, math.nan), state.value))
    return OptimizerTrace(torch.stack(values, 1), state.phi)
