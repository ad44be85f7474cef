"""A distribution of QPs to train and test a learned solver on: classes x sizes x seeds.

The mix is written ``"class:n1,n2,..."`` per class, e.g. ``("random:10,20",
"lasso:2,3")``, because a useful size differs by class (a Lasso of size n has
about 100 n variables). Episodes go round-robin over the classes, as RLQP
trains. Training seeds are drawn below ``HELDOUT_SEED_BASE``; held-out problems
use seeds from it on, so train and test never share a problem.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from learned_optimizers.common.settings import SettingsError, setting, validate
from learned_optimizers.qp.problems import QP, QP_CLASSES, generate

#: seeds at or above this are reserved for held-out problems
HELDOUT_SEED_BASE = 1_000_000_000

#: classes RLQP trains on; Huber, Eq QP and real data stay out (the generalization tests)
TRAINING_CLASSES = ("random", "portfolio", "lasso", "svm", "control")


def parse_mix(mix: tuple[str, ...], key: str = "mix") -> list[tuple[str, tuple[int, ...]]]:
    """``("random:10,20",)`` -> ``[("random", (10, 20))]``, with errors naming the entry."""
    if not mix:
        raise SettingsError(f"{key}: needs at least one 'class:n1,n2' entry")
    out = []
    for i, entry in enumerate(mix):
        name, sep, sizes = entry.partition(":")
        if name not in QP_CLASSES:
            raise SettingsError(f"{key}[{i}]={entry!r}: unknown QP class {name!r}; allowed: {', '.join(QP_CLASSES)}")
        try:
            ns = tuple(int(s) for s in sizes.split(",")) if sep else ()
        except ValueError:
            ns = ()
        if not ns or min(ns) < 1:
            raise SettingsError(f"{key}[{i}]={entry!r}: expected 'class:n1,n2,...' with sizes >= 1, e.g. 'random:10,20'")
        out.append((name, ns))
    return out


@dataclass(frozen=True)
class QPMixSettings:
    """What RLQP trains on and the accuracy it solves to."""

    mix: tuple[str, ...] = setting(("random:10,20,30", "portfolio:10,20,30", "lasso:2,3", "svm:2,3", "control:2,4,6"),
                                   doc="'class:n1,n2' per class, visited round-robin")
    eps: float = setting(1e-6, gt=0.0, lt=1.0, doc="eps_abs = eps_rel of the termination test")
    interval: int = setting(100, ge=1, doc="ADMM iterations per env step (K)")
    max_steps: int = setting(60, ge=1, doc="env steps before an episode is truncated")

    def __post_init__(self) -> None:
        validate(self)
        for i, (name, _) in enumerate(parse_mix(self.mix)):
            if name not in TRAINING_CLASSES:
                raise SettingsError(f"mix[{i}]={self.mix[i]!r}: {name} stays out of training so that the benchmark can "
                                    f"test generalization to it; allowed: {', '.join(TRAINING_CLASSES)}")
        if self.interval % 25:
            raise SettingsError(f"interval={self.interval}: must be a multiple of 25, OSQP's termination-check interval")


class QPMix:
    """Samples problems of the mix; the same seed gives the same problems."""

    def __init__(self, settings: QPMixSettings) -> None:
        self.settings = settings
        self.entries = parse_mix(settings.mix)
        self.count = 0  # episodes drawn so far: the round-robin position

    @cached_property
    def max_dims(self) -> tuple[int, int]:
        """(n, m) of the largest problem of the mix: the padded sizes of a live batch."""
        probes = [generate(c, n, 0) for c, sizes in self.entries for n in sizes]
        return max(p.n for p in probes), max(p.m for p in probes)

    def sample(self, rng: np.random.Generator, count: int) -> list[QP]:
        """``count`` training problems, classes round-robin, size and seed drawn from ``rng``."""
        out = []
        for _ in range(count):
            name, sizes = self.entries[self.count % len(self.entries)]
            self.count += 1
            out.append(generate(name, int(rng.choice(sizes)), int(rng.integers(HELDOUT_SEED_BASE))))
        return out

    def heldout(self, per_size: int, scale: int = 1) -> list[QP]:
        """``per_size`` problems of every (class, size x scale), with seeds no training draw can take."""
        return [qp for name, sizes in self.entries for qp in heldout_problems(name, [n * scale for n in sizes], per_size)]


def heldout_problems(name: str, sizes: Iterable[int], per_size: int) -> list[QP]:
    """``per_size`` problems of class ``name`` at every size, seeded from ``HELDOUT_SEED_BASE`` on."""
    return [generate(name, n, HELDOUT_SEED_BASE + i) for n in sizes for i in range(per_size)]
