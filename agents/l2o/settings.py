"""The learning-to-optimize agent's settings (unrolled-objective loss) and the env it trains on."""

from __future__ import annotations

from dataclasses import dataclass

from agents.common.config import ObjectiveAgentSettings
from learned_optimizers.common.settings import setting


@dataclass
class L2OObjectiveSettings(ObjectiveAgentSettings):
    """Andrychowicz et al.'s loss: backpropagate the objective through (truncated) unrolls of the learned optimizer."""

    kind: str = setting("l2o_objective", choices=("l2o_objective",))
    hidden_sizes: tuple[int, ...] = setting((32, 32), ge=1, le=65_536, doc="the per-coordinate network's hidden layers")
    learning_rate: float = setting(3e-3, gt=0.0)
    batch_size: int = setting(64, ge=1, le=1_048_576, doc="tasks per unroll (the env's num_envs)")
    truncation: int = setting(0, ge=0, doc="steps per truncated unroll, one gradient step each; 0 = the whole horizon")
    loss: str = setting("log_ratio", choices=("log_ratio", "ratio", "log_gap"),
                        doc="log_ratio: mean log10 f_t / f_0 over the unroll; ratio: mean f_t / f_0 (Li & Malik's summed cost); "
                            "log_gap: mean log10 (f_t - f_ref) / (f_0 - f_ref), f_ref = tuned Adam's best in 2 horizons on the same tasks")
    second_order: bool = setting(False, doc="differentiate through the gradients too (double backprop); "
                                             "false: Andrychowicz et al.'s first-order approximation")
    grad_clip: float = setting(1.0, gt=0.0, doc="max gradient norm")


L2O_ENV = "amortize/LearnToOptimize-v0"
