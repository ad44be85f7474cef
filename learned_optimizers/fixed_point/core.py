"""The batched fixed-point iteration that every method shares.

One ``FixedPointState`` holds a batch of solves; ``advance`` takes one step
under an action and evaluates the map once. The two action modes are the two
learned accelerators of tutorial 3.4, each written as a correction of a
classical method so that a zero action *is* the classical method:

* ``neural_fp``: y+ = g(y) + ||R(y)|| a, a in R^dim (zero: plain iteration);
* ``hyper_aa``: alpha = alpha_AA + (a_alpha centred on the filled slots),
  beta = beta_0 + a_beta, y+ = Anderson's mix with them (zero: AA).

The same functions run under ``torch.no_grad`` in the environment and the
baselines, and under autograd when an agent backpropagates through an unroll.
Progress is measured as ||R(y_k)|| / ||R(y_default)||, the residual relative to
the classical start's, so a learned initial iterate counts in the learner's
favour only by what it really saves.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from enum import IntEnum

import torch

from learned_optimizers.common.features import compress
from learned_optimizers.common.fixed_point_map import FixedPointMap, FixedPointTaskSettings
from learned_optimizers.common.iteration import Policy, iterate
from learned_optimizers.common.traces import first_hit
from learned_optimizers.fixed_point.anderson import History, anderson_coefficients, mix

#: features are compressed with asinh so that history ratios of 1e6 stay O(10)
_LOG_SCALE = 8.0


class FixedPointStatus(IntEnum):
    RUNNING = 0
    CONVERGED = 1  # ||R(y)|| <= tol * ||R(y_default)||
    MAX_STEPS = 2
    DIVERGED = 3  # the iterate or its residual is NaN or inf

    @property
    def label(self) -> str:
        return self.name.lower()


@dataclass
class FixedPointState:
    y: torch.Tensor  # (B, d) current iterate
    fy: torch.Tensor  # (B, d) g(y)
    history: History  # the last M (y, g(y)) pairs, (y, fy) newest
    reference: torch.Tensor  # (B,) ||R(y_default)||
    evaluations: torch.Tensor  # (B,) long: map evaluations after the initial one

    @property
    def residual(self) -> torch.Tensor:
        return self.fy - self.y

    @property
    def ratio(self) -> torch.Tensor:
        """||R(y)|| / ||R(y_default)|| per instance (inf or nan once diverged)."""
        return self.residual.norm(dim=1) / self.reference

    def where(self, mask: torch.Tensor, other: "FixedPointState") -> "FixedPointState":
        m = mask.unsqueeze(1)
        return FixedPointState(torch.where(m, other.y, self.y), torch.where(m, other.fy, self.fy),
                               self.history.where(mask, other.history), torch.where(mask, other.reference, self.reference),
                               torch.where(mask, other.evaluations, self.evaluations))


def action_dim(fp_map: FixedPointMap, settings: FixedPointTaskSettings) -> int:
    return fp_map.dim if settings.mode == "neural_fp" else settings.memory + 1


def observation_dim(fp_map: FixedPointMap, settings: FixedPointTaskSettings) -> int:
    M = settings.memory
    if settings.mode == "neural_fp":
        return 2 * M * fp_map.dim + M + 1
    return M * M + 3 * M + 1


def start(fp_map: FixedPointMap, x: torch.Tensor, settings: FixedPointTaskSettings,
          y0: torch.Tensor | None = None) -> FixedPointState:
    """Evaluate g at the initial iterate (the default start unless ``y0`` is given)."""
    default = fp_map.initial_iterate(x)
    reference = fp_map.residual(default, x).norm(dim=1).detach().clamp(min=torch.finfo(default.dtype).tiny)
    y = default if y0 is None else y0.to(default.dtype)
    fy = fp_map.g(y, x)
    history = History.empty(x.shape[0], settings.memory, fp_map.dim, y).push(y, fy)
    return FixedPointState(y, fy, history, reference, torch.zeros(x.shape[0], dtype=torch.long, device=x.device))


def next_iterate(state: FixedPointState, action: torch.Tensor | None, settings: FixedPointTaskSettings) -> torch.Tensor:
    """The iterate the action asks for (``None`` is the zero action: the classical method)."""
    if settings.mode == "neural_fp":
        if action is None:
            return state.fy
        return state.fy + state.residual.norm(dim=1, keepdim=True) * action.to(state.y.dtype)
    alpha, _ = anderson_coefficients(state.history, settings.regularization)
    beta = torch.full_like(state.reference, settings.beta)
    if action is not None:
        a = action.to(state.y.dtype)
        valid = state.history.valid.to(a.dtype)
        delta = a[:, :-1] * valid
        delta = delta - valid * delta.sum(1, keepdim=True) / valid.sum(1, keepdim=True).clamp(min=1)
        alpha = alpha + delta  # still sums to 1 over the filled slots
        beta = beta + a[:, -1]
    return mix(state.history, alpha, beta)


def advance(fp_map: FixedPointMap, x: torch.Tensor, state: FixedPointState, action: torch.Tensor | None,
            settings: FixedPointTaskSettings) -> FixedPointState:
    """One step: the next iterate under ``action``, then one evaluation of g."""
    y = next_iterate(state, action, settings)
    fy = fp_map.g(y, x)
    return FixedPointState(y, fy, state.history.push(y, fy), state.reference, state.evaluations + 1)


def observe(state: FixedPointState, settings: FixedPointTaskSettings) -> torch.Tensor:
    """Scale-free features of the last M iterates and residuals, flat (B, observation_dim).

    Vectors are divided by the current residual norm (the scale of the next
    move), norms enter as logs, and empty history slots are zero with a mask.
    """
    h = state.history
    valid = h.valid.to(state.y.dtype)
    r_norm = state.residual.norm(dim=1).clamp(min=torch.finfo(state.y.dtype).tiny)
    progress = (torch.log10(state.ratio.clamp(min=1e-30)) / _LOG_SCALE).unsqueeze(1)
    G = h.residuals
    g_norms = G.norm(dim=2)
    log_norms = torch.log10(g_norms.clamp(min=1e-30) / r_norm.unsqueeze(1)) * valid / _LOG_SCALE
    if settings.mode == "neural_fp":
        # residuals and moves as one (B, 2, M, d) block: one division, one compression, in the order
        # [residuals, moves] that flattening gives
        # (differences in the iterate's precision, then float32: near convergence F and X agree to many digits)
        vectors = torch.stack([G.float(), (h.X - state.y.unsqueeze(1)).float()], dim=1) \
            / r_norm.float().clamp(min=torch.finfo(torch.float32).tiny).view(-1, 1, 1, 1)
        block = compress(vectors, torch.float32)
        if not bool((h.count >= h.memory).all()):  # empty slots (the first M - 1 steps) read zero
            block = block * valid.float().view(-1, 1, valid.shape[1], 1)
        features = [block.flatten(1), log_norms, progress]
    else:
        unit = G / g_norms.clamp(min=torch.finfo(G.dtype).tiny).unsqueeze(2)
        cosines = (unit @ unit.transpose(1, 2)) * valid.unsqueeze(1) * valid.unsqueeze(2)
        alpha, _ = anderson_coefficients(h, settings.regularization)
        features = [cosines.flatten(1), compress(alpha, torch.float32), log_norms, valid, progress]
    # float32, the networks' precision (features computed in float64 were cast there anyway)
    out = torch.cat([f.float() for f in features], dim=1)
    return torch.nan_to_num(out, nan=0.0, posinf=_LOG_SCALE, neginf=-_LOG_SCALE)


@dataclass(frozen=True)
class FixedPointIteration:
    """A map's iteration under ``settings.mode`` as a ``BatchedIteration`` (zero action: plain iteration or AA)."""

    fp_map: FixedPointMap
    settings: FixedPointTaskSettings

    def start(self, x: torch.Tensor, initial: torch.Tensor | None = None) -> FixedPointState:
        return start(self.fp_map, x, self.settings, initial)

    def advance(self, x: torch.Tensor, state: FixedPointState, action: torch.Tensor | None) -> FixedPointState:
        return advance(self.fp_map, x, state, action, self.settings)

    def observe(self, state: FixedPointState) -> torch.Tensor:
        return observe(state, self.settings)


