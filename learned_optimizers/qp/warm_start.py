"""A learned warm start for the real osqp: context -> the QP's primal-dual solution (x, y), then osqp from there.

    starter = WarmStarter.load("warm_start.pt")          # or WarmStarter.shipped("mpc")
    x, y = starter.predict(contexts)                      # (k, n), (k, m): batched, no torch graph
    result = starter.solve(context)                       # osqp's own result, warm-started
    result = starter.solve(next_context, feedback=True)   # along a sequence: corrected by the last error
    result = starter.solve_scs(context)                   # or scs's, the QP in SCS's cone form

``solve`` sets up one ``osqp.OSQP`` per starter (the family's P and A are fixed, so osqp factors once) and
per context calls ``update(q=, l=, u=)``, ``warm_start(x=, y=)`` and ``solve``: the compiled solver does the
work, the model only chooses where it starts. Along a sequence of nearby contexts the model's error changes
slowly, so ``feedback=True`` starts from the prediction plus the error it made at the previous solve
(``corrected_start``): the learned start and the classical previous-solution start combined. The model predicts
in the problem's own (unscaled) units, standardized by the training set's mean and spread of each coordinate;
osqp scales the start itself.
Inference runs as numpy matrix products (a few microseconds for one context). Neither gymnasium nor
stable-baselines3 is imported on this path.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import osqp
import torch
from torch import nn

from learned_optimizers.common.files import read_model_file, save_model_file, shipped_model_path
from learned_optimizers.common.networks import mlp
from learned_optimizers.qp.parametric import ParametricQPFamily, ParametricQPSettings, make_family
from learned_optimizers.qp.scs_form import SCSForm

#: the starters trained with configs/warm_start_<family>.yaml, shipped inside the package
SHIPPED = Path(__file__).parent / "policies"
KEYS = ("family", "hidden_sizes", "state_dict", "context_mean", "context_std", "out_mean", "out_std", "eps")


PrimalDual = tuple[np.ndarray, np.ndarray]


def corrected_start(prediction: PrimalDual, last_prediction: PrimalDual,
                    last_solution: PrimalDual) -> PrimalDual:
    """The prediction plus the model's error at the previous context: ``last_solution - last_prediction``.

    Equal to the previous solution moved by the model's predicted change: where the model errs alike at
    nearby contexts (a bias), its error cancels, and where the context moved, the model says by how much.
    ``amortize bench warm-start`` measures it in its '+ last error' rows."""
    return tuple(p + (s - lp) for p, lp, s in zip(prediction, last_prediction, last_solution))  # type: ignore[return-value]


class WarmStartNet(nn.Module):
    """An MLP from the standardized context to the standardized (x, y)."""

    def __init__(self, context_dim: int, out_dim: int, hidden_sizes: tuple[int, ...]) -> None:
        super().__init__()
        self.net = mlp([context_dim, *hidden_sizes, out_dim])

    def forward(self, c: torch.Tensor) -> torch.Tensor:
        return self.net(c)


class WarmStarter:
    """A trained warm start for one parametric QP family, deployable without the training code."""

    def __init__(self, family: ParametricQPFamily, family_settings: dict[str, Any], net: WarmStartNet,
                 stats: dict[str, np.ndarray], eps: float, squash: bool = False) -> None:
        """``squash``: tanh on the network's output before ``out_std``/``out_mean`` (a policy trained by RL acts in
        a box: out_mean its centre, out_std its half-widths)."""
        self.family, self.family_settings, self.net, self.eps = family, family_settings, net.eval(), eps
        self.squash = squash
        self.stats = {k: np.asarray(v, dtype=np.float64) for k, v in stats.items()}
        self._layers = [(m.weight.detach().double().numpy().T.copy(), m.bias.detach().double().numpy().copy())
                        for m in net.net if isinstance(m, nn.Linear)]
        self._solver: osqp.OSQP | None = None
        self._solver_settings: dict[str, Any] = {}
        #: (prediction, solution) of the last solve each solver finished as 'solved': what ``feedback`` corrects by
        self._last: dict[str, tuple[PrimalDual, PrimalDual] | None] = {"osqp": None, "scs": None}
        self._scs: Any = None
        self._scs_settings: dict[str, Any] = {}
        self._scs_form: SCSForm | None = None
        self.metadata: dict[str, Any] = {}

    # ------------------------------------------------------------ files
    def save(self, path: str | Path, **metadata: Any) -> None:
        save_model_file({"family": dict(self.family_settings), "hidden_sizes": [m.out_features for m in self.net.net
                                                                               if isinstance(m, nn.Linear)][:-1],
                         "state_dict": self.net.state_dict(), "eps": self.eps, "metadata": metadata,
                         "squash": self.squash,
                         **{k: torch.as_tensor(v) for k, v in self.stats.items()}}, path)

    @classmethod
    def load(cls, path: str | Path) -> "WarmStarter":
        blob = read_model_file(path, "cpu", "a warm starter", KEYS)
        try:
            family = make_family(ParametricQPSettings(**blob["family"]))
        except TypeError as err:
            raise ValueError(f"{str(path)!r}: its family settings {blob['family']} are not this version's ({err})") from None
        stats = {k: blob[k].numpy() for k in ("context_mean", "context_std", "out_mean", "out_std")}
        net = WarmStartNet(family.context_dim, family.n + family.m, tuple(blob["hidden_sizes"]))
        try:
            net.load_state_dict(blob["state_dict"])
        except RuntimeError as err:
            raise ValueError(f"{str(path)!r}: its weights do not fit family {family.name} ({err})") from None
        starter = cls(family, blob["family"], net, stats, float(blob["eps"]), squash=bool(blob.get("squash", False)))
        starter.metadata = blob.get("metadata", {})
        return starter

    @classmethod
    def shipped(cls, family: str) -> "WarmStarter":
        return cls.load(shipped_model_path(SHIPPED, "warm_start_", family, "warm starter for family", FileNotFoundError))

    # ------------------------------------------------------------ prediction
    def predict(self, contexts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(x, y) for each context: (k, n) and (k, m), or a named error for a malformed context."""
        c = self.family.check_contexts(contexts)
        h = (c - self.stats["context_mean"]) / self.stats["context_std"]
        for i, (W, b) in enumerate(self._layers):
            h = h @ W + b
            if i < len(self._layers) - 1:
                np.maximum(h, 0.0, out=h)
        if self.squash:
            np.tanh(h, out=h)
        out = h * self.stats["out_std"] + self.stats["out_mean"]
        return out[:, : self.family.n], out[:, self.family.n:]

    # ------------------------------------------------------------ the real osqp, warm-started
    def solve(self, context: np.ndarray, feedback: bool = False, **settings: Any) -> Any:
        """osqp's result for one context, started from the prediction. ``settings`` are osqp's (default: the
        eps the starter was trained for, no polishing); a change of settings sets osqp up again.

        ``feedback``: start from the prediction plus its error at this starter's last solved context
        (``corrected_start``), for a sequence of nearby contexts; the first solve, or one after a failed solve
        or a change of settings, starts from the prediction alone. Pass False to start a new sequence."""
        settings = {"eps_abs": self.eps, "eps_rel": self.eps, "polishing": False, "verbose": False, **settings}
        x, y = self.predict(context)
        q, l, u = self.family.data(context)
        if self._solver is None or settings != self._solver_settings:
            self._solver = self.family.osqp_solver(context, **settings)
            self._solver_settings, self._last["osqp"] = settings, None
        else:
            self._solver.update(q=q[0], l=l[0], u=u[0])
        prediction = (x[0], y[0])
        x0, y0 = self._start("osqp", prediction, feedback)
        self._solver.warm_start(x=x0, y=y0)
        result = self._solver.solve(raise_error=False)
        solved = result.info.status == "solved"
        self._last["osqp"] = (prediction, (result.x.copy(), result.y.copy())) if solved else None
        return result

    def _start(self, solver: str, prediction: PrimalDual, feedback: bool) -> PrimalDual:
        last = self._last[solver]
        return corrected_start(prediction, *last) if feedback and last is not None else prediction

    # ------------------------------------------------------------ the real scs, warm-started
    def solve_scs(self, context: np.ndarray, feedback: bool = False, **settings: Any) -> dict[str, Any]:
        """scs's result for one context (its dict: x, y, s, info), started from the prediction mapped to SCS's form
        (``learned_optimizers.qp.scs_form``); ``result["y_osqp"]`` is its dual in osqp's convention. ``settings``
        are scs's (default: eps_abs = eps_rel = the starter's eps); ``feedback`` as in ``solve``. One ``scs.SCS``
        per starter, then ``update``.
        Measure before relying on it: SCS carries its adaptive scale across solves, which already makes a cold
        solve of the next context fast, and an inaccurate dual can cost more iterations than it saves
        (``amortize bench warm-start --solvers osqp,scs``)."""
        settings = {"eps_abs": self.eps, "eps_rel": self.eps, **settings}
        x, y = self.predict(context)
        if self._scs_form is None:
            self._scs_form = SCSForm(self.family)
        b, c = self._scs_form.b_c(context)
        if self._scs is None or settings != self._scs_settings:
            self._scs = self._scs_form.solver(context, **settings)
            self._scs_settings, self._last["scs"] = settings, None
        else:
            self._scs.update(b=b[0], c=c[0])
        prediction = (x[0], y[0])
        x_start, y_start = self._start("scs", prediction, feedback)
        x0, y0, s0 = self._scs_form.start(x_start, y_start, b[0])
        result = self._scs.solve(warm_start=True, x=x0[0], y=y0[0], s=s0[0])
        result["y_osqp"] = self._scs_form.osqp_dual(result["y"])[0]
        solved = result["info"]["status"] == "solved"
        self._last["scs"] = (prediction, (result["x"].copy(), result["y_osqp"].copy())) if solved else None
        return result
