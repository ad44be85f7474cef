"""Control as amortized optimization: max_u Q(x, u) over the states a policy visits.

(f, Y, X, p(x)) = (-Q(x, u) with Q the agent's learned critic, the env's action
box, its observations, the states of the policy's own episodes). Q is learned,
so the family holds no objective of its own: its settings say how the problem
is solved from scratch for the amortization gap, and how a semi-amortized
policy refines pi(x) at act time.
"""

from __future__ import annotations

from dataclasses import dataclass

from learned_optimizers.common.settings import setting, validate


@dataclass(frozen=True)
class MaxQSettings:
    gap_states: int = setting(1000, ge=1, doc="states used by `amortize gap`, from deterministic episodes seeded eval.seed, eval.seed + 1, ...")
    gap_learning_rate: float = setting(5e-3, gt=0.0, doc="Adam's step size when solving max_u Q from the zero action")
    gap_iterations: int = setting(500, ge=1, doc="Adam iterations of the from-scratch solve")
    gap_record_every: int = setting(5, ge=1, doc="iterations between recorded values (and clock reads)")
    reach_level: float = setting(-0.01, le=0.0, doc="mean normalized value at which Adam counts as matching the policy (0)")
    semi_amortized_steps: int = setting(0, ge=0, doc="k: Adam steps on Q after pi(x) when acting in `amortize eval` (0: the policy)")
    semi_amortized_learning_rate: float = setting(5e-3, gt=0.0, doc="Adam's step size of the semi-amortized policy")

    def __post_init__(self) -> None:
        validate(self)


class MaxQProblem:
    """The max-Q problem of a control run; its Q comes from the trained agent."""

    family = "max_q"

    def __init__(self, settings: MaxQSettings | None = None, **kwargs) -> None:
        if settings is not None and kwargs:
            raise TypeError("pass either settings or keyword arguments, not both")
        self.settings = settings if settings is not None else MaxQSettings(**kwargs)