@dataclass
class FixedPointTrace:
    """What a solve went through: ratios and map evaluations after each step, the last iterate."""

    ratios: torch.Tensor  # (B, T + 1) ||R(y_k)|| / ||R(y_default)||, k = 0..T
    evaluations: torch.Tensor  # (B, T + 1) map evaluations spent to reach y_k (safeguard re-steps included)
    y: torch.Tensor  # (B, d)
    safeguard_steps: torch.Tensor  # (B,) steps where the safeguard replaced the policy's step

    def evaluations_to(self, tol: float) -> torch.Tensor:
        """Map evaluations until the ratio first reaches ``tol`` (inf where it never does)."""
        first, reached = first_hit(self.ratios <= tol)
        spent = self.evaluations.gather(1, first.unsqueeze(1)).squeeze(1).to(self.ratios.dtype)
        return torch.where(reached, spent, math.inf)


def rollout(fp_map: FixedPointMap, x: torch.Tensor, settings: FixedPointTaskSettings, steps: int,
            policy: Policy | None = None, y0: torch.Tensor | None = None) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Differentiable: residual ratios (B, steps + 1) and the iterates y_0..y_steps (what gradient agents train on)."""
    states = list(iterate(FixedPointIteration(fp_map, settings), x, steps, policy, y0))
    return torch.stack([state.ratio for state in states], 1), [state.y for state in states]


def solve(fp_map: FixedPointMap, x: torch.Tensor, settings: FixedPointTaskSettings, steps: int,
          policy: Policy | None = None, y0: torch.Tensor | None = None, safeguard: float | None = None,
          stop_at: float | None = None) -> FixedPointTrace:
    """Run ``steps`` steps of the method that ``policy`` defines (the classical one when ``None``).

    ``safeguard``: where a policy's step leaves a residual above ``safeguard``
    times the current one, the step is replaced by the classical step from the
    same state (one more map evaluation, counted), as SCS guards its AA.
    ``stop_at``: stop early once every instance's residual ratio is at most this (a batch solved to a
    tolerance, checked after each step); the trace then ends there.
    """
    if stop_at is not None and not stop_at > 0:
        raise ValueError(f"stop_at={stop_at}: a residual ratio > 0")
    method = FixedPointIteration(fp_map, settings)
    state = method.start(x, y0)
    ratios, spent = [state.ratio], [torch.zeros_like(state.evaluations)]
    extra = torch.zeros_like(state.evaluations)
    fired = torch.zeros_like(state.evaluations)
    for _ in range(steps):
        action = None if policy is None else policy(method.observe(state))
        nxt = method.advance(x, state, action)
        if policy is not None and safeguard is not None:
            bad = ~(nxt.ratio <= safeguard * state.ratio)
            if bool(bad.any()):
                classical = method.advance(x, state, None)
                nxt = nxt.where(bad, classical)
                extra, fired = extra + bad.long(), fired + bad.long()
        state = nxt
        ratios.append(state.ratio)
        spent.append(state.evaluations + extra)
        if stop_at is not None and bool((ratios[-1] <= stop_at).all()):
            break
    return FixedPointTrace(torch.stack(ratios, 1), torch.stack(spent, 1), state.y, fired)


def converged_solution(fp_map: FixedPointMap, x: torch.Tensor, settings: FixedPointTaskSettings,
                       tol: float = 1e-10, max_steps: int = 2000) -> torch.Tensor:
    """y*(x) by Anderson acceleration in float64 to ``tol`` (the regression target); raises if it stalls."""
    aa = replace(settings, mode="hyper_aa")
    x64 = x.double()
    state = start(fp_map, x64, aa)
    done = state.ratio <= tol
    best = state.y.clone()
    for _ in range(max_steps):
        if bool(done.all()):
            break
        state = advance(fp_map, x64, state, None, aa)
        newly = (state.ratio <= tol) & ~done
        best = torch.where(newly.unsqueeze(1), state.y, best)
        done = done | newly
    if not bool(done.all()):
        raise RuntimeError(f"{fp_map.family}: Anderson reached ratio {tol:g} on only {int(done.sum())}/{done.numel()} "
                           f"contexts in {max_steps} steps")
    return best.to(x.dtype)
