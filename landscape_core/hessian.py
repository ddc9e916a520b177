"""The Hessian of the full-split loss: extremal eigenvalues, trace, density, slice curvature.

Entry points (all at ``problem.theta0``, on the exact full-split mean loss):

* ``top_eigenvalues(problem, k, which)`` -> ``Spectrum``: thick-restart Lanczos with full
  reorthogonalization (``lanczos.eigsh``), largest and/or most negative eigenvalues, with
  the residual ``||H v - lambda v||`` of every pair and an explicit ``converged`` flag;
* ``trace(problem, budget)`` -> ``TraceEstimate`` (Hutch++, ``trace.py``);
* ``density(problem, iters, runs, sigma)`` -> ``Density`` (stochastic Lanczos quadrature, ``density.py``);
* ``slice_curvature(problem, directions)`` -> ``SliceCurvature``: the curvature
  ``d^T H d / ||d||^2`` along the axes of a slice next to ``lambda_max``, ``lambda_min`` and
  ``trace / P`` (Boettcher & Wheeler 2022: random slices see about ``trace / P``, so they
  flatten sharp directions and make saddles look like minima).

Every function takes ``mask`` (bool ``(P,)`` from ``problem.space.mask(...)``: the Hessian
block of those parameters), ``dtype`` (``"float64"`` runs a float64 copy of model and data)
and ``hvp_method`` (``"auto"``, ``"forward"``, ``"double-backward"``); see ``hvp.py``.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from .density import Density, density
from .hvp import HessianOperator, cached, choice, curvature_settings
from .lanczos import Which, eigsh
from .results import ResultIO, csv_table
from .trace import TraceEstimate, trace

__all__ = [
    "Density",
    "SliceCurvature",
    "Spectrum",
    "TraceEstimate",
    "curvature_settings",
    "density",
    "slice_curvature",
    "top_eigenvalues",
    "trace",
]


@dataclasses.dataclass(frozen=True)
class Spectrum(ResultIO):
    """Extremal Hessian eigenpairs.

    ``values``: float64 ``(m,)`` eigenvalues, sorted descending (``which="both"``: the ``k``
    largest then the ``k`` smallest, ``m = 2k``). ``vectors``: float64 tensor ``(m, P)``,
    unit-norm eigenvectors in the full parameter space (zero outside the mask), sign fixed
    so the largest-magnitude entry is positive. ``residuals``: ``||H v - lambda v||`` per pair
    (absolute, loss units). ``converged``: bool ``(m,)``, ``residual <= tol * scale`` with
    ``scale`` the largest ``|Ritz value|`` (in ``settings``). ``ends``: ``"largest"`` or
    ``"smallest"`` per pair. ``hvp_count``: Hessian-vector products used.
    """

    values: np.ndarray
    vectors: torch.Tensor
    residuals: np.ndarray
    converged: np.ndarray
    ends: np.ndarray
    hvp_count: int
    settings: dict

    @property
    def all_converged(self) -> bool:
        return bool(np.all(self.converged))

    @property
    def lambda_max(self) -> float:
        """Largest eigenvalue found (NaN if only the smallest were asked for)."""
        top = self.values[self.ends == "largest"]
        return float(top.max()) if top.size else float("nan")

    @property
    def lambda_min(self) -> float:
        """Smallest eigenvalue found (NaN if only the largest were asked for)."""
        bottom = self.values[self.ends == "smallest"]
        return float(bottom.min()) if bottom.size else float("nan")

    def to_csv(self) -> str:
        """``index,end,eigenvalue,residual,converged`` per pair."""
        rows = enumerate(zip(self.ends, self.values, self.residuals, self.converged))
        return csv_table(
            ["index", "end", "eigenvalue", "residual", "converged"],
            ((i, e, float(v), float(r), bool(c)) for i, (e, v, r, c) in rows),
        )


def top_eigenvalues(
    problem,
    k: int = 5,
    which: Which | str = "largest",
    tol: float = 1e-6,
    max_iter: int | None = None,
    mask: torch.Tensor | None = None,
    seed: int = 0,
    dtype=None,
    hvp_method: str = "auto",
    basis_size: int | None = None,
    use_cache: bool = True,
    progress=None,
    cancel=None,
) -> Spectrum:
    """The ``k`` largest and/or smallest eigenvalues of the Hessian at ``problem.theta0``.

    ``which``: ``"largest"``, ``"smallest"`` (most negative first to matter: a saddle) or
    ``"both"`` (``k`` of each, ``2k <= n``). ``tol``: relative residual target (see
    ``Spectrum.converged``); pairs that miss it after ``max_iter`` products (default
    ``max(300, 40 k)``) are returned with ``converged=False``, never dropped. ``k`` larger
    than the dimension (``P`` or ``mask.sum()``) is a ``ValueError``. ``progress(done, total)``
    is called after each product (``total`` is the ``max_iter`` bound; Lanczos usually stops far
    earlier) and ``cancel`` (``threading.Event``) is checked before each (raises ``Cancelled``).

    >>> spec = top_eigenvalues(problem, k=3, which="both")   # doctest: +SKIP
    >>> spec.values, spec.residuals, spec.converged          # doctest: +SKIP
    """
    which = choice(Which, which, "which")
    if not isinstance(k, int) or isinstance(k, bool) or k < 1:
        raise ValueError(f"k must be a positive integer; got {k!r}.")
    n = problem.space.size if mask is None else int(torch.as_tensor(mask).sum())
    total = 2 * k if which is Which.BOTH else k
    if total > n:
        need = f"2k = {total}" if which is Which.BOTH else f"k = {k}"
        raise ValueError(f"{need} eigenvalues asked for but the Hessian has dimension {n}; need {need} <= {n}.")
    settings = {
        "kind": "spectrum",
        "algorithm": "thick-restart Lanczos, full reorthogonalization",
        "k": k,
        "which": which.value,
        "tol": float(tol),
        "max_iter": max_iter,
        "seed": int(seed),
        "basis_size": basis_size,
        **curvature_settings(problem, mask, dtype, hvp_method),
    }

    def compute() -> Spectrum:
        budget = max(300, 40 * k) if max_iter is None else max_iter
        op = HessianOperator(problem, mask, dtype, hvp_method, progress=progress, cancel=cancel, expected=budget)
        out = eigsh(op.matvec, op.size, k, which, tol=tol, max_iter=max_iter, seed=seed, basis_size=basis_size)
        vectors = op.embed(out.vectors)
        info = {"restarts": out.restarts, "scale": out.scale, "hvp_method_used": op.method}
        return Spectrum(
            values=out.values.numpy(),
            vectors=vectors,
            residuals=out.residuals.numpy(),
            converged=out.converged.numpy(),
            ends=np.array(out.ends),
            hvp_count=op.hvp_count,
            settings={**settings, **info},
        )

    return cached("spectrum", Spectrum, settings, use_cache, compute, progress)


@dataclasses.dataclass(frozen=True)
class SliceCurvature(ResultIO):
    """Curvature along the axes of a slice next to the Hessian's extremes and its mean.

    ``curvatures``: float64 ``(d,)``, ``u^T H u`` for each unit axis ``u = d / ||d||``.
    ``lambda_max``, ``lambda_min``: extreme eigenvalues; ``trace_per_param``: ``trace / n``, the
    curvature a random direction sees on average, with ``trace_stderr`` its standard error
    (divided by ``n`` too). ``ratios``: ``curvatures / lambda_max``. A random slice has
    ``curvatures ~ trace_per_param`` and looks far flatter than ``lambda_max`` (and hides a
    negative ``lambda_min``); eigenvector slices show the extremes.
    """

    curvatures: np.ndarray
    lambda_max: float
    lambda_min: float
    trace_per_param: float
    trace_stderr: float
    hvp_count: int
    settings: dict

    def __post_init__(self):  # NaN floats come back from JSON as strings
        for name in ("lambda_max", "lambda_min", "trace_per_param", "trace_stderr"):
            object.__setattr__(self, name, float(getattr(self, name)))

    @property
    def ratios(self) -> np.ndarray:
        return self.curvatures / self.lambda_max

    def to_csv(self) -> str:
        """``quantity,value`` rows: each axis's curvature, then the reference values."""
        rows = [(f"axis_{i}_curvature", float(c)) for i, c in enumerate(self.curvatures)]
        rows += [
            (name, float(getattr(self, name)))
            for name in ("lambda_max", "lambda_min", "trace_per_param", "trace_stderr")
        ]
        return csv_table(["quantity", "value"], rows)


