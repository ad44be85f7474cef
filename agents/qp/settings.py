"""The RLQP agent's settings (the qp domain's config section ``agent``)."""

from __future__ import annotations

from dataclasses import dataclass

from learned_optimizers.common.settings import setting


@dataclass
class RLQPAgentSettings:
    """RLQP's TD3: a shared per-constraint actor and twin critics, trained on per-row transitions."""

    kind: str = setting("rlqp_td3", choices=("rlqp_td3",))
    hidden_sizes: tuple[int, ...] = setting((48, 48, 48), ge=1, le=65_536)
    actor_learning_rate: float = setting(1e-4, gt=0.0)
    critic_learning_rate: float = setting(1e-3, gt=0.0)
    num_envs: int = setting(16, ge=1, le=4096, doc="QPs advancing together in the batched env")
    batch_size: int = setting(1024, ge=1, le=1_048_576, doc="row transitions per gradient step")
    buffer_size: int = setting(500_000, ge=1, doc="row transitions kept")
    rows_per_problem: int = setting(64, ge=1, doc="row transitions stored per problem and env step, at most")
    learning_starts: int = setting(20, ge=0, doc="env steps before the first update")
    gradient_steps: int = setting(8, ge=1, doc="updates per env step")
    gamma: float = setting(0.95, ge=0.0, le=1.0)
    tau: float = setting(0.005, gt=0.0, le=1.0)
    policy_delay: int = setting(2, ge=1)
    exploration_noise: float = setting(0.5, ge=0.0, doc="Gaussian noise std on log10 rho while acting")
    target_noise: float = setting(0.2, ge=0.0, doc="target policy smoothing std (log10 rho)")
    target_noise_clip: float = setting(0.5, ge=0.0)
    eval_problems_per_size: int = setting(2, ge=1, doc="held-out problems per (class, size) logged during training")
