"""The iteration protocol that the optimizer-as-MDP domains share.

A learned optimizer here corrects a classical batched iteration: ``start``
evaluates the first iterate of every context, ``advance`` takes one step under
an action (``None`` is the zero action, i.e. the classical method itself) and
``observe`` turns a state into the policy's scale-free features. The
fixed-point domain (Anderson / NeuralFP / HyperAnderson) and learning to
optimize (Adam / a coordinatewise update) implement it; their environments
step it under an agent's actions, and ``iterate`` runs it under a policy for
the solvers, rollouts and benchmarks.
"""

from __future__ import annotations

from typing import Callable, Iterator, Protocol, TypeVar, runtime_checkable

import torch

State = TypeVar("State")

#: observation -> action; ``None`` in its place is the zero action (the classical method)
Policy = Callable[[torch.Tensor], torch.Tensor]


@runtime_checkable
class BatchedIteration(Protocol[State]):
    """One batched iterative method whose steps an action corrects."""

    def start(self, x: torch.Tensor, initial: torch.Tensor | None = None) -> State:
        """The state at the first iterate of each context in ``x``; ``None`` is the method's default start
        (a method without one raises ``ValueError``)."""
        ...

    def advance(self, x: torch.Tensor, state: State, action: torch.Tensor | None) -> State:
        """One step under ``action``; ``None`` takes the classical step."""
        ...

    def observe(self, state: State) -> torch.Tensor:
        """The policy's features of ``state``."""
        ...


def iterate(method: BatchedIteration[State], x: torch.Tensor, steps: int, policy: Policy | None = None,
            initial: torch.Tensor | None = None, state: State | None = None) -> Iterator[State]:
    """Yield the state it starts from, then the state after each of ``steps`` steps under ``policy``.

    ``state`` continues from that state instead of starting anew (truncated
    unrolls). Gradients flow through whatever the method keeps differentiable.
    """
    if state is None:
        state = method.start(x, initial)
    yield state
    for _ in range(steps):
        action = None if policy is None else policy(method.observe(state))
        state = method.advance(x, state, action)
        yield state
