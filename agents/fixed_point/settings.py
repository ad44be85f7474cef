"""The fixed-point agents' settings (NeuralFP's and HyperAnderson's losses) and the env they train on."""

from __future__ import annotations

from dataclasses import dataclass

from agents.common.config import ObjectiveAgentSettings
from learned_optimizers.common.settings import setting


@dataclass
class FixedPointObjectiveSettings(ObjectiveAgentSettings):
    """NeuralFP's loss: backpropagate the residuals through K unrolled steps of the fixed-point env.

    The network settings are the gradient amortizers'; only the defaults differ.
    """

    kind: str = setting("fp_objective", choices=("fp_objective",))
    hidden_sizes: tuple[int, ...] = setting((256, 256), ge=1, le=65_536)
    batch_size: int = setting(128, ge=1, le=1_048_576, doc="contexts per gradient step (the env's num_envs)")
    learn_init: bool = setting(True, doc="learn the initial iterate y_0(x) as well as the update")
    loss: str = setting("log_ratio", choices=("log_ratio", "ratio"),
                        doc="log_ratio: mean log10 residual ratio over the unroll; ratio: NeuralFP's sum of ratios")
    grad_clip: float = setting(1.0, gt=0.0, doc="max gradient norm")


@dataclass
class FixedPointRegressionSettings(FixedPointObjectiveSettings):
    """HyperAnderson's loss: distance of every unrolled iterate to y*(x) from a converged solve."""

    kind: str = setting("fp_regression", choices=("fp_regression",))
    dataset_size: int = setting(4096, ge=1, doc="training contexts labelled once with y*(x)")


FIXED_POINT_ENV = "amortize/FixedPoint-v0"
