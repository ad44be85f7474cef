"""SCS's iteration as fixed-point map families (NeuralSCS, tutorial 3.4.1).

The iterate is SCS's v = (x, y, tau) of the homogeneous self-dual embedding
and g(v; x) is one SCS step (iterate rescaled to norm sqrt(n + m + 1), the
linear system, the cone projection, the relaxed update) at a fixed scale: a
stationary map, so a learned accelerator faces the same map at every step
(SCS's adaptive scale would change it under the accelerator's feet). The
context is the data that changes between problems of a cone family
(``learned_optimizers.problems.cone_programs``); the map keeps the
factorization of the last contexts it saw, so an episode factors once.

``termination`` applies SCS's own stopping test (eps_abs, eps_rel on the
unscaled residuals and duality gap) to the point SCS would check at v, so a
benchmark counts iterations exactly as the real solver does.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch

from learned_optimizers.common.fixed_point_map import FixedPointMap, FixedPointTaskSettings
from learned_optimizers.common.settings import setting
from learned_optimizers.conic.programs import (
    ConeFamily,
    HuberFamily,
    HuberFamilySettings,
    LassoFamily,
    LassoFamilySettings,
    SOCPFamily,
    SOCPFamilySettings,
)
from learned_optimizers.conic.scs import SCSSettings, SCSStatus, SCSWork


@dataclass(frozen=True)
class SCSMapSettings(FixedPointTaskSettings):
    scale: float = setting(0.1, gt=0.0, doc="SCS's scale, fixed in the map (SCS's default start value)")
    alpha: float = setting(1.5, gt=0.0, lt=2.0, doc="SCS's relaxation")
    rho_x: float = setting(1e-6, gt=0.0, doc="SCS's rho_x")
    normalize: bool = setting(True, choices=(True, False), doc="SCS's data equilibration")

    def scs_settings(self) -> SCSSettings:
        return SCSSettings(scale=self.scale, adaptive_scale=False, alpha=self.alpha, rho_x=self.rho_x,
                           normalize=self.normalize)


@dataclass(frozen=True)
class SCSLassoSettings(SCSMapSettings, LassoFamilySettings):
    pass


@dataclass(frozen=True)
class SCSHuberSettings(SCSMapSettings, HuberFamilySettings):
    pass


@dataclass(frozen=True)
class SCSSOCPSettings(SCSMapSettings, SOCPFamilySettings):
    pass


class SCSMap(FixedPointMap):
    """g(v; x) = one SCS step on the cone program of context x."""

    cone_family_cls: type[ConeFamily]

    def __init__(self, settings: SCSMapSettings) -> None:
        super().__init__(settings)
        family_fields = {f.name for f in fields(self.cone_family_cls.settings_cls)}
        family_settings = self.cone_family_cls.settings_cls(
            **{name: getattr(settings, name) for name in family_fields})
        self.cone_family = self.cone_family_cls(family_settings)
        self.dim = self.cone_family.n + self.cone_family.m + 1
        self.context_dim = self.cone_family.context_dim
        self._work_key: tuple | None = None
        self._work_contexts: torch.Tensor | None = None
        self._work: SCSWork | None = None

    def _parameters(self) -> tuple[torch.Tensor, ...]:
        return ()

    def sample_contexts(self, n: int, generator: torch.Generator, device: torch.device | str = "cpu") -> torch.Tensor:
        return self.cone_family.sample_contexts(n, generator, device)

    def work(self, x: torch.Tensor, dtype: torch.dtype) -> SCSWork:
        """The scaled, factored problems of contexts x (rebuilt only when the contexts change)."""
        key = (tuple(x.shape), x.device, dtype)
        if self._work_key != key or self._work_contexts is None or not torch.equal(self._work_contexts, x):
            with torch.no_grad():
                programs = self.cone_family.programs(x.detach().to(dtype))
                self._work = SCSWork(programs, self.settings.scs_settings())
            self._work_key, self._work_contexts = key, x.detach().clone()
        return self._work

    def initial_iterate(self, x: torch.Tensor) -> torch.Tensor:
        """SCS's cold start v = (0, 0, 1)."""
        v = torch.zeros(x.shape[0], self.dim, device=x.device, dtype=x.dtype)
        v[:, -1] = 1.0
        return v

    def g(self, y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return self.work(x, y.dtype).step(y).v

    def termination(self, y: torch.Tensor, x: torch.Tensor, eps: float) -> torch.Tensor:
        """(B,) bool: SCS's test with eps_abs = eps_rel = eps holds at the point SCS checks from iterate y."""
        work = self.work(x, y.dtype)
        with torch.no_grad():
            out = work.step(y)
            status = work.check(work.residuals(out.u, out.rsk), eps_abs=eps, eps_rel=eps)
        return status == SCSStatus.SOLVED


class SCSLassoMap(SCSMap):
    family = "scs-lasso"
    cone_family_cls = LassoFamily


class SCSHuberMap(SCSMap):
    family = "scs-huber"
    cone_family_cls = HuberFamily


class SCSSOCPMap(SCSMap):
    family = "scs-socp"
    cone_family_cls = SOCPFamily


#: family name -> (map class, settings class), merged into FIXED_POINT_FAMILIES
SCS_MAP_FAMILIES = {
    "scs-lasso": (SCSLassoMap, SCSLassoSettings),
    "scs-huber": (SCSHuberMap, SCSHuberSettings),
    "scs-socp": (SCSSOCPMap, SCSSOCPSettings),
}
