"""Cones of a conic program and their projections, batched in torch.

SCS writes a cone program as  min 1/2 x'Px + c'x  s.t.  Ax + s = b, s in K,
where K is a product of cones in a fixed order. The cones here are the ones
SCS lists first: the zero cone (equalities), the nonnegative orthant and
second-order cones {(t, z) : ||z||_2 <= t}. ``ConeSpec`` validates a
specification (an SCS-style dict is accepted) and gives the projections onto
K and onto its dual K*, for a batch of vectors at once; the second-order
cones of one spec are projected together by grouping equal sizes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import torch

#: the keys an SCS cone dict may use here, and what each means
SUPPORTED_CONES = {"z": "zero cone size (equality rows)", "l": "nonnegative cone size",
                   "q": "list of second-order cone sizes"}
#: SCS cone keys this implementation does not provide
UNSUPPORTED_CONES = ("b", "bu", "bl", "s", "cs", "ep", "ed", "p", "d", "nuc_m", "nuc_n", "ell1", "sl_n", "sl_k")


class ConeError(ValueError):
    """A cone specification is malformed; the message names the field."""


def _count(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConeError(f"cone {name}={value!r}: must be an integer >= 0")
    return value


@dataclass(frozen=True)
class ConeSpec:
    """K = {0}^z x R_+^l x Q^{q_1} x ... (rows of A in that order)."""

    z: int = 0
    l: int = 0
    q: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        _count("z", self.z)
        _count("l", self.l)
        if not isinstance(self.q, tuple):
            raise ConeError(f"cone q={self.q!r}: must be a list of second-order cone sizes")
        for i, size in enumerate(self.q):
            if isinstance(size, bool) or not isinstance(size, int) or size < 1:
                raise ConeError(f"cone q[{i}]={size!r}: a second-order cone size must be an integer >= 1")
        if self.dim == 0:
            raise ConeError("cone: every size is zero; a cone program needs at least one constraint row")

    @classmethod
    def from_dict(cls, cone: Mapping[str, Any] | "ConeSpec") -> "ConeSpec":
        """From SCS's dict form, e.g. ``{"z": 2, "l": 5, "q": [3, 4]}``; unknown keys are an error."""
        if isinstance(cone, ConeSpec):
            return cone
        if not isinstance(cone, Mapping):
            raise ConeError(f"cone must be a dict with keys {', '.join(SUPPORTED_CONES)}; got {type(cone).__name__}")
        for key in cone:
            if key in UNSUPPORTED_CONES:
                raise ConeError(f"cone {key!r} is an SCS cone this solver does not implement; "
                                f"allowed keys: {', '.join(SUPPORTED_CONES)}")
            if key not in SUPPORTED_CONES:
                raise ConeError(f"cone key {key!r} is unknown; allowed keys: {', '.join(SUPPORTED_CONES)}")
        q = cone.get("q", ())
        if isinstance(q, int) and not isinstance(q, bool):
            q = (q,)
        try:
            q = tuple(int(v) if hasattr(v, "__index__") else v for v in q)
        except TypeError:
            raise ConeError(f"cone q={q!r}: must be a list of second-order cone sizes") from None
        z, l = cone.get("z", 0), cone.get("l", 0)
        z = int(z) if hasattr(z, "__index__") and not isinstance(z, bool) else z
        l = int(l) if hasattr(l, "__index__") and not isinstance(l, bool) else l
        return cls(z=z, l=l, q=q)

    def to_dict(self) -> dict[str, Any]:
        """SCS's dict form (what the real ``scs`` package takes)."""
        return {"z": self.z, "l": self.l, "q": list(self.q)}

    @property
    def dim(self) -> int:
        return self.z + self.l + sum(self.q)

    def blocks(self) -> list[tuple[int, int]]:
        """(start, size) of every cone block that SCS treats as one unit (zero and orthant rows one by one)."""
        out = [(i, 1) for i in range(self.z + self.l)]
        start = self.z + self.l
        for size in self.q:
            out.append((start, size))
            start += size
        return out

    # ------------------------------------------------------------ projections
    def _soc_groups(self, device: torch.device) -> list[torch.Tensor]:
        """Row indices of the second-order cones, one (count, size) index matrix per distinct size."""
        starts: dict[int, list[int]] = {}
        start = self.z + self.l
        for size in self.q:
            starts.setdefault(size, []).append(start)
            start += size
        return [torch.tensor(s, device=device).unsqueeze(1) + torch.arange(size, device=device)
                for size, s in starts.items()]

    def project(self, v: torch.Tensor) -> torch.Tensor:
        """Euclidean projection of each row of ``v`` (B, m) onto K."""
        self._check_rows(v)
        parts = [torch.zeros_like(v[:, : self.z]), v[:, self.z: self.z + self.l].clamp(min=0.0)]
        out = torch.cat(parts + [v[:, self.z + self.l:]], dim=1)
        for idx in self._soc_groups(v.device):
            out[:, idx] = project_soc(v[:, idx])
        return out

    def project_dual(self, v: torch.Tensor) -> torch.Tensor:
        """Projection onto K* by Moreau: v + P_K(-v) (K* = free x R_+^l x Q)."""
        return v + self.project(-v)

    def _check_rows(self, v: torch.Tensor) -> None:
        if v.shape[-1] != self.dim:
            raise ConeError(f"cone has {self.dim} rows but the vector has {v.shape[-1]}")

    def __str__(self) -> str:
        return f"z={self.z}, l={self.l}, q={list(self.q)}"


def project_soc(v: torch.Tensor) -> torch.Tensor:
    """Projection onto second-order cones of one size: v (..., k) with t = v[..., 0]."""
    t, z = v[..., :1], v[..., 1:]
    norm = z.norm(dim=-1, keepdim=True)
    inside = norm <= t
    below = norm <= -t
    alpha = (norm + t) / 2
    boundary = torch.cat([alpha, z * (alpha / norm.clamp(min=torch.finfo(v.dtype).tiny))], dim=-1)
    return torch.where(inside, v, torch.where(below, torch.zeros_like(v), boundary))
