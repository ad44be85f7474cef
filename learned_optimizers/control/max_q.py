"""max_u Q(x, u) over an action box, batched over states: the problem an actor-critic policy amortizes.

An actor pi(x) is trained to output argmax_u Q(x, u) in one forward pass. The
reference it is judged against is solving that problem from scratch, state by
state, with a gradient method. Here the iterate lives in an unconstrained
variable z with u = mid + half * tanh(z), so Adam never leaves the box (or,
for a start on a saturated policy action, where tanh's slope vanishes, Adam on u
clipped back into the box after each step), and every state is its own problem: Adam is elementwise and the loss is a sum of
per-state terms, so one batched Adam is exactly one Adam per state.

Q is any differentiable callable (states, actions) -> values; this module knows
nothing of stable-baselines3.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import torch

from learned_optimizers.common.problem import ActionBox
from learned_optimizers.common.timing import synchronize

#: (states (n, obs_dim), actions (n, act_dim)) -> Q values (n,)
QFunction = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]





def normalized_value(q: torch.Tensor, q_zero: torch.Tensor, q_policy: torch.Tensor) -> torch.Tensor:
    """Per state: (q - q_policy) / (q_policy - q_zero), so the zero action scores -1 and the policy 0.

    States where the policy does not beat the zero action give a non-positive
    denominator; callers exclude them (see ``informative_states``)."""
    return (q - q_policy) / (q_policy - q_zero)


def informative_states(q_zero: torch.Tensor, q_policy: torch.Tensor, rel_tol: float = 1e-6) -> torch.Tensor:
    """States whose normalization is meaningful: Q(x, pi(x)) above Q(x, 0) by more than a relative hair."""
    scale = torch.maximum(q_zero.abs(), q_policy.abs()).clamp_min(1.0)
    return (q_policy - q_zero) > rel_tol * scale


@dataclass
class AdamTrace:
    """What a from-scratch solve records: iterations, seconds since the start, and Q at those iterates."""

    iterations: list[int] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    values: list[torch.Tensor] = field(default_factory=list)


PARAMETERIZATIONS = ("tanh", "clip")


def maximize_q(q_fn: QFunction, states: torch.Tensor, start: torch.Tensor, box: ActionBox, learning_rate: float,
               iterations: int, record_every: int = 0, parameterization: str = "tanh") -> tuple[torch.Tensor, AdamTrace]:
    """Adam on -Q(x, u) from ``start`` for ``iterations`` steps, every state at once.

    ``tanh``: Adam on z with u = mid + half tanh(z) (the from-scratch solve, started
    at the box's interior); ``clip``: Adam on u, clipped into the box after each
    step (a refinement started at an action that may sit on a bound).

    Returns the final actions and, with ``record_every`` > 0, the value of the
    iterate at iteration 0, every ``record_every`` iterations and at the end,
    with the wall-clock seconds spent (device synchronized, recording excluded).
    Gradients flow to z only: Q's own parameters are left untouched."""
    if iterations < 0:
        raise ValueError(f"iterations must be >= 0, got {iterations}")
    if learning_rate <= 0:
        raise ValueError(f"learning_rate must be > 0, got {learning_rate}")
    if parameterization not in PARAMETERIZATIONS:
        raise ValueError(f"parameterization={parameterization!r} is not allowed; allowed: {', '.join(PARAMETERIZATIONS)}")
    tanh = parameterization == "tanh"
    start = start.detach().float()
    z = (box.to_unconstrained(start) if tanh else torch.minimum(torch.maximum(start, box.low), box.high)).clone()
    z.requires_grad_(True)
    to_box = box.to_box if tanh else (lambda v: v)
    opt = torch.optim.Adam([z], lr=learning_rate)
    trace = AdamTrace()
    elapsed = 0.0

    def record(it: int, q: torch.Tensor) -> None:
        trace.iterations.append(it)
        trace.seconds.append(elapsed)
        trace.values.append(q.detach().clone())

    synchronize(states.device)
    t0 = time.perf_counter()
    for it in range(iterations):
        with torch.enable_grad():
            q = q_fn(states, to_box(z))
            (grad,) = torch.autograd.grad(q.sum(), z)
        z.grad = -grad
        if record_every and it % record_every == 0:
            synchronize(states.device)
            elapsed += time.perf_counter() - t0
            record(it, q)
            t0 = time.perf_counter()
        opt.step()
        if not tanh:
            with torch.no_grad():
                z.copy_(torch.minimum(torch.maximum(z, box.low), box.high))
    synchronize(states.device)
    elapsed += time.perf_counter() - t0
    u = to_box(z.detach())
    if record_every:
        with torch.no_grad():
            record(iterations, q_fn(states, u))
    return u, trace


def semi_amortized_actions(q_fn: QFunction, states: torch.Tensor, policy_actions: torch.Tensor, box: ActionBox,
                           steps: int, learning_rate: float) -> torch.Tensor:
    """pi(x) refined by ``steps`` Adam steps on Q (IAPO-style semi-amortization); 0 steps = the policy.

    Adam works on u clipped to the box: a policy's tanh output often sits on a
    bound, where a tanh parameterization would barely move."""
    if steps == 0:
        return policy_actions
    u, _ = maximize_q(q_fn, states, policy_actions, box, learning_rate, steps, parameterization="clip")
    return u
