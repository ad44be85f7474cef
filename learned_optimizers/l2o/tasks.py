"""Training objectives f(phi; D) for learning to optimize (Li & Malik 2017), batched over tasks.

A task is a dataset D drawn from the family's distribution; the iterate phi is
the model's parameter vector. In the amortization view (``ContextualProblem``)
the context x is the dataset flattened into one row, so a batch of tasks is a
(n, context_dim) tensor on any device and every objective is evaluated for the
whole batch at once.

* ``quadratic``: f = 1/2 (phi - c)' A (phi - c), A with a chosen condition
  number: a sanity family with a known optimum (c, value 0).
* ``logreg``: l2-regularized logistic regression on two Gaussian classes with
  per-feature scales spread over a decade (convex, mildly ill-conditioned).
* ``robust``: linear regression with the Geman-McClure loss r^2 / (c^2 + r^2)
  on data with gross outliers (non-convex).
* ``mlp``: a two-layer ReLU classifier on clustered data with random cluster
  labels (non-convex; phi = W1, b1, w2, b2 flattened).

The settings of the MDP around the objective (history length, horizon, the
base step the learned update corrects) live in the same settings class, as for
the fixed-point families, so one config section describes the whole task.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch

from learned_optimizers.common.problem import Box, ContextualProblem
from learned_optimizers.common.settings import setting, validate


@dataclass(frozen=True)
class L2OTaskSettings:
    """The optimizer-as-MDP around any training objective."""

    history: int = setting(25, ge=1, le=200, doc="H: past gradients and objective changes shown to the policy")
    horizon: int = setting(100, ge=1, doc="optimizer steps per episode")
    learning_rate: float = setting(0.0, ge=0.0, doc="step size of the Adam step the action corrects; "
                                                    "0 = the family's Adam learning rate tuned by a sweep on training tasks")
    action: str = setting("correction", choices=("correction", "step_scale"),
                          doc="correction: phi += lr (a - d_Adam); step_scale: phi -= lr exp(a) d_Adam (a = 0: Adam either way)")
    max_correction: float = setting(5.0, gt=0.0, doc="bound of the per-coordinate action a")
    init_scale: float = setting(1.0, gt=0.0, doc="std of the initial parameters phi_0")
    blowup: float = setting(1e6, gt=1.0, doc="an objective above blowup * f(phi_0) ends the episode as diverged")

    def __post_init__(self) -> None:
        validate(self)


@dataclass(frozen=True)
class QuadraticSettings(L2OTaskSettings):
    dim: int = setting(16, ge=1, doc="size of phi")
    condition: float = setting(100.0, ge=1.0, doc="condition number of A (eigenvalues log-spaced in [1/condition, 1])")


@dataclass(frozen=True)
class LogRegSettings(L2OTaskSettings):
    dim: int = setting(8, ge=1, doc="features (phi has dim + 1 entries: weights and bias)")
    samples: int = setting(100, ge=2, doc="data points per task")
    l2: float = setting(1e-3, ge=0.0, doc="weight of 1/2 ||w||^2")
    separation: float = setting(1.0, ge=0.0, doc="std of each class mean around the origin")


@dataclass(frozen=True)
class RobustSettings(L2OTaskSettings):
    dim: int = setting(8, ge=1, doc="features (phi has dim + 1 entries: weights and bias)")
    samples: int = setting(100, ge=2, doc="data points per task")
    scale: float = setting(1.0, gt=0.0, doc="c of the Geman-McClure loss r^2 / (c^2 + r^2)")
    noise: float = setting(0.1, ge=0.0, doc="std of the inlier noise")
    outliers: float = setting(0.1, ge=0.0, le=1.0, doc="fraction of targets replaced by N(0, 10^2) outliers")


@dataclass(frozen=True)
class MLPTaskSettings(L2OTaskSettings):
    inputs: int = setting(4, ge=1, doc="input features")
    hidden: int = setting(8, ge=1, doc="hidden ReLU units (the size knob: phi has hidden * (inputs + 2) + 1 entries)")
    samples: int = setting(100, ge=2, doc="data points per task")
    clusters: int = setting(4, ge=2, doc="Gaussian clusters, each with a random class")
    l2: float = setting(1e-4, ge=0.0, doc="weight of 1/2 ||phi||^2")
    init_scale: float = setting(0.5, gt=0.0, doc="std of the initial parameters phi_0")


class TrainingTaskFamily(ContextualProblem):
    """A distribution over datasets D and an objective f(phi; D), batched over tasks."""

    #: the settings field that sets the problem's size (what ``scaled`` multiplies)
    size_field: str = "dim"

    def __init__(self, settings: L2OTaskSettings) -> None:
        self.settings = settings

    # ------------------------------------------------------------ contract
    @property
    def context_bounds(self) -> Box:
        inf = torch.full((self.context_dim,), math.inf)
        return Box(-inf, inf)

    @property
    def solution_bounds(self) -> Box:
        inf = torch.full((self.solution_dim,), math.inf)
        return Box(-inf, inf)

    def random_solutions(self, shape: tuple[int, ...], generator: torch.Generator, device: torch.device | str) -> torch.Tensor:
        """Parameters drawn like an optimizer's start (the solution box is unbounded)."""
        return self.settings.init_scale * torch.randn(*shape, self.solution_dim, generator=generator, device=device)

    def initial_guesses(self, x: torch.Tensor, restarts: int, generator: torch.Generator) -> torch.Tensor:
        return self.random_solutions((restarts, x.shape[0]), generator, x.device).to(x.dtype)

    def initial_iterate(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """phi_0 for each task: N(0, init_scale^2), drawn from ``generator``."""
        return self.initial_guesses(x, 1, generator)[0]

    def scaled(self, factor: int) -> "TrainingTaskFamily":
        """The same family with its size knob multiplied by ``factor`` (generalization rows)."""
        size = getattr(self.settings, self.size_field)
        return type(self)(replace(self.settings, **{self.size_field: size * factor}))

    def check_iterates(self, phi: torch.Tensor, x: torch.Tensor) -> None:
        """Parameters must be one row per task, of the family's size (NaN is allowed: that task diverges)."""
        if phi.ndim != 2 or phi.shape != (x.shape[0], self.solution_dim):
            raise ValueError(f"{self.family}: parameters must have shape ({x.shape[0]}, {self.solution_dim}), "
                             f"got {tuple(phi.shape)}")


def _randn(generator: torch.Generator, device: torch.device | str, *shape: int) -> torch.Tensor:
    return torch.randn(*shape, generator=generator, device=device)


def _rand(generator: torch.Generator, device: torch.device | str, *shape: int) -> torch.Tensor:
    return torch.rand(*shape, generator=generator, device=device)


class QuadraticTasks(TrainingTaskFamily):
    """f = 1/2 (phi - c)' A (phi - c); the context holds A (flattened) and c."""

    family = "quadratic"

    def __init__(self, settings: QuadraticSettings | None = None, **kwargs) -> None:
        super().__init__(settings if settings is not None else QuadraticSettings(**kwargs))
        d = self.settings.dim
        self.solution_dim, self.context_dim = d, d * d + d

    def sample_contexts(self, n: int, generator: torch.Generator, device: torch.device | str = "cpu") -> torch.Tensor:
        d = self.settings.dim
        Q, _ = torch.linalg.qr(_randn(generator, device, n, d, d))
        eigs = torch.logspace(-math.log10(self.settings.condition), 0.0, d, device=device)
        A = (Q * eigs) @ Q.transpose(1, 2)
        A = 0.5 * (A + A.transpose(1, 2))
        c = _randn(generator, device, n, d)
        return torch.cat([A.flatten(1), c], 1)

    def unpack(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        d = self.settings.dim
        return x[:, : d * d].reshape(-1, d, d), x[:, d * d:]

    def objective(self, phi: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        A, c = self.unpack(x)
        r = phi - c
        return 0.5 * ((A @ r.unsqueeze(2)).squeeze(2) * r).sum(1)

    def optimum(self, x: torch.Tensor) -> torch.Tensor:
        """The known minimizer c (the value there is 0)."""
        return self.unpack(x)[1]


class _SupervisedTasks(TrainingTaskFamily):
    """Datasets of ``samples`` rows (features, target), flattened row by row into the context."""

    features: int

    def unpack(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        data = x.reshape(x.shape[0], self.settings.samples, self.features + 1)
        return data[..., :-1], data[..., -1]

    @staticmethod
    def pack(X: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return torch.cat([X, t.unsqueeze(2)], 2).flatten(1)


class LogisticRegressionTasks(_SupervisedTasks):
    """Mean logistic loss of phi = (w, b) on two Gaussian classes, plus l2/2 ||w||^2."""

    family = "logreg"

    def __init__(self, settings: LogRegSettings | None = None, **kwargs) -> None:
        super().__init__(settings if settings is not None else LogRegSettings(**kwargs))
        s = self.settings
        self.features = s.dim
        self.solution_dim, self.context_dim = s.dim + 1, s.samples * (s.dim + 1)

    def sample_contexts(self, n: int, generator: torch.Generator, device: torch.device | str = "cpu") -> torch.Tensor:
        s = self.settings
        means = s.separation * _randn(generator, device, n, 2, s.dim)
        labels = (_rand(generator, device, n, s.samples) < 0.5).float()
        X = means.gather(1, labels.long().unsqueeze(2).expand(-1, -1, s.dim)) + _randn(generator, device, n, s.samples, s.dim)
        feature_scale = 10.0 ** (_rand(generator, device, n, 1, s.dim) - 0.5)  # a decade of spread
        return self.pack(X * feature_scale, labels)

    def objective(self, phi: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        X, t = self.unpack(x)
        w, b = phi[:, :-1], phi[:, -1:]
        logits = (X @ w.unsqueeze(2)).squeeze(2) + b
        loss = torch.nn.functional.softplus(-(2.0 * t - 1.0) * logits).mean(1)
        return loss + 0.5 * self.settings.l2 * (w * w).sum(1)


class RobustRegressionTasks(_SupervisedTasks):
    """Mean Geman-McClure loss r^2 / (c^2 + r^2) of r = t - X w - b, on data with outliers."""

    family = "robust"

    def __init__(self, settings: RobustSettings | None = None, **kwargs) -> None:
        super().__init__(settings if settings is not None else RobustSettings(**kwargs))
        s = self.settings
        self.features = s.dim
        self.solution_dim, self.context_dim = s.dim + 1, s.samples * (s.dim + 1)

    def sample_contexts(self, n: int, generator: torch.Generator, device: torch.device | str = "cpu") -> torch.Tensor:
        s = self.settings
        X = _randn(generator, device, n, s.samples, s.dim)
        w, b = _randn(generator, device, n, s.dim), _randn(generator, device, n, 1)
        t = (X @ w.unsqueeze(2)).squeeze(2) + b + s.noise * _randn(generator, device, n, s.samples)
        outlier = _rand(generator, device, n, s.samples) < s.outliers
        t = torch.where(outlier, 10.0 * _randn(generator, device, n, s.samples), t)
        return self.pack(X, t)

    def objective(self, phi: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        X, t = self.unpack(x)
        r = t - (X @ phi[:, :-1].unsqueeze(2)).squeeze(2) - phi[:, -1:]
        c2 = self.settings.scale ** 2
        return (r * r / (c2 + r * r)).mean(1)


class MLPTasks(_SupervisedTasks):
    """Mean logistic loss of a two-layer ReLU net on clustered data, plus l2/2 ||phi||^2."""

    family = "mlp"
    size_field = "hidden"

    def __init__(self, settings: MLPTaskSettings | None = None, **kwargs) -> None:
        super().__init__(settings if settings is not None else MLPTaskSettings(**kwargs))
        s = self.settings
        self.features = s.inputs
        self.solution_dim, self.context_dim = s.hidden * (s.inputs + 2) + 1, s.samples * (s.inputs + 1)

    def sample_contexts(self, n: int, generator: torch.Generator, device: torch.device | str = "cpu") -> torch.Tensor:
        s = self.settings
        centres = 2.0 * _randn(generator, device, n, s.clusters, s.inputs)
        classes = (_rand(generator, device, n, s.clusters) < 0.5).float()
        member = torch.randint(0, s.clusters, (n, s.samples), generator=generator, device=device)
        X = centres.gather(1, member.unsqueeze(2).expand(-1, -1, s.inputs)) + _randn(generator, device, n, s.samples, s.inputs)
        return self.pack(X, classes.gather(1, member))

    def objective(self, phi: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        s = self.settings
        X, t = self.unpack(x)
        h, k = s.hidden, s.inputs
        W1 = phi[:, : h * k].reshape(-1, h, k)
        b1 = phi[:, h * k: h * k + h]
        w2 = phi[:, h * k + h: h * k + 2 * h]
        b2 = phi[:, -1:]
        hidden = torch.relu(X @ W1.transpose(1, 2) + b1.unsqueeze(1))
        logits = (hidden @ w2.unsqueeze(2)).squeeze(2) + b2
        loss = torch.nn.functional.softplus(-(2.0 * t - 1.0) * logits).mean(1)
        return loss + 0.5 * s.l2 * (phi * phi).sum(1)


#: family name -> (task class, its settings dataclass)
TRAINING_TASK_FAMILIES: dict[str, tuple[type[TrainingTaskFamily], type[L2OTaskSettings]]] = {
    "logreg": (LogisticRegressionTasks, LogRegSettings),
    "robust": (RobustRegressionTasks, RobustSettings),
    "mlp": (MLPTasks, MLPTaskSettings),
    "quadratic": (QuadraticTasks, QuadraticSettings),
}


def make_tasks(family: str, **settings) -> TrainingTaskFamily:
    """A task family by name, e.g. ``make_tasks("logreg", dim=32)``."""
    if family not in TRAINING_TASK_FAMILIES:
        raise ValueError(f"family={family!r}; allowed: {', '.join(TRAINING_TASK_FAMILIES)}")
    cls, settings_cls = TRAINING_TASK_FAMILIES[family]
    return cls(settings_cls(**settings))
