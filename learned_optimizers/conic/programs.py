"""Cone programs  min 1/2 x'Px + c'x  s.t.  Ax + s = b, s in K  (SCS's form).

* ``ConeProgram``: one problem (numpy), validated on construction, convertible
  to the real ``scs`` package's input (``to_scs``).
* ``ConeProgramBatch``: many problems with one cone as dense torch tensors,
  what the batched SCS in ``learned_optimizers.scs`` iterates on.
* Parametric families, each built directly in cone form (no modeling
  language): a family fixes its matrices from ``family_seed`` and draws the
  data that changes from problem to problem (the context):
  - ``lasso``: min 1/2||F z - g||^2 + mu ||z||_1 (NeuralSCS's Lasso: 50
    features, 100 data rows), context g, mu = mu_ratio * ||F'g||_inf;
  - ``huber``: robust regression min sum huber(F z - g) written with a
    second-order cone, context g with outliers;
  - ``socp``: random feasible and bounded SOCPs over zero, nonnegative and
    second-order cones, context (b, c) built from a primal-dual solution.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch

from learned_optimizers.common.settings import SettingsError, setting, validate
from learned_optimizers.conic.cones import ConeSpec


class ConeProgramError(ValueError):
    """A cone program is malformed; the message names the field."""


def _finite(name: str, value: np.ndarray) -> None:
    if not np.all(np.isfinite(value)):
        raise ConeProgramError(f"{name} contains NaN or inf")


@dataclass
class ConeProgram:
    A: np.ndarray  # (m, n), dense or scipy sparse on input
    b: np.ndarray
    c: np.ndarray
    cone: ConeSpec
    P: np.ndarray | None = None
    name: str = "cone-program"

    def __post_init__(self) -> None:
        self.cone = ConeSpec.from_dict(self.cone)
        self.A = self.A.toarray() if sp.issparse(self.A) else np.asarray(self.A, dtype=np.float64)
        self.A = self.A.astype(np.float64)
        self.b = np.asarray(self.b, dtype=np.float64).reshape(-1)
        self.c = np.asarray(self.c, dtype=np.float64).reshape(-1)
        if self.P is not None:
            self.P = self.P.toarray() if sp.issparse(self.P) else np.asarray(self.P, dtype=np.float64)
        self.validate()

    @property
    def m(self) -> int:
        return self.A.shape[0]

    @property
    def n(self) -> int:
        return self.A.shape[1]

    def validate(self) -> None:
        if self.A.ndim != 2:
            raise ConeProgramError(f"A must be a matrix, got shape {self.A.shape}")
        m, n = self.A.shape
        if self.b.shape != (m,):
            raise ConeProgramError(f"b has {self.b.size} entries but A has {m} rows")
        if self.c.shape != (n,):
            raise ConeProgramError(f"c has {self.c.size} entries but A has {n} columns")
        if self.cone.dim != m:
            raise ConeProgramError(f"cone ({self.cone}) has {self.cone.dim} rows but A has {m}")
        for name in ("A", "b", "c"):
            _finite(name, getattr(self, name))
        if self.P is not None:
            if self.P.shape != (n, n):
                raise ConeProgramError(f"P must be ({n}, {n}), got {self.P.shape}")
            _finite("P", self.P)
            if not np.allclose(self.P, self.P.T, rtol=0, atol=1e-12 * max(1.0, np.abs(self.P).max())):
                raise ConeProgramError("P is not symmetric")
            smallest = np.linalg.eigvalsh(self.P).min() if n else 0.0
            if smallest < -1e-9 * max(1.0, np.abs(self.P).max()):
                raise ConeProgramError(f"P is not positive semidefinite (smallest eigenvalue {smallest:.3g})")

    def to_scs(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """(data, cone) as the ``scs`` package takes them (P as its upper triangle)."""
        data: dict[str, Any] = {"A": sp.csc_matrix(self.A), "b": self.b.copy(), "c": self.c.copy()}
        if self.P is not None:
            data["P"] = sp.triu(sp.csc_matrix(self.P), format="csc")
        return data, self.cone.to_dict()


@dataclass
class ConeProgramBatch:
    """B programs with one cone, dense: A (B, m, n), b (B, m), c (B, n), P (B, n, n) or None."""

    A: torch.Tensor
    b: torch.Tensor
    c: torch.Tensor
    cone: ConeSpec
    P: torch.Tensor | None = None

    def __post_init__(self) -> None:
        if self.A.ndim != 3:
            raise ConeProgramError(f"A must be (batch, m, n), got {tuple(self.A.shape)}")
        B, m, n = self.A.shape
        if self.b.shape != (B, m) or self.c.shape != (B, n):
            raise ConeProgramError(f"b must be ({B}, {m}) and c ({B}, {n}); got {tuple(self.b.shape)}, "
                                   f"{tuple(self.c.shape)}")
        if self.P is not None and self.P.shape != (B, n, n):
            raise ConeProgramError(f"P must be ({B}, {n}, {n}), got {tuple(self.P.shape)}")
        if self.cone.dim != m:
            raise ConeProgramError(f"cone ({self.cone}) has {self.cone.dim} rows but A has {m}")
        for name in ("A", "b", "c", "P"):
            value = getattr(self, name)
            if value is not None and not bool(torch.isfinite(value).all()):
                raise ConeProgramError(f"{name} contains NaN or inf")
        if self.P is not None and not torch.allclose(self.P, self.P.transpose(1, 2)):
            raise ConeProgramError("P is not symmetric")

    @classmethod
    def stack(cls, programs: list[ConeProgram], device: torch.device | str = "cpu",
              dtype: torch.dtype = torch.float64) -> "ConeProgramBatch":
        """Stack programs of one shape and cone (a batch shares its cone)."""
        if not programs:
            raise ConeProgramError("no programs to stack")
        first = programs[0]
        for p in programs[1:]:
            if p.cone != first.cone or p.A.shape != first.A.shape or (p.P is None) != (first.P is None):
                raise ConeProgramError(f"{p.name}: a batch needs one cone and one shape "
                                       f"(got {p.cone} {p.A.shape} next to {first.cone} {first.A.shape})")
        t = lambda arrays: torch.as_tensor(np.stack(arrays), dtype=dtype, device=device)  # noqa: E731
        P = None if first.P is None else t([p.P for p in programs])
        return cls(t([p.A for p in programs]), t([p.b for p in programs]), t([p.c for p in programs]), first.cone, P)

    def __len__(self) -> int:
        return self.A.shape[0]

    def rows(self, start: int, stop: int) -> "ConeProgramBatch":
        """Programs start..stop - 1 as a batch of their own (views of this one's data)."""
        cut = slice(start, stop)
        return ConeProgramBatch(self.A[cut], self.b[cut], self.c[cut], self.cone, None if self.P is None else self.P[cut])

    def program(self, i: int) -> ConeProgram:
        as_np = lambda v: v[i].detach().cpu().double().numpy()  # noqa: E731
        return ConeProgram(as_np(self.A), as_np(self.b), as_np(self.c), self.cone,
                           None if self.P is None else as_np(self.P), name=f"program-{i}")


# ---------------------------------------------------------------- families
@dataclass(frozen=True)
class ConeFamilySettings:
    family_seed: int = setting(0, ge=0, doc="fixes the family's matrices (design, constraint matrix)")

    def __post_init__(self) -> None:
        validate(self)


@dataclass(frozen=True)
class LassoFamilySettings(ConeFamilySettings):
    features: int = setting(50, ge=1, doc="size of z")
    samples: int = setting(100, ge=1, doc="data rows of F")
    sparsity: float = setting(0.2, gt=0.0, le=1.0, doc="fraction of non-zeros of the z that generates g")
    noise: float = setting(0.1, ge=0.0, doc="std of the noise added to F z")
    mu_ratio: float = setting(0.1, gt=0.0, lt=1.0, doc="mu = mu_ratio * ||F'g||_inf (1 would give z = 0)")


@dataclass(frozen=True)
class HuberFamilySettings(ConeFamilySettings):
    features: int = setting(20, ge=1, doc="size of z")
    samples: int = setting(100, ge=1, doc="data rows")
    threshold: float = setting(1.0, gt=0.0, doc="M: quadratic below |r| = M, linear above")
    outliers: float = setting(0.1, ge=0.0, le=1.0, doc="fraction of targets replaced by large outliers")
    noise: float = setting(0.1, ge=0.0, doc="std of the inlier noise")


@dataclass(frozen=True)
class SOCPFamilySettings(ConeFamilySettings):
    variables: int = setting(30, ge=1, doc="n")
    zero: int = setting(5, ge=0, doc="equality rows")
    nonnegative: int = setting(20, ge=0, doc="nonnegative rows")
    soc_count: int = setting(6, ge=0, doc="number of second-order cones")
    soc_size: int = setting(5, ge=2, doc="size of each second-order cone")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.zero + self.nonnegative + self.soc_count * self.soc_size == 0:
            raise SettingsError("socp: zero, nonnegative and soc_count are all 0; a program needs constraint rows")


class ConeFamily(ABC):
    """A parametric family of cone programs: fixed matrices, contexts x that change."""

    name: str
    settings_cls: type[ConeFamilySettings]

    def __init__(self, settings: ConeFamilySettings) -> None:
        self.settings = settings
        gen = np.random.default_rng(10_007 * settings.family_seed + 29)
        self._build(gen)

    @abstractmethod
    def _build(self, rng: np.random.Generator) -> None:
        """Draw the fixed matrices and set ``cone``, ``n``, ``m`` and ``context_dim``."""

    @abstractmethod
    def sample_contexts(self, count: int, generator: torch.Generator, device: torch.device | str = "cpu") -> torch.Tensor:
        """(count, context_dim) float32 contexts."""

    @abstractmethod
    def programs(self, contexts: torch.Tensor) -> ConeProgramBatch:
        """The programs of these contexts, in the contexts' device and dtype."""

    def _t(self, array: np.ndarray, like: torch.Tensor) -> torch.Tensor:
        return torch.as_tensor(array, dtype=like.dtype, device=like.device)


class LassoFamily(ConeFamily):
    """min 1/2 ||F z - g||^2 + mu 1't  s.t.  -t <= z <= t;  x = (z, t), cone R_+^(2p)."""

    name = "lasso"
    settings_cls = LassoFamilySettings

    def _build(self, rng: np.random.Generator) -> None:
        s = self.settings
        p = s.features
        self.F = rng.standard_normal((s.samples, p)) / np.sqrt(s.samples)
        eye = np.eye(p)
        self.A_fixed = np.block([[eye, -eye], [-eye, -eye]])
        self.P_fixed = np.zeros((2 * p, 2 * p))
        self.P_fixed[:p, :p] = self.F.T @ self.F
        self.cone = ConeSpec(l=2 * p)
        self.n, self.m, self.context_dim = 2 * p, 2 * p, s.samples

    def sample_contexts(self, count, generator, device="cpu"):
        s = self.settings
        F = torch.as_tensor(self.F, dtype=torch.float32, device=device)
        z = torch.randn(count, s.features, generator=generator, device=device)
        z = z * (torch.rand(count, s.features, generator=generator, device=device) < s.sparsity)
        noise = torch.randn(count, s.samples, generator=generator, device=device) * s.noise
        return z @ F.T + noise

    def programs(self, contexts):
        s, B, p = self.settings, contexts.shape[0], self.settings.features
        F = self._t(self.F, contexts)
        Ftg = contexts @ F
        mu = s.mu_ratio * Ftg.abs().amax(1, keepdim=True)
        c = torch.cat([-Ftg, mu.expand(B, p)], dim=1)
        A = self._t(self.A_fixed, contexts).expand(B, -1, -1)
        P = self._t(self.P_fixed, contexts).expand(B, -1, -1)
        return ConeProgramBatch(A, torch.zeros(B, self.m, dtype=contexts.dtype, device=contexts.device), c,
                                self.cone, P)


class HuberFamily(ConeFamily):
    """Huber regression as an SOCP.

    huber(r) = min_{w} w^2 + 2M |r - w|, so with x = (z, w, t, q):
    min q + 2M 1't  s.t.  |F z - w - g| <= t (2N nonnegative rows) and
    ||w||^2 <= q as the second-order cone (q + 1, 2w, q - 1) of size N + 2.
    """

    name = "huber"
    settings_cls = HuberFamilySettings

    def _build(self, rng: np.random.Generator) -> None:
        s = self.settings
        N, p = s.samples, s.features
        self.F = rng.standard_normal((N, p)) / np.sqrt(p)
        I, Z = np.eye(N), np.zeros((N, N))
        zeros_p = np.zeros((N, p))
        upper = np.hstack([self.F, -I, -I, np.zeros((N, 1))])  # F z - w - t <= g
        lower = np.hstack([-self.F, I, -I, np.zeros((N, 1))])  # -F z + w - t <= -g
        # s = b - A x must be (q + 1, 2w, q - 1): A rows are the negated coefficients, b the constants
        soc_top = np.hstack([np.zeros((1, p)), np.zeros((1, N)), np.zeros((1, N)), -np.ones((1, 1))])
        soc_mid = np.hstack([zeros_p, -2 * I, Z, np.zeros((N, 1))])
        soc_bot = np.hstack([np.zeros((1, p)), np.zeros((1, N)), np.zeros((1, N)), -np.ones((1, 1))])
        self.A_fixed = np.vstack([upper, lower, soc_top, soc_mid, soc_bot])
        self.b_soc = np.concatenate([[1.0], np.zeros(N), [-1.0]])
        self.c_fixed = np.concatenate([np.zeros(p + N), 2 * s.threshold * np.ones(N), [1.0]])
        self.cone = ConeSpec(l=2 * N, q=(N + 2,))
        self.n, self.m, self.context_dim = p + 2 * N + 1, 3 * N + 2, N

    def sample_contexts(self, count, generator, device="cpu"):
        s = self.settings
        F = torch.as_tensor(self.F, dtype=torch.float32, device=device)
        z = torch.randn(count, s.features, generator=generator, device=device)
        g = z @ F.T + torch.randn(count, s.samples, generator=generator, device=device) * s.noise
        outlier = torch.rand(count, s.samples, generator=generator, device=device) < s.outliers
        big = torch.randn(count, s.samples, generator=generator, device=device) * 10 * s.threshold
        return torch.where(outlier, big, g)

    def programs(self, contexts):
        B = contexts.shape[0]
        A = self._t(self.A_fixed, contexts).expand(B, -1, -1)
        b_soc = self._t(self.b_soc, contexts).expand(B, -1)
        b = torch.cat([contexts, -contexts, b_soc], dim=1)
        c = self._t(self.c_fixed, contexts).expand(B, -1)
        return ConeProgramBatch(A, b, c, self.cone)


class SOCPFamily(ConeFamily):
    """Random SOCPs with P = 0, feasible and bounded by construction.

    A is fixed; a context draws a primal-dual solution (x*, s*, y*) with
    s* in K, y* in K*, s*'y* = 0 per cone, and sets b = A x* + s*, c = -A'y*.
    The context vector is (b, c).
    """

    name = "socp"
    settings_cls = SOCPFamilySettings

    def _build(self, rng: np.random.Generator) -> None:
        s = self.settings
        self.cone = ConeSpec(z=s.zero, l=s.nonnegative, q=(s.soc_size,) * s.soc_count)
        self.m, self.n = self.cone.dim, s.variables
        self.A_fixed = rng.standard_normal((self.m, self.n)) / np.sqrt(self.n)
        self.context_dim = self.m + self.n

    def sample_contexts(self, count, generator, device="cpu"):
        s, k = self.settings, self.cone
        opts = dict(generator=generator, device=device)
        x = torch.randn(count, self.n, **opts)
        # zero cone: s = 0, y free
        s_parts = [torch.zeros(count, k.z, device=device)]
        y_parts = [torch.randn(count, k.z, **opts)]
        # orthant: each row active in s or in y
        active = torch.rand(count, k.l, **opts) < 0.5
        mag = torch.rand(count, k.l, **opts) + 0.1
        s_parts.append(torch.where(active, torch.zeros_like(mag), mag))
        y_parts.append(torch.where(active, mag, torch.zeros_like(mag)))
        # second-order cones: a complementary boundary pair (a(1, d), b(1, -d)), or one side interior
        for _ in range(s.soc_count):
            d = torch.randn(count, s.soc_size - 1, **opts)
            d = d / d.norm(dim=1, keepdim=True)
            a, bb = torch.rand(count, 1, **opts) + 0.1, torch.rand(count, 1, **opts) + 0.1
            kind = torch.randint(0, 3, (count, 1), **opts)  # 0: both on boundary, 1: s interior, 2: y interior
            s_cone = a * torch.cat([torch.ones_like(a), d], 1)
            y_cone = bb * torch.cat([torch.ones_like(bb), -d], 1)
            interior = torch.cat([a + 1.0, 0.5 * a * d], 1)
            s_parts.append(torch.where(kind == 1, interior, torch.where(kind == 2, torch.zeros_like(s_cone), s_cone)))
            y_parts.append(torch.where(kind == 2, torch.cat([bb + 1.0, -0.5 * bb * d], 1),
                                       torch.where(kind == 1, torch.zeros_like(y_cone), y_cone)))
        A = torch.as_tensor(self.A_fixed, dtype=torch.float32, device=device)
        slack, dual = torch.cat(s_parts, 1), torch.cat(y_parts, 1)
        b = x @ A.T + slack
        c = -dual @ A
        return torch.cat([b, c], 1)

    def programs(self, contexts):
        B = contexts.shape[0]
        A = self._t(self.A_fixed, contexts).expand(B, -1, -1)
        return ConeProgramBatch(A, contexts[:, : self.m], contexts[:, self.m:], self.cone)


#: family name -> family class
CONE_FAMILIES: dict[str, type[ConeFamily]] = {"lasso": LassoFamily, "huber": HuberFamily, "socp": SOCPFamily}


def make_cone_family(name: str, **settings: Any) -> ConeFamily:
    if name not in CONE_FAMILIES:
        raise ValueError(f"cone family={name!r}; allowed: {', '.join(CONE_FAMILIES)}")
    cls = CONE_FAMILIES[name]
    return cls(cls.settings_cls(**settings))

