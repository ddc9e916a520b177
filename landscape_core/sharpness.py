"""Sharpness of a solution: how much the loss rises under bounded or random perturbations.

* ``epsilon``: Keskar et al. 2017, ``phi = 100 (max_{z in C} L(theta + A z) - L(theta)) / (1 + L(theta))``
  over the box ``|z_i| <= eps (|(A^+ theta)_i| + 1)``; maximized with L-BFGS-B (scipy) from
  ``starts`` random points of the box (the gradient is about zero at a minimum).
* ``worst_case`` / ``adaptive``: ``max L(theta + delta) - L(theta)`` over ``||delta / t||_p <= rho``,
  ``t = 1`` (plain) or adaptive (scale-invariant), by normalized steepest ascent onto the sphere
  from ``starts`` random points. For a quadratic at its minimum and ``p = 2`` the value is
  ``0.5 rho^2 lambda_max(T H T)``, ``T = diag(t)``. Two conventions for the adaptive ``t``
  (``Convention``): ``"elementwise"``, ``t = |theta| + eta`` on every parameter (Andriushchenko et
  al. 2023, eta = 0 by default), and ``"asam"``, Kwon et al. 2021's ``T_w``: ``|w| + eta`` on weight
  tensors (names containing "weight", normalization scales included), 1 on biases, eta = 0.01.

A maximum over a ball or a box is found by local ascent, so ``epsilon`` and ``worst_case`` are
lower bounds of the true maximum (the best of ``starts`` local maxima; for ``p = inf`` and the
box the ascent stops at a vertex that is only locally best). ``settings["estimate"]`` says so.
* ``average``: ``E_z[L(theta + sigma t * z)] - L(theta)``, ``z ~ N(0, I)``, a Monte Carlo mean with
  its standard error; for a quadratic ``0.5 sigma^2 tr(T H T)``.
* ``adaptive_curvature``: the top eigenvalues of ``T H T``, the curvature that adaptive sharpness
  measures to second order (invariant to rescaling layers: 2 at every minimum of ``0.5 (ab - 1)^2``).

Every function takes ``progress(done, total)`` (loss evaluations or samples) and ``cancel`` (a
``threading.Event``, checked between evaluations; raises ``landscape_core.Cancelled``). Results
are kept in the disk cache (``use_cache=False``: neither read nor written), keyed by the problem,
the mask, the precision and every argument, the seed included.
Losses reported (``base_loss``, ``perturbed_loss``) come from the evaluator (``problem.evaluate``),
exact full-split means; ascent steps use gradients of the same loss (``hvp.LossFunction``).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from .evaluate import Cancelled
from .hessian import Spectrum, curvature_settings
from .hvp import HessianOperator, cached, check_curvature_mode
from .lanczos import eigsh
from .perturbation import (
    DEFAULT_ETA,
    Convention,
    DivergedPerturbation,
    Objective,
    check_eta,
    check_iters,
    check_positive,
    check_starts,
    convention_of,
    diverged,
    lower_bound,
    scale,
    scale_definition,
    selected,
    train_loss,
)
from .results import ResultIO, csv_table

__all__ = [
    "Convention",
    "DivergedPerturbation",
    "Sharpness",
    "adaptive",
    "adaptive_curvature",
    "average",
    "epsilon",
    "worst_case",
]


@dataclasses.dataclass(frozen=True)
class Sharpness(ResultIO):
    """One sharpness measurement.

    ``kind``: ``"epsilon"``, ``"worst-case"``, ``"adaptive"`` or ``"average"``.
    ``value``: the sharpness (``epsilon``: Keskar's phi, a percentage of ``1 + L``; otherwise the
    loss increase, loss units; for ``epsilon`` and the worst case a lower bound of the true maximum,
    the best of ``settings["starts"]`` local ascents). ``base_loss``: ``L(theta0)``. ``perturbed_loss``:
    the maximizing loss found (worst case) or the mean perturbed loss (average). ``stderr``: standard error of ``value`` (average only, else ``None``).
    ``perturbation``: the maximizing ``delta`` ``(P,)`` (worst case) or ``None``. ``samples``:
    float64 ``(samples,)`` loss increases (average) or ``None``.
    """

    kind: str
    value: float
    base_loss: float
    perturbed_loss: float
    settings: dict
    stderr: float | None = None
    perturbation: torch.Tensor | None = None
    samples: np.ndarray | None = None

    def __post_init__(self):  # NaN floats (a diverged loss) come back from JSON as strings
        for name in ("value", "base_loss", "perturbed_loss"):
            object.__setattr__(self, name, float(getattr(self, name)))
        if self.stderr is not None:
            object.__setattr__(self, "stderr", float(self.stderr))

    def to_csv(self) -> str:
        """``kind,quantity,value`` rows (value, losses, stderr, then average samples if any)."""
        rows = [("value", self.value), ("base_loss", self.base_loss), ("perturbed_loss", self.perturbed_loss)]
        if self.stderr is not None:
            rows.append(("stderr", self.stderr))
        if self.samples is not None:
            rows += [(f"sample_{i}", float(s)) for i, s in enumerate(self.samples)]
        return csv_table(["kind", "quantity", "value"], ((self.kind, *row) for row in rows))


def epsilon(
    problem,
    eps: float = 1e-3,
    subspace_dim: int | None = None,
    iters: int = 100,
    seed: int = 0,
    mask: torch.Tensor | None = None,
    dtype=None,
    progress=None,
    cancel=None,
    starts: int = 1,
    use_cache: bool = True,
) -> Sharpness:
    """Keskar et al. 2017 epsilon-sharpness (see module docstring), maximized by L-BFGS-B.

    ``subspace_dim=None``: ``A = I`` (on the mask's coordinates); else ``A`` is a random
    ``(n, subspace_dim)`` Gaussian matrix with unit columns (seeded). ``iters``: L-BFGS-B iterations
    per start. ``starts``: random starting points of the box; the best local maximum is reported
    (a lower bound of the true maximum; start 1 is the same for every ``starts``, so more starts
    never give less). Raises ``DivergedPerturbation`` (a ``ValueError``) if the loss is not finite
    somewhere the ascent goes.
    """
    eps = check_positive("eps", eps)
    check_iters(iters)
    starts = check_starts(starts)
    check_curvature_mode(problem)
    key = {"eps": eps, "subspace_dim": subspace_dim, "iters": iters, "seed": int(seed), "starts": starts}
    key |= curvature_settings(problem, mask, dtype, "double-backward")

    def compute() -> Sharpness:
        return _epsilon(problem, eps, subspace_dim, iters, seed, mask, dtype, progress, cancel, starts)

    return cached("sharpness-epsilon", Sharpness, key, use_cache, compute, progress)


def _epsilon(problem, eps, subspace_dim, iters, seed, mask, dtype, progress, cancel, starts) -> Sharpness:
    from scipy.optimize import minimize

    index = selected(problem, mask)
    n = index.numel()
    gen = torch.Generator().manual_seed(int(seed))
    theta = problem.theta0.detach().to("cpu", torch.float64)[index]
    if subspace_dim is None:
        A, coords = None, theta
    else:
        if not isinstance(subspace_dim, int) or not 1 <= subspace_dim <= n:
            raise ValueError(f"subspace_dim must be None or an integer in [1, {n}]; got {subspace_dim!r}.")
        A = torch.randn(n, subspace_dim, generator=gen, dtype=torch.float64)
        A /= A.norm(dim=0, keepdim=True)
        coords = torch.linalg.lstsq(A, theta[:, None]).solution[:, 0]  # A^+ theta
    bound = (eps * (coords.abs() + 1)).numpy()
    objective = Objective(problem, index, dtype, progress, cancel, expected=starts * (iters + 1), radius=f"eps={eps:g}")

    def negative(z: np.ndarray) -> tuple[float, np.ndarray]:
        zt = torch.from_numpy(z)
        value, grad = objective.value_and_grad(zt if A is None else A @ zt)
        grad = grad if A is None else A.T @ grad
        return -value, -grad.numpy()

    best, found = None, []
    for _ in range(starts):
        z0 = (torch.rand(bound.size, generator=gen, dtype=torch.float64).numpy() * 2 - 1) * bound
        out = minimize(
            negative, z0, jac=True, method="L-BFGS-B", bounds=list(zip(-bound, bound)), options={"maxiter": iters}
        )
        z = np.clip(out.x, -bound, bound)
        value = -negative(z)[0]
        found.append(value)
        if best is None or value > best[0]:
            best = (value, z, out)
    _, z, out = best
    z = torch.from_numpy(z)
    delta = z if A is None else A @ z
    base = train_loss(problem, problem.theta0)
    top = max(train_loss(problem, objective.theta(delta)), base)
    if not np.isfinite(top):
        raise diverged(f"eps={eps:g}", "the loss is not finite at the maximizing point")
    settings = {
        "kind": "epsilon",
        "definition": "Keskar et al. 2017: 100 (max_{|z_i| <= eps(|(A+ theta)_i| + 1)} L(theta + A z) - L) / (1 + L)",
        "eps": eps,
        "subspace_dim": subspace_dim,
        "iters": iters,
        "seed": int(seed),
        "starts": starts,
        "estimate": lower_bound(starts),
        "start_losses": found,
        "optimizer": "scipy L-BFGS-B from uniform random points of the box; the best start kept",
        "optimizer_message": str(out.message),
        "loss_evaluations": objective.evaluations,
        **curvature_settings(problem, mask, dtype, "double-backward"),
    }
    full = torch.zeros(problem.space.size, dtype=torch.float64)
    full[index] = delta
    return Sharpness("epsilon", 100 * (top - base) / (1 + base), base, top, settings, perturbation=full)


def _dual_direction(g: torch.Tensor, p: float) -> torch.Tensor:
    """Unit ``p``-norm vector maximizing ``<g, u>`` (the steepest-ascent step for the ``p``-ball)."""
    if p == np.inf:
        return torch.sign(g)
    if p == 1:
        u = torch.zeros_like(g)
        i = int(g.abs().argmax())
        u[i] = torch.sign(g[i])
        return u
    q = p / (p - 1)
    u = torch.sign(g) * g.abs() ** (q - 1)
    return u / u.norm(p=p).clamp_min(1e-300)


def worst_case(
    problem,
    rho: float,
    p: float = 2,
    adaptive: bool = False,
    eta: float | None = None,
    iters: int = 20,
    seed: int = 0,
    mask: torch.Tensor | None = None,
    dtype=None,
    progress=None,
    cancel=None,
    starts: int = 1,
    convention: Convention | str = "elementwise",
    use_cache: bool = True,
) -> Sharpness:
    """``max_{||delta / t||_p <= rho} L(theta0 + delta) - L(theta0)`` by normalized steepest ascent.

    From ``starts`` random points of the sphere ``||u||_p = rho`` (``delta = t * u``), each step moves to
    ``rho`` times the unit ``p``-norm steepest-ascent direction of the gradient in ``u``; the best
    loss seen over all starts is kept (a lower bound on the maximum; at a quadratic minimum with
    ``p = 2`` the iteration is a power method and converges to ``0.5 rho^2 lambda_max``; with
    ``p = inf`` it stops at a vertex of the box that is only locally best, so use several starts).
    ``p`` in ``[1, inf]``. ``adaptive``: ``t`` by ``convention`` (``"elementwise"`` or ``"asam"``,
    see ``Convention``); ``eta`` defaults to the convention's (0 and 0.01). Start 1 is the same for
    every ``starts``, so more starts never give less.
    """
    rho = check_positive("rho", rho)
    if not (p == np.inf or (isinstance(p, (int, float)) and p >= 1)):
        raise ValueError(f"p must be a number >= 1 or numpy.inf; got {p!r}.")
    check_iters(iters)
    starts = check_starts(starts)
    convention = convention_of(convention)
    eta = DEFAULT_ETA[convention] if eta is None else eta
    check_eta(eta)
    check_curvature_mode(problem)
    key = {"rho": rho, "p": "inf" if p == np.inf else float(p), "adaptive": bool(adaptive), "eta": float(eta)}
    key |= {"iters": iters, "seed": int(seed), "starts": starts, "convention": convention.value}
    key |= curvature_settings(problem, mask, dtype, "double-backward")

    def compute() -> Sharpness:
        return _worst_case(
            problem, rho, p, adaptive, eta, iters, seed, mask, dtype, progress, cancel, starts, convention
        )

    return cached("sharpness-worst-case", Sharpness, key, use_cache, compute, progress)


def _worst_case(problem, rho, p, adaptive, eta, iters, seed, mask, dtype, progress, cancel, starts, convention):
    index = selected(problem, mask)
    t = scale(problem, index, adaptive, eta, convention)
    gen = torch.Generator().manual_seed(int(seed))
    radius = f"rho={rho:g}"
    objective = Objective(problem, index, dtype, progress, cancel, expected=starts * (iters + 1), radius=radius)
    best_value, best_u = -np.inf, None
    history, found = [], []
    for _ in range(starts):
        u = torch.randn(index.numel(), generator=gen, dtype=torch.float64)
        u = rho * u / u.norm(p=p)
        start_best = -np.inf
        for _ in range(iters + 1):
            value, grad = objective.value_and_grad(t * u)
            history.append(value)
            start_best = max(start_best, value)
            if value > best_value:
                best_value, best_u = value, u
            g = t * grad
            if not bool((g != 0).any()):
                break
            u = rho * _dual_direction(g, p)
        found.append(start_best)
    kind = "adaptive" if adaptive else "worst-case"
    base = train_loss(problem, problem.theta0)
    delta = torch.zeros(problem.space.size, dtype=torch.float64)
    delta[index] = t * best_u
    top = train_loss(problem, problem.theta0.detach().to("cpu", torch.float64) + delta)
    if not np.isfinite(top):
        raise diverged(radius, "the loss is not finite at the maximizing point")
    settings = {
        "kind": kind,
        "definition": "max_{||delta / t||_p <= rho} L(theta + delta) - L(theta), "
        + scale_definition(adaptive, convention),
        "rho": rho,
        "p": "inf" if p == np.inf else float(p),
        "eta": float(eta),
        "convention": convention.value if adaptive else None,
        "iters": iters,
        "seed": int(seed),
        "starts": starts,
        "estimate": lower_bound(starts),
        "start_losses": found,
        "optimizer": "normalized steepest ascent onto the p-sphere from random points; best iterate kept",
        "ascent_losses": history,
        **curvature_settings(problem, mask, dtype, "double-backward"),
    }
    return Sharpness(kind, top - base, base, top, settings, perturbation=delta)


def adaptive(
    problem,
    rho: float,
    p: float = 2,
    eta: float | None = None,
    iters: int = 20,
    seed: int = 0,
    convention: Convention | str = "elementwise",
    **kwargs,
) -> Sharpness:
    """Adaptive (scale-invariant) worst-case sharpness: ``worst_case`` with ``t`` by ``convention``.

    ``"elementwise"``: ``t = |theta| + eta`` on every parameter (eta 0 by default); ``"asam"``: Kwon et
    al. 2021's ``T_w``, ``|w| + eta`` on weight tensors and 1 on biases (eta 0.01 by default).
    """
    return worst_case(
        problem, rho, p=p, adaptive=True, eta=eta, iters=iters, seed=seed, convention=convention, **kwargs
    )


def average(
    problem,
    sigma: float,
    samples: int = 100,
    adaptive: bool = False,
    eta: float | None = None,
    seed: int = 0,
    mask: torch.Tensor | None = None,
    chunk: int = 64,
    progress=None,
    cancel=None,
    convention: Convention | str = "elementwise",
    use_cache: bool = True,
) -> Sharpness:
    """``E[L(theta0 + sigma t * z)] - L(theta0)``, ``z ~ N(0, I)`` on the mask, with its standard error.

    ``t`` by ``convention`` if ``adaptive`` (see ``worst_case``) else 1. Every perturbed loss is an
    exact full-split mean from the evaluator; ``stderr`` is the sample standard deviation over
    ``sqrt(samples)``. Raises ``DivergedPerturbation`` if a perturbed loss is not finite (the noise
    reaches where the model diverges: the mean would be meaningless).
    """
    sigma = check_positive("sigma", sigma)
    if not isinstance(samples, int) or samples < 2:
        raise ValueError(f"samples must be an integer >= 2 (a standard error needs two); got {samples!r}.")
    convention = convention_of(convention)
    eta = DEFAULT_ETA[convention] if eta is None else eta
    check_eta(eta)
    check_curvature_mode(problem)
    key = {"sigma": sigma, "samples": samples, "adaptive": bool(adaptive), "eta": float(eta), "seed": int(seed)}
    key |= {"chunk": chunk, "convention": convention.value}  # the draws come in chunks of this many
    key |= curvature_settings(problem, mask, None, "auto")

    def compute() -> Sharpness:
        return _average(problem, sigma, samples, adaptive, eta, seed, mask, chunk, progress, cancel, convention)

    return cached("sharpness-average", Sharpness, key, use_cache, compute, progress)


def _average(problem, sigma, samples, adaptive, eta, seed, mask, chunk, progress, cancel, convention) -> Sharpness:
    index = selected(problem, mask)
    t = scale(problem, index, adaptive, eta, convention)
    gen = torch.Generator().manual_seed(int(seed))
    theta0 = problem.theta0.detach().to("cpu", torch.float64)
    losses = []
    for start in range(0, samples, chunk):
        if cancel is not None and cancel.is_set():
            raise Cancelled("sharpness computation cancelled")
        count = min(chunk, samples - start)
        z = torch.randn(count, index.numel(), generator=gen, dtype=torch.float64)
        thetas = theta0.repeat(count, 1)
        thetas[:, index] += sigma * t * z
        losses.append(problem.evaluate(thetas.to(problem.device, problem.dtype), splits=["train"])["train_loss"])
        if progress is not None:
            progress(start + count, samples)
    losses = np.concatenate(losses)
    bad = int((~np.isfinite(losses)).sum())
    if bad:
        raise diverged(f"sigma={sigma:g}", f"{bad} of {samples} perturbed losses are not finite")
    base = train_loss(problem, problem.theta0)
    increases = losses - base
    settings = {
        "kind": "average",
        "definition": "E_z[L(theta + sigma t z)] - L(theta), z ~ N(0, I), " + scale_definition(adaptive, convention),
        "sigma": sigma,
        "samples": samples,
        "adaptive": bool(adaptive),
        "eta": float(eta),
        "convention": convention.value if adaptive else None,
        "seed": int(seed),
        "estimate": "Monte Carlo mean with its standard error",
        **curvature_settings(problem, mask, None, "auto"),
    }
    return Sharpness(
        "average",
        float(increases.mean()),
        base,
        float(losses.mean()),
        settings,
        stderr=float(increases.std(ddof=1) / np.sqrt(samples)),
        samples=increases,
    )


def adaptive_curvature(
    problem,
    k: int = 1,
    eta: float | None = None,
    tol: float = 1e-6,
    max_iter: int | None = None,
    seed: int = 0,
    mask: torch.Tensor | None = None,
    dtype=None,
    hvp_method: str = "auto",
    progress=None,
    cancel=None,
    convention: Convention | str = "elementwise",
) -> Spectrum:
    """Top ``k`` eigenvalues of ``T H T``, ``T = diag(t)`` with ``t`` by ``convention``: adaptive sharpness
    to second order.

    Invariant to rescaling a ReLU layer by ``c`` and the next by ``1/c`` (``"elementwise"`` with ``eta = 0``).
    ``vectors`` are in the rescaled coordinates ``u`` (``delta = t * u``), zero outside the mask.
    """
    convention = convention_of(convention)
    eta = DEFAULT_ETA[convention] if eta is None else eta
    check_eta(eta)
    budget = max(300, 40 * k) if max_iter is None else max_iter
    op = HessianOperator(problem, mask, dtype, hvp_method, progress=progress, cancel=cancel, expected=budget)
    t = scale(problem, selected(problem, mask), True, eta, convention)
    out = eigsh(lambda v: t * op.matvec(t * v), op.size, k, "largest", tol=tol, max_iter=max_iter, seed=seed)
    settings = {
        "kind": "adaptive_curvature",
        "definition": "top eigenvalues of T H T, T = diag(t), " + scale_definition(True, convention),
        "k": k,
        "eta": float(eta),
        "convention": convention.value,
        "tol": float(tol),
        "seed": int(seed),
        "restarts": out.restarts,
        "scale": out.scale,
        **curvature_settings(problem, mask, dtype, hvp_method),
    }
    return Spectrum(
        values=out.values.numpy(),
        vectors=op.embed(out.vectors),
        residuals=out.residuals.numpy(),
        converged=out.converged.numpy(),
        ends=np.array(out.ends),
        hvp_count=op.hvp_count,
        settings=settings,
    )
