"""Discrete measures on a fixed grid, the squared-Euclidean cost between grid points, and checks of user input.

Every OT family here lives on one support: the k x k grid of [0, 1]^2, with
C_ij = ||z_i - z_j||^2 (so 0 <= C <= 2). Two sources of measures:

* digits: scikit-learn's bundled 8 x 8 handwritten digits (``load_digits``, no
  download), bilinearly resampled to the grid; the images are split by index
  into a training and a held-out part, so a held-out pair never shows an image
  seen in training.
* Gaussian mixtures: a few Gaussian bumps with random centres, widths and
  weights, evaluated on the grid.

Both are mixed with a little uniform mass (``uniform_weight``): log-domain
Sinkhorn and the dual objective need every entry of a measure positive.
"""

from __future__ import annotations

from functools import lru_cache

import torch


class MeasureError(ValueError):
    """A measure or cost that optimal transport cannot take; the message names the argument and what is wrong."""


def grid_points(k: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """The k x k grid of [0, 1]^2 in row-major order, (k * k, 2)."""
    t = torch.linspace(0.0, 1.0, k, dtype=dtype)
    rows, cols = torch.meshgrid(t, t, indexing="ij")
    return torch.stack([rows.reshape(-1), cols.reshape(-1)], dim=1)


def squared_euclidean_cost(points: torch.Tensor) -> torch.Tensor:
    """C_ij = ||z_i - z_j||^2, (N, N)."""
    return torch.cdist(points, points).pow(2)


def check_measures(a: torch.Tensor, name: str, size: int | None = None, sum_tol: float | None = None) -> None:
    """Reject what is not a batch of probability vectors: wrong shape, NaN or inf, negative entries, wrong mass."""
    if a.ndim != 2:
        raise MeasureError(f"{name}: a batch of measures must be 2-D (pairs, support size); got shape {tuple(a.shape)}")
    if size is not None and a.shape[1] != size:
        raise MeasureError(f"{name}: the support has {size} points; got measures of size {a.shape[1]}")
    if a.shape[1] == 0:
        raise MeasureError(f"{name}: the support is empty")
    if not torch.isfinite(a).all():
        raise MeasureError(f"{name}: contains NaN or inf (row {_first_row(~torch.isfinite(a).all(1))})")
    if (a < 0).any():
        raise MeasureError(f"{name}: has negative entries (row {_first_row((a < 0).any(1))}); a measure is nonnegative")
    tol = sum_tol if sum_tol is not None else (1e-4 if a.dtype in (torch.float32, torch.float16, torch.bfloat16) else 1e-8)
    off = (a.sum(1) - 1).abs() > tol
    if off.any():
        row = _first_row(off)
        raise MeasureError(f"{name}: row {row} sums to {float(a[row].sum()):.8g}; a probability measure sums to 1 "
                           f"(within {tol:g})")


def check_positive(a: torch.Tensor, name: str) -> None:
    """Log-domain iterates and the dual objective need every entry positive (Sinkhorn itself accepts zeros)."""
    if (a <= 0).any():
        raise MeasureError(f"{name}: has zero entries (row {_first_row((a <= 0).any(1))}); this family needs every "
                           "entry > 0 (mix in a little uniform mass)")


def check_cost(cost: torch.Tensor, a_shape: torch.Size, b_shape: torch.Size) -> None:
    n, m = a_shape[1], b_shape[1]
    if a_shape[0] != b_shape[0]:
        raise MeasureError(f"a and b: {a_shape[0]} and {b_shape[0]} measures; give one b per a")
    if cost.shape[-2:] != (n, m) or cost.ndim not in (2, 3) or (cost.ndim == 3 and cost.shape[0] != a_shape[0]):
        raise MeasureError(f"cost: must be ({n}, {m}) or ({a_shape[0]}, {n}, {m}) for a of size {n} and b of size {m}; "
                           f"got {tuple(cost.shape)}")
    if not torch.isfinite(cost).all():
        raise MeasureError("cost: contains NaN or inf")


def _first_row(flags: torch.Tensor) -> int:
    return int(flags.nonzero()[0, 0])


def mix_uniform(measures: torch.Tensor, weight: float) -> torch.Tensor:
    """(1 - w) * measure / its mass + w * uniform: every entry positive, mass 1."""
    p = measures / measures.sum(-1, keepdim=True)
    return (1 - weight) * p + weight / p.shape[-1]


@lru_cache(maxsize=4)
def digit_images(grid: int) -> torch.Tensor:
    """scikit-learn's 1797 digits resampled to grid x grid, nonnegative, (1797, grid * grid) float64."""
    from sklearn.datasets import load_digits  # bundled with scikit-learn: no download

    images = torch.as_tensor(load_digits().images, dtype=torch.float64).unsqueeze(1)  # (N, 1, 8, 8), values 0..16
    if grid != 8:
        images = torch.nn.functional.interpolate(images, size=(grid, grid), mode="bilinear", align_corners=True)
    return images.clamp(min=0).reshape(images.shape[0], grid * grid)


def digit_split(count: int, heldout_fraction: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Image indices of the training and held-out parts: the last ``heldout_fraction`` of the set is held out."""
    cut = count - max(1, round(heldout_fraction * count))
    if cut < 1:
        raise MeasureError(f"heldout_fraction={heldout_fraction}: holds out all {count} images and leaves none for "
                           "training; allowed: a fraction that leaves at least one image on each side")
    return torch.arange(cut), torch.arange(cut, count)


def gaussian_mixtures(n: int, grid: int, components: int, width: tuple[float, float], generator: torch.Generator,
                      device: torch.device | str = "cpu") -> torch.Tensor:
    """``n`` mixtures of ``components`` isotropic Gaussians on the grid, (n, grid * grid), unnormalized, float64."""
    centres = 0.1 + 0.8 * torch.rand(n, components, 2, generator=generator, device=device, dtype=torch.float64)
    low, high = width
    sigma = low + (high - low) * torch.rand(n, components, 1, generator=generator, device=device, dtype=torch.float64)
    weights = 0.2 + torch.rand(n, components, generator=generator, device=device, dtype=torch.float64)
    points = grid_points(grid).to(device)
    d2 = (points.view(1, 1, -1, 2) - centres.unsqueeze(2)).pow(2).sum(-1)  # (n, K, N)
    return (weights.unsqueeze(2) * torch.exp(-0.5 * d2 / sigma.pow(2))).sum(1)
