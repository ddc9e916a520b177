"""Eigenvalue density of the Hessian by stochastic Lanczos quadrature (SLQ).

For a unit start vector ``v``, ``m`` Lanczos steps give a tridiagonal ``T = U diag(nodes) U^T``;
the Gauss quadrature ``sum_i U[0, i]^2 f(nodes_i)`` approximates ``v^T f(H) v``. With Rademacher
``v / sqrt(n)`` this is an unbiased-in-expectation estimate of ``tr f(H) / n``, so averaging
``runs`` such quadratures gives the spectral measure ``(1/n) sum_j delta(x - lambda_j)``
(Lin, Saad & Yang 2016; Ghorbani, Krishnan & Xiao 2019). The extreme nodes converge to the
extreme eigenvalues first, and with ``m = n`` (full reorthogonalization) the nodes are the
eigenvalues themselves.

Smoothing: the plotted density is ``sum_i w_i N(x; node_i, sigma^2)`` (``w_i = U[0, i]^2 / runs``),
a Gaussian kernel of standard deviation ``sigma`` in eigenvalue units; it integrates to 1.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from .hvp import HessianOperator, cached, curvature_settings
from .lanczos import tridiagonal
from .results import ResultIO, csv_table


@dataclasses.dataclass(frozen=True)
class Density(ResultIO):
    """Smoothed eigenvalue density and the raw quadrature behind it.

    ``grid``: float64 ``(g,)`` eigenvalue axis; ``density``: float64 ``(g,)``, integrates to 1.
    ``nodes``: float64 ``(N,)`` Ritz values of every run; ``weights``: float64 ``(N,)``, summing
    to 1 over all runs; ``run``: int ``(N,)`` which run each node came from. ``sigma``: the
    kernel's standard deviation. ``hvp_count``: products used.
    """

    grid: np.ndarray
    density: np.ndarray
    nodes: np.ndarray
    weights: np.ndarray
    run: np.ndarray
    sigma: float
    hvp_count: int
    settings: dict

    @property
    def lambda_max(self) -> float:
        """Largest quadrature node: converges to the largest eigenvalue."""
        return float(self.nodes.max())

    @property
    def lambda_min(self) -> float:
        """Smallest quadrature node: converges to the smallest eigenvalue."""
        return float(self.nodes.min())

    def to_csv(self) -> str:
        """Tidy rows ``kind,x,value``: ``density`` (grid, density) then ``node`` (node, weight)."""
        rows = [("density", float(x), float(d)) for x, d in zip(self.grid, self.density)]
        rows += [("node", float(x), float(w)) for x, w in zip(self.nodes, self.weights)]
        return csv_table(["kind", "x", "value"], rows)


def smooth(nodes: np.ndarray, weights: np.ndarray, sigma: float, grid: np.ndarray) -> np.ndarray:
    """``sum_i weights_i N(grid; nodes_i, sigma^2)``: float64 ``(len(grid),)``."""
    z = (grid[:, None] - nodes[None, :]) / sigma
    return (np.exp(-0.5 * z**2) / (sigma * np.sqrt(2 * np.pi))) @ weights


def density(
    problem,
    iters: int = 100,
    runs: int = 1,
    sigma: float | None = None,
    grid_size: int = 1000,
    seed: int = 0,
    mask: torch.Tensor | None = None,
    dtype=None,
    hvp_method: str = "auto",
    use_cache: bool = True,
    progress=None,
    cancel=None,
) -> Density:
    """Eigenvalue density of the Hessian at ``problem.theta0`` by SLQ (``runs * iters`` products).

    ``iters``: Lanczos steps per run (capped at the dimension ``n``); ``runs``: independent
    Rademacher starts from ``torch.Generator().manual_seed(seed)``. ``sigma``: kernel width in
    eigenvalue units, default 1% of the node range (``max - min``). ``grid_size`` points span
    ``[min node - 5 sigma, max node + 5 sigma]``. ``progress(done, total)`` after each product,
    ``cancel`` checked before each (raises ``Cancelled``).

    >>> dens = density(problem, iters=100, runs=1)    # doctest: +SKIP
    >>> dens.lambda_max, dens.grid.shape              # doctest: +SKIP
    """
    for name, value, low in (("iters", iters, 1), ("runs", runs, 1), ("grid_size", grid_size, 2)):
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            raise ValueError(f"{name} must be an integer >= {low}; got {value!r}.")
    if sigma is not None and not (np.isfinite(sigma) and sigma > 0):
        raise ValueError(f"sigma must be a positive number (eigenvalue units) or None; got {sigma!r}.")
    n = problem.space.size if mask is None else int(torch.as_tensor(mask).sum())
    settings = {
        "kind": "density",
        "algorithm": "stochastic Lanczos quadrature, full reorthogonalization, Rademacher starts",
        "iters": min(iters, n),
        "runs": runs,
        "sigma": sigma,
        "grid_size": grid_size,
        "seed": int(seed),
        "dimension": n,
        **curvature_settings(problem, mask, dtype, hvp_method),
    }

    def compute() -> Density:
        expected = runs * min(iters, n)
        op = HessianOperator(problem, mask, dtype, hvp_method, progress=progress, cancel=cancel, expected=expected)
        gen = torch.Generator().manual_seed(int(seed))
        nodes, weights, run_ids = [], [], []
        for r in range(runs):
            start = torch.randint(0, 2, (n,), generator=gen).to(torch.float64) * 2 - 1
            T, _ = tridiagonal(op.matvec, start, iters)
            theta, U = torch.linalg.eigh(T)
            nodes.append(theta.numpy())
            weights.append(U[0].numpy() ** 2 / runs)
            run_ids.append(np.full(theta.numel(), r))
        nodes, weights, run_ids = np.concatenate(nodes), np.concatenate(weights), np.concatenate(run_ids)
        spread = float(nodes.max() - nodes.min())
        width = sigma if sigma is not None else 0.01 * (spread if spread > 0 else max(abs(float(nodes.max())), 1.0))
        grid = np.linspace(nodes.min() - 5 * width, nodes.max() + 5 * width, grid_size)
        return Density(
            grid=grid,
            density=smooth(nodes, weights, width, grid),
            nodes=nodes,
            weights=weights,
            run=run_ids,
            sigma=float(width),
            hvp_count=op.hvp_count,
            settings={**settings, "sigma_used": float(width), "hvp_method_used": op.method},
        )

    return cached("density", Density, settings, use_cache, compute, progress)
