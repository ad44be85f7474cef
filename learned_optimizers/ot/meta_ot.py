"""Meta OT deployed: a trained model predicts the dual potential of a pair of measures, and Sinkhorn starts there.

    meta = MetaOT.load("runs/ot-digits-objective/model.pt")    # or MetaOT.shipped("digits")
    f = meta.predict(a, b)                                     # (B, N) potentials, one batched forward pass
    result = meta.solve(a, b, tol=1e-6)                        # our batched Sinkhorn from f: plan, iterations
    u, v = meta.pot_warmstart(a[0], b[0])                      # ot.sinkhorn(..., warmstart=(u, v)) for POT

The file is the one ``amortize train`` writes for an ``ot-*`` run (weights and the family's settings, read
weights-only); the family fixes the grid, its cost and epsilon, so a model serves exactly the problems it was
trained on and refuses measures of another support size by name. Neither gymnasium nor stable-baselines3 is
imported on this path.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from learned_optimizers.common.files import read_model_file, rebuild_model, shipped_model_path
from learned_optimizers.common.networks import mlp
from learned_optimizers.ot import sinkhorn as sk
from learned_optimizers.ot.measures import MeasureError, check_measures
from learned_optimizers.ot.problem import OT_PROBLEM_FAMILIES, OTPotentialProblem, centred

#: the models trained with configs/ot_<family>_objective.yaml, shipped inside the package
SHIPPED = Path(__file__).parent / "models"
_KEYS = ("family", "problem_settings", "hidden_sizes", "activation", "state_dict")


class _PotentialNet(nn.Module):
    """The MLP of the saved model (its state_dict keys are ``net.*``)."""

    def __init__(self, problem: OTPotentialProblem, hidden_sizes: tuple[int, ...], activation: str) -> None:
        super().__init__()
        self.net = mlp([problem.context_dim, *hidden_sizes, problem.solution_dim], activation)


class MetaOT:
    """A trained potential model for one OT family, with Sinkhorn (ours or POT's) started from its prediction."""

    def __init__(self, problem: OTPotentialProblem, net: nn.Module, device: torch.device | str = "cpu") -> None:
        self.problem, self.net, self.device = problem, net.to(device).eval(), torch.device(device)
        self.metadata: dict[str, Any] = {}

    @classmethod
    def load(cls, path: str | Path, device: torch.device | str = "cpu") -> "MetaOT":
        blob = read_model_file(path, device, "a Meta OT model", _KEYS)
        if blob["family"] not in OT_PROBLEM_FAMILIES:
            raise ValueError(f"{str(path)!r} is a model of family {blob['family']!r}, not of an OT family "
                             f"({', '.join(OT_PROBLEM_FAMILIES)})")
        problem_cls, settings_cls = OT_PROBLEM_FAMILIES[blob["family"]]

        def build() -> _PotentialNet:
            problem = problem_cls(settings_cls(**blob["problem_settings"]))
            return _PotentialNet(problem, tuple(blob["hidden_sizes"]), blob["activation"])

        holder = rebuild_model(path, "a Meta OT model", build, blob["state_dict"])
        meta = cls(problem_cls(settings_cls(**blob["problem_settings"])), holder, device)
        meta.metadata = dict(blob.get("metadata", {}))
        return meta

    @classmethod
    def shipped(cls, name: str = "digits", device: torch.device | str = "cpu") -> "MetaOT":
        """The model shipped for ``name`` (``digits``)."""
        return cls.load(shipped_model_path(SHIPPED, "meta_ot_", name, "Meta OT model"), device)

    # ------------------------------------------------------------ the family
    @property
    def size(self) -> int:
        return self.problem.pairs.size

    @property
    def epsilon(self) -> float:
        return self.problem.settings.epsilon

    @property
    def cost(self) -> torch.Tensor:
        """The family's cost matrix (N, N), float64."""
        return self.problem.pairs.cost_on(torch.empty(0, dtype=torch.float64))

    def _pairs(self, a: Any, b: Any) -> tuple[torch.Tensor, torch.Tensor]:
        a, b = (torch.as_tensor(np.asarray(m) if not isinstance(m, torch.Tensor) else m, dtype=torch.float64)
                for m in (a, b))
        a, b = (m.unsqueeze(0) if m.ndim == 1 else m for m in (a, b))
        a, b = a.to(self.device), b.to(self.device)
        check_measures(a, "a", self.size)
        check_measures(b, "b", self.size)
        if a.shape[0] != b.shape[0]:
            raise MeasureError(f"a and b: {a.shape[0]} and {b.shape[0]} measures; give one b per a")
        return a, b

    # ------------------------------------------------------------ predicting and solving
    @torch.no_grad()
    def predict(self, a: Any, b: Any) -> torch.Tensor:
        """The predicted potentials f (B, N), float64, centred: one forward pass for the whole batch."""
        a, b = self._pairs(a, b)
        return self._predict(a, b)

    @torch.no_grad()
    def potentials(self, contexts: torch.Tensor) -> torch.Tensor:
        """The predicted potentials for contexts [a, b] as the family's env and problem hold them, (B, 2N) -> (B, N)."""
        self.problem.check_contexts(contexts)
        return self._predict(*self.problem.pairs.split(contexts.double()))

    def _predict(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        x = torch.cat([a, b], dim=1).float()
        return centred(self.net.net(self.problem.model_features(x)).double())

    @torch.no_grad()
    def solve(self, a: Any, b: Any, tol: float = 1e-6, max_iterations: int = 10_000,
              check_every: int = 10) -> sk.SinkhornResult:
        """Our batched log-domain Sinkhorn from the predicted potential (POT's iteration and stopping test)."""
        a, b = self._pairs(a, b)
        f = self._predict(a, b)
        return sk.sinkhorn(a, b, self.problem.pairs.kernel_on(a), self.epsilon, tol=tol,
                           max_iterations=max_iterations, check_every=check_every, u0=f / self.epsilon, validate=False)

    @torch.no_grad()
    def pot_warmstart(self, a: Any, b: Any) -> tuple[np.ndarray, np.ndarray]:
        """(u, v) for one pair, for POT's ``ot.sinkhorn(a, b, M, reg, method="sinkhorn_log", warmstart=(u, v))``;
        v is recomputed by POT's first iteration, so only u = f / eps matters."""
        a_t, b_t = self._pairs(a, b)
        if a_t.shape[0] != 1:
            raise MeasureError(f"a: pot_warmstart takes one pair; got {a_t.shape[0]}")
        u = (self._predict(a_t, b_t) / self.epsilon)[0].cpu().numpy()
        return u, np.zeros(self.size)