def slice_curvature(
    problem,
    directions: torch.Tensor,
    spectrum: Spectrum | None = None,
    trace_estimate: TraceEstimate | None = None,
    mask: torch.Tensor | None = None,
    trace_budget: int = 150,
    seed: int = 0,
    dtype=None,
    hvp_method: str = "auto",
    progress=None,
    cancel=None,
) -> SliceCurvature:
    """Curvature ``d^T H d / ||d||^2`` along each row of ``directions`` ``(d, P)`` (or one ``(P,)``).

    ``spectrum`` (with ``which="both"`` or ``"largest"``) and ``trace_estimate`` are computed
    if not given (``k=1, which="both"``; Hutch++ with ``trace_budget`` products), on ``mask``
    (then the directions must be zero outside it, so ``d^T H d`` is a quadratic form of the block).
    ``progress(done, total)`` counts the directions; ``cancel`` is checked before every product.
    """
    rows = directions if directions.dim() == 2 else directions[None]
    problem.space.check(rows, "directions", batched=True)
    norms = rows.double().norm(dim=1)
    if bool((norms == 0).any()):
        raise ValueError("directions contains a zero vector; its curvature is undefined.")
    if mask is not None and bool((rows[:, ~mask.to(rows.device, torch.bool)] != 0).any()):
        raise ValueError("directions have entries outside mask; with a mask, give directions that are zero outside it.")
    if spectrum is None:
        spectrum = top_eigenvalues(
            problem, 1, "both", mask=mask, seed=seed, dtype=dtype, hvp_method=hvp_method, cancel=cancel
        )
    if trace_estimate is None:
        trace_estimate = trace(
            problem, trace_budget, seed, mask=mask, dtype=dtype, hvp_method=hvp_method, cancel=cancel
        )
    op = HessianOperator(problem, dtype=dtype, method=hvp_method, progress=progress, cancel=cancel, expected=len(rows))
    curvatures = []
    for row, norm in zip(rows, norms):
        u = row.to("cpu", torch.float64) / norm
        curvatures.append(float(u @ op.matvec(u)))
    from .provenance import digest, provenance

    n = trace_estimate.settings.get("dimension", problem.space.size)
    settings = {
        "kind": "slice_curvature",
        "directions": [provenance(r) for r in rows],
        "direction_sha256": [digest(r) for r in rows],
        **curvature_settings(problem, mask, dtype, hvp_method),
    }
    return SliceCurvature(
        curvatures=np.array(curvatures),
        lambda_max=spectrum.lambda_max,
        lambda_min=spectrum.lambda_min,
        trace_per_param=trace_estimate.estimate / n,
        trace_stderr=trace_estimate.stderr / n,
        hvp_count=op.hvp_count,
        settings=settings,
    )
