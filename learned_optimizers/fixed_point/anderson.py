"""Anderson acceleration (type II), batched, with its history of iterates.

Given the last M pairs (y_i, f_i = g(y_i)) with residuals G_i = f_i - y_i,
AA picks the mixing coefficients

    alpha = argmin ||sum_i alpha_i G_i||^2 + lam ||alpha||^2   s.t.  sum_i alpha_i = 1

from the bordered system [[0, 1'], [1, H + lam I]] [nu; alpha] = [1; 0] with
H = G G', and steps to y+ = beta sum alpha_i f_i + (1 - beta) sum alpha_i y_i.
The ridge is relative to H's scale (lam times its mean diagonal) so that AA
behaves the same at residual 1 and 1e-8; an absolute ridge, as in some DEQ
code, drifts towards uniform averaging as the residuals shrink.

Slots not yet filled are masked: their row of the system is the identity and
they are out of the constraint, so their coefficient is exactly 0. A singular
or non-finite system, the classic failure of AA implementations, falls back to
the plain step (alpha = 1 on the newest pair) instead of raising.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class History:
    """The last M pairs per instance, oldest first; ``count`` pairs pushed so far."""

    X: torch.Tensor  # (B, M, d) iterates
    F: torch.Tensor  # (B, M, d) their images g(y)
    count: torch.Tensor  # (B,) long

    @classmethod
    def empty(cls, batch: int, memory: int, dim: int, like: torch.Tensor) -> "History":
        zeros = torch.zeros(batch, memory, dim, device=like.device, dtype=like.dtype)
        return cls(zeros, zeros.clone(), torch.zeros(batch, dtype=torch.long, device=like.device))

    @property
    def memory(self) -> int:
        return self.X.shape[1]

    @property
    def valid(self) -> torch.Tensor:
        """(B, M) bool: the slots that hold a pair (the newest min(count, M))."""
        slot = torch.arange(self.memory, device=self.X.device)
        return slot >= (self.memory - self.count.clamp(max=self.memory)).unsqueeze(1)

    @property
    def residuals(self) -> torch.Tensor:
        return self.F - self.X

    def push(self, y: torch.Tensor, fy: torch.Tensor) -> "History":
        """A new history with (y, g(y)) appended and the oldest pair dropped (autograd-friendly)."""
        X = torch.cat([self.X[:, 1:], y.unsqueeze(1)], dim=1)
        F = torch.cat([self.F[:, 1:], fy.unsqueeze(1)], dim=1)
        return History(X, F, self.count + 1)

    def where(self, mask: torch.Tensor, other: "History") -> "History":
        """Rows from ``other`` where ``mask`` is set (resetting some instances of a batch)."""
        m3 = mask.view(-1, 1, 1)
        return History(torch.where(m3, other.X, self.X), torch.where(m3, other.F, self.F),
                       torch.where(mask, other.count, self.count))


def plain_coefficients(valid: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """alpha = 1 on the newest pair: with beta = 1 this is the plain step y+ = g(y)."""
    alpha = torch.zeros(valid.shape, device=valid.device, dtype=dtype)
    alpha[:, -1] = 1.0
    return alpha


def anderson_coefficients(history: History, regularization: float = 1e-4) -> tuple[torch.Tensor, torch.Tensor]:
    """AA's mixing coefficients (B, M) and a (B,) flag of the instances that fell back to the plain step."""
    G = history.residuals
    valid = history.valid
    B, M, _ = G.shape
    vf = valid.to(G.dtype)
    H = (G @ G.transpose(1, 2)) * vf.unsqueeze(1) * vf.unsqueeze(2)
    scale = (H.diagonal(dim1=1, dim2=2).sum(1) / vf.sum(1).clamp(min=1)).clamp(min=torch.finfo(G.dtype).tiny)
    eye = torch.eye(M, device=G.device, dtype=G.dtype)
    H = H / scale.view(B, 1, 1) + regularization * eye * vf.unsqueeze(2) + eye * (1 - vf).unsqueeze(2)
    system = torch.zeros(B, M + 1, M + 1, device=G.device, dtype=G.dtype)
    system[:, 0, 1:] = vf
    system[:, 1:, 0] = vf
    system[:, 1:, 1:] = H
    rhs = torch.zeros(B, M + 1, device=G.device, dtype=G.dtype)
    rhs[:, 0] = 1.0
    solution, info = torch.linalg.solve_ex(system, rhs)
    alpha = solution[:, 1:]
    failed = (info != 0) | ~torch.isfinite(alpha).all(dim=1)
    alpha = torch.where(failed.unsqueeze(1), plain_coefficients(valid, G.dtype), torch.nan_to_num(alpha))
    return alpha, failed


def mix(history: History, alpha: torch.Tensor, beta: float | torch.Tensor = 1.0) -> torch.Tensor:
    """y+ = beta * F' alpha + (1 - beta) * X' alpha."""
    beta = torch.as_tensor(beta, device=alpha.device, dtype=alpha.dtype)
    if beta.ndim == 1:
        beta = beta.unsqueeze(1)
    mixed_f = (alpha.unsqueeze(1) @ history.F).squeeze(1)
    mixed_x = (alpha.unsqueeze(1) @ history.X).squeeze(1)
    return beta * mixed_f + (1 - beta) * mixed_x
