"""RLQP's learned step sizes, deployable without any RL code.

A shared per-constraint MLP reads scale-free features of each constraint of
the running ADMM (how far z is from its bounds, the local primal residual,
the dual variable, the current rho, and the problem's global residuals) and
outputs log10 rho for that row. The same network serves a problem of any
size. ``RLQPSolver`` is the batched OSQP core with this policy choosing rho
every ``interval`` iterations instead of OSQP's heuristic, and a safeguard
that hands a problem back to the heuristic when the policy stops making
progress. Only torch is needed to load a policy and solve::

    policy = RhoPolicy.load(SHIPPED_POLICY)    # or a run's policy.pt
    result = RLQPSolver(policy).solve([qp])
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from learned_optimizers.common.files import read_model_file, rebuild_model, save_model_file
from learned_optimizers.common.settings import setting, validate
from learned_optimizers.qp.admm import OSQPBatch, OSQPSettings, QPSolution, in_chunks
from learned_optimizers.qp.problems import QP, QPBatch

#: log10 rho range of the action (OSQP's own clip [1e-6, 1e6])
LOG_RHO_MIN, LOG_RHO_MAX = -6.0, 6.0
#: per-constraint features: slack to the nearest bound, z - Ax, y, rho, equality flag, global primal, global dual
CONSTRAINT_FEATURES = 7
#: problem-level features of the scalar variant: global primal, global dual, log10 rho, iterations / 1000
GLOBAL_FEATURES = 4
#: the policy trained with configs/rlqp_cpu.yaml, shipped inside the package
SHIPPED_POLICY = Path(__file__).parent / "policies" / "rlqp_cpu.pt"
_FEATURE_SCALE = 8.0  # logs of 1e-8..1e6 land in about [-1, 1]


def _symlog(v: torch.Tensor) -> torch.Tensor:
    """sign(v) * (log10 |v| + 8) on |v| in [1e-8, 1e6]: a signed log that is 0 for |v| <= 1e-8."""
    return torch.sign(v) * (torch.log10(v.abs().clamp(1e-8, 1e6)) + 8.0)


def _log_res(r: torch.Tensor) -> torch.Tensor:
    return torch.log10(torch.nan_to_num(r, nan=1e6, posinf=1e6).clamp(1e-12, 1e6))


def constraint_features(batch: OSQPBatch) -> torch.Tensor:
    """(B, m, CONSTRAINT_FEATURES) features of every row, from the scaled iterates (batch dtype)."""
    st = batch.state()
    z, l, u = st["z_scaled"], st["l_scaled"], st["u_scaled"]
    slack = torch.minimum(z - l, u - z)
    prim, dual = batch.normalized_residuals()
    m = z.shape[1]
    feats = torch.stack(
        [
            torch.log10(slack.clamp(1e-8, 1e6)),
            _symlog(z - st["Ax_scaled"]),
            _symlog(st["y_scaled"]),
            torch.log10(st["rho_vec"]),
            batch.equality.to(z.dtype) * _FEATURE_SCALE,
            _log_res(prim).unsqueeze(1).expand(-1, m),
            _log_res(dual).unsqueeze(1).expand(-1, m),
        ],
        dim=2,
    )
    return feats / _FEATURE_SCALE


def global_features(batch: OSQPBatch) -> torch.Tensor:
    """(B, GLOBAL_FEATURES) in the batch dtype: what the scalar variant observes."""
    batch.state()
    prim, dual = batch.normalized_residuals()
    feats = torch.stack([_log_res(prim), _log_res(dual), torch.log10(batch.rho),
                         batch.iterations.to(batch.dtype) / 1000.0 * _FEATURE_SCALE], dim=1)
    return feats / _FEATURE_SCALE


def policy_rows(batch: OSQPBatch) -> torch.Tensor:
    """(B, m) bool: the rows whose rho a policy sets (real rows with at least one finite bound)."""
    return batch.con_mask & ~batch.loose


class RhoPolicy(nn.Module):
    """The shared per-constraint actor: features (..., F) -> log10 rho (...) in [-6, 6]."""

    def __init__(self, in_features: int = CONSTRAINT_FEATURES, hidden_sizes: tuple[int, ...] = (48, 48, 48),
                 variant: Literal["vector", "scalar"] = "vector") -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = in_features
        for h in hidden_sizes:
            layers += [nn.Linear(width, h), nn.ReLU()]
            width = h
        layers.append(nn.Linear(width, 1))
        self.net = nn.Sequential(*layers)
        self.in_features, self.hidden_sizes, self.variant = in_features, tuple(hidden_sizes), variant

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return LOG_RHO_MAX * torch.tanh(self.net(features).squeeze(-1))

    def save(self, path: str | Path, **metadata) -> None:
        save_model_file({"state_dict": self.state_dict(), "in_features": self.in_features,
                         "hidden_sizes": list(self.hidden_sizes), "variant": self.variant, "metadata": metadata}, path)

    @classmethod
    def load(cls, path: str | Path, device: torch.device | str = "cpu") -> "RhoPolicy":
        blob = read_model_file(path, device, "an RLQP policy", ("state_dict", "in_features", "hidden_sizes", "variant"))
        policy = rebuild_model(path, "an RLQP policy",
                               lambda: cls(blob["in_features"], tuple(blob["hidden_sizes"]), blob["variant"]),
                               blob["state_dict"])
        policy.metadata = blob.get("metadata", {})
        return policy.to(device).eval()


def apply_policy(policy: nn.Module, batch: OSQPBatch, which: torch.Tensor) -> None:
    """Set the rho the policy chooses on the problems ``which`` (a vector policy: one per row;
    a scalar one: one per problem, expanded by OSQP's rule)."""
    if policy.variant == "vector":
        # only the rows whose rho matters: loose and padded rows keep rho_min whatever the policy says, and
        # problems outside ``which`` keep theirs (on a batch of mixed sizes most rows are padding)
        rows = policy_rows(batch) & which.unsqueeze(1)
        rho = batch.rho_vec.clone()
        rho[rows] = _policy_rho(policy, constraint_features(batch)[rows], batch)
        batch.set_rho(rho, which=which)
    else:
        batch.set_scalar_rho(_policy_rho(policy, global_features(batch), batch), which=which)


def _policy_rho(policy: nn.Module, features: torch.Tensor, batch: OSQPBatch) -> torch.Tensor:
    """10 ** the policy's log rho, computed in the policy's dtype and device, returned in the batch's."""
    param = next(iter(policy.parameters()), features)
    with torch.no_grad():
        log_rho = policy(features.to(device=param.device, dtype=param.dtype))
    return 10.0 ** log_rho.to(device=batch.device, dtype=batch.dtype)


@dataclass(frozen=True)
class RLQPSettings:
    """How the learned solver runs and when its safeguard hands a problem back to OSQP's heuristic."""

    osqp: OSQPSettings = field(default_factory=OSQPSettings)
    interval: int = setting(100, ge=1, doc="ADMM iterations between two rho choices (a multiple of the check interval)")
    safeguard_window: int = setting(3, ge=1, doc="policy steps without progress before falling back")
    safeguard_progress: float = setting(0.5, gt=0.0, lt=1.0,
                                        doc="progress = the larger normalized residual fell below this fraction of its best")
    safeguard_budget: float = setting(0.5, gt=0.0, le=1.0, doc="fall back once this fraction of max_iter is spent")
    safeguard_restart: bool = setting(True, doc="a problem that falls back restarts from OSQP's own start (x = z = y = 0)"
                                      " rather than from the iterate the policy left")

    def __post_init__(self) -> None:
        validate(self)
        if self.interval % self.osqp.check_termination:
            raise ValueError(f"interval={self.interval} must be a multiple of osqp.check_termination="
                             f"{self.osqp.check_termination} so termination is checked where OSQP checks it")


@dataclass
class RLQPSolution(QPSolution):
    fell_back: torch.Tensor = None  # (B,) bool: the safeguard handed the problem to the heuristic
    fell_back_at: torch.Tensor = None  # (B,) iteration at which it did, -1 where it did not


class Safeguard:
    """Per-problem progress tracker: no improvement of the residuals over a window means fall back.

    Kept for every problem of the batch as given (``batch.index`` maps the working rows to them), so the
    batch may drop its finished problems between two policy steps."""

    def __init__(self, batch: OSQPBatch, settings: RLQPSettings) -> None:
        self.settings = settings
        total, kw = batch.total, {"device": batch.device}
        self.best = torch.full((total,), float("inf"), dtype=batch.dtype, **kw)
        self.stalled = torch.zeros(total, dtype=torch.long, **kw)
        self.fell_back = torch.zeros(total, dtype=torch.bool, **kw)
        self.fell_back_at = torch.full((total,), -1, dtype=torch.long, **kw)

    def fallen(self, batch: OSQPBatch) -> torch.Tensor:
        """(working rows,) bool: the problems handed back to OSQP's heuristic."""
        return self.fell_back[batch.index]

    def update(self, batch: OSQPBatch) -> torch.Tensor:
        """Record the current residuals; returns the (working) problems that fall back now."""
        s, idx = self.settings, batch.index
        prim, dual = batch.normalized_residuals()
        merit = torch.nan_to_num(torch.maximum(prim, dual), nan=float("inf"))
        best = self.best[idx]
        improved = merit < s.safeguard_progress * best
        self.best[idx] = torch.where(improved, merit, best)
        stalled = torch.where(improved, torch.zeros_like(idx), self.stalled[idx] + 1)
        self.stalled[idx] = stalled
        over_budget = batch.iterations >= int(s.safeguard_budget * batch.settings.max_iter)
        now = batch.running & ~self.fell_back[idx] & ((stalled >= s.safeguard_window) | over_budget)
        self.fell_back[idx] = self.fell_back[idx] | now
        self.fell_back_at[idx] = torch.where(now, batch.iterations, self.fell_back_at[idx])
        return now


class RLQPSolver:
    """OSQP with a learned rho policy; same core, same termination, same status values."""

    def __init__(self, policy: nn.Module, settings: RLQPSettings | None = None) -> None:
        """``policy``: a ``RhoPolicy`` (or any module with a ``variant`` of 'vector' or 'scalar')."""
        if getattr(policy, "variant", None) not in ("vector", "scalar"):
            raise ValueError("policy.variant must be 'vector' or 'scalar'")
        self.policy = policy.eval()
        # a policy file records the interval it was trained with: the one it knows how to use
        self.settings = settings or RLQPSettings(interval=getattr(policy, "metadata", {}).get("interval", 100))

    def solve(self, problems: list[QP] | QPBatch | QP, device: torch.device | str = "cpu",
              backend: Literal["dense", "sparse"] = "dense",
              warm_start: tuple[Any, Any] | None = None, chunk: int | None = None) -> RLQPSolution:
        """Solve a QP or a batch; ``warm_start``: (x, y) of the batch's padded shape (or of the one QP), unscaled,
        either may be None (OSQP's start: zero). A list is solved ``in_chunks`` (``chunk``) unless warm-started."""
        device = torch.device(device)
        if warm_start is not None:
            return self._solve(problems, device, backend, warm_start)
        return in_chunks(problems, device, lambda part: self._solve(part, device, backend, None), chunk)

    def _solve(self, problems: list[QP] | QPBatch | QP, device: torch.device, backend: Literal["dense", "sparse"],
               warm_start: tuple[Any, Any] | None) -> RLQPSolution:
        s = self.settings
        osqp_settings = replace(s.osqp, adaptive_rho=False)
        batch = OSQPBatch([problems] if isinstance(problems, QP) else problems, osqp_settings, device=device,
                          backend=backend)
        if warm_start is not None:
            x0, y0 = warm_start
            batch.warm_start(None if x0 is None else torch.as_tensor(x0).reshape(batch.B, -1),
                             None if y0 is None else torch.as_tensor(y0).reshape(batch.B, -1))
        t0 = time.perf_counter()
        guard = Safeguard(batch, s)
        batch.advance(s.interval)  # OSQP's start: rho = 0.1 for the first interval
        while bool(batch.running.any()) and int(batch.iterations.max()) < osqp_settings.max_iter:
            now = guard.update(batch)
            if bool(now.any()):
                if s.safeguard_restart:  # OSQP from its own start: osqp's iterates, shifted by the iterations spent
                    batch.cold_start(now)
                    batch.set_scalar_rho(torch.full_like(batch.rho, s.osqp.rho), which=now)
                else:  # OSQP's rule from the policy's iterate, deciding now as it would here
                    batch.set_scalar_rho(batch.rho, which=now)
                    if s.osqp.adaptive_rho:
                        batch.adapt_rho(now)
            learned = batch.running & ~guard.fallen(batch)
            if bool(learned.any()):
                apply_policy(self.policy, batch, learned)
            batch.advance(s.interval, adapt_rho=guard.fallen(batch) if s.osqp.adaptive_rho else False)
            batch.compact_finished()
        solution = batch.finish(t0)
        return RLQPSolution(**vars(solution), fell_back=guard.fell_back.clone(), fell_back_at=guard.fell_back_at.clone())
