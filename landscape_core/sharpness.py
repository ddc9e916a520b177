"""Sharpness of a solution: how much the loss rises under bounded or random perturbations.

* ``epsilon``: Keskar et al. 2017, ``phi = 100 (max_{z in C} L(theta + A z) - L(theta)) / (1 + L(theta))``
  over the box ``|z_i| <= eps (|(A^+ theta)_i| + 1)``; maximized with L-BFGS-B (scipy) from a
  random point of the box (the gradient is about zero at a minimum).
* ``worst_case`` / ``adaptive``: ``max L(theta + delta) - L(theta)`` over ``||delta / t||_p <= rho``,
  ``t = 1`` (plain) or ``t = |theta| + eta`` (adaptive, scale-invariant: Kwon et al. 2021,
  Andriushchenko et al. 2023), by normalized steepest ascent onto the sphere. For a quadratic at
  its minimum and ``p = 2`` the value is ``0.5 rho^2 lambda_max(T H T)``, ``T = diag(t)``.
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
from .hvp import HessianOperator, LossFunction, cached, check_curvature_mode
from .lanczos import eigsh
from .results import ResultIO, csv_table


@dataclasses.dataclass(frozen=True)
class Sharpness(ResultIO):
    """One sharpness measurement.

    ``kind``: ``"epsilon"``, ``"worst-case"``, ``"adaptive"`` or ``"average"``.
    ``value``: the sharpness (``epsilon``: Keskar's phi, a percentage of ``1 + L``; otherwise the
    loss increase, loss units). ``base_loss``: ``L(theta0)``. ``perturbed_loss``: the maximizing
    loss (worst case; a lower bound on the true maximum found by the ascent) or the mean perturbed
    loss (average). ``stderr``: standard error of ``value`` (average only, else ``None``).
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


def _check_positive(name: str, value) -> float:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not np.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a positive number; got {value!r}.")
    return float(value)


def _check_iters(iters) -> None:
    if not isinstance(iters, int) or iters < 1:
        raise ValueError(f"iters must be a positive integer; got {iters!r}.")


def _check_eta(eta) -> None:
    if eta < 0:
        raise ValueError(f"eta must be >= 0; got {eta!r}.")


def _scale_definition(adaptive: bool) -> str:
    """How the perturbation scale ``t`` is defined, for ``settings["definition"]``."""
    return "t = |theta| + eta" if adaptive else "t = 1"


def _loss(problem, theta: torch.Tensor) -> float:
    return float(problem.evaluate(theta.to(problem.device, problem.dtype)[None], splits=["train"])["train_loss"][0])


def _index(problem, mask) -> torch.Tensor:
    if mask is None:
        return torch.arange(problem.space.size)
    problem.space.check(mask, "mask")
    return torch.nonzero(mask.cpu().to(torch.bool)).flatten()


def _scale(problem, index, adaptive: bool, eta: float) -> torch.Tensor:
    """``t`` on the selected coordinates: ``|theta| + eta`` (adaptive) or ones; float64 on the CPU."""
    theta = problem.theta0.detach().to("cpu", torch.float64)[index]
    return theta.abs() + eta if adaptive else torch.ones_like(theta)


class _Objective:
    """``L(theta0 + embed(delta))`` and its gradient on the selected coordinates (float64 numpy/tensors)."""

    def __init__(self, problem, index, dtype, progress=None, cancel=None, expected: int = 1):
        self.progress, self.cancel, self.expected = progress, cancel, expected
        self.function = LossFunction(problem, dtype=dtype, method="double-backward")
        self.theta0 = problem.theta0.detach().to(problem.device, self.function.dtype)
        self.index = index.to(problem.device)
        self.evaluations = 0

    def theta(self, delta: torch.Tensor) -> torch.Tensor:
        theta = self.theta0.clone()
        theta[self.index] += delta.to(theta.device, theta.dtype)
        return theta

    def value_and_grad(self, delta: torch.Tensor) -> tuple[float, torch.Tensor]:
        if self.cancel is not None and self.cancel.is_set():
            raise Cancelled("sharpness computation cancelled")
        theta = self.theta(delta).requires_grad_(True)
        with torch.enable_grad():
            value = self.function.loss(theta)
            if not value.requires_grad:
                raise ValueError("the loss does not depend on the parameters (argmax inside?); no ascent possible.")
            (grad,) = torch.autograd.grad(value, theta)
        self.evaluations += 1
        if self.progress is not None:
            self.progress(self.evaluations, max(self.expected, self.evaluations))
        if not (torch.isfinite(value) and torch.isfinite(grad).all()):
            raise FloatingPointError("the loss or its gradient is not finite inside the perturbation set.")
        return float(value.detach()), grad[self.index].detach().to("cpu", torch.float64)


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
    use_cache: bool = True,
) -> Sharpness:
    """Keskar et al. 2017 epsilon-sharpness (see module docstring), maximized by L-BFGS-B.

    ``subspace_dim=None``: ``A = I`` (on the mask's coordinates); else ``A`` is a random
    ``(n, subspace_dim)`` Gaussian matrix with unit columns (seeded). ``iters``: L-BFGS-B iterations.
    """
    eps = _check_positive("eps", eps)
    _check_iters(iters)
    check_curvature_mode(problem)
    key = {"eps": eps, "subspace_dim": subspace_dim, "iters": iters, "seed": int(seed)}
    key |= curvature_settings(problem, mask, dtype, "double-backward")

    def compute() -> Sharpness:
        return _epsilon(problem, eps, subspace_dim, iters, seed, mask, dtype, progress, cancel)

    return cached("sharpness-epsilon", Sharpness, key, use_cache, compute, progress)


def _epsilon(problem, eps, subspace_dim, iters, seed, mask, dtype, progress, cancel) -> Sharpness:
    from scipy.optimize import minimize

    index = _index(problem, mask)
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
    z0 = (torch.rand(bound.size, generator=gen, dtype=torch.float64).numpy() * 2 - 1) * bound
    objective = _Objective(problem, index, dtype, progress, cancel, expected=iters + 1)

    def negative(z: np.ndarray) -> tuple[float, np.ndarray]:
        zt = torch.from_numpy(z)
        value, grad = objective.value_and_grad(zt if A is None else A @ zt)
        grad = grad if A is None else A.T @ grad
        return -value, -grad.numpy()

    out = minimize(
        negative, z0, jac=True, method="L-BFGS-B", bounds=list(zip(-bound, bound)), options={"maxiter": iters}
    )
    z = torch.from_numpy(np.clip(out.x, -bound, bound))
    delta = z if A is None else A @ z
    base = _loss(problem, problem.theta0)
    top = max(_loss(problem, objective.theta(delta)), base)
    settings = {
        "kind": "epsilon",
        "definition": "Keskar et al. 2017: 100 (max_{|z_i| <= eps(|(A+ theta)_i| + 1)} L(theta + A z) - L) / (1 + L)",
        "eps": eps,
        "subspace_dim": subspace_dim,
        "iters": iters,
        "seed": int(seed),
        "optimizer": "scipy L-BFGS-B from a uniform random point of the box",
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
    eta: float = 0.0,
    iters: int = 20,
    seed: int = 0,
    mask: torch.Tensor | None = None,
    dtype=None,
    progress=None,
    cancel=None,
    use_cache: bool = True,
) -> Sharpness:
    """``max_{||delta / t||_p <= rho} L(theta0 + delta) - L(theta0)`` by normalized steepest ascent.

    From a random point of the sphere ``||u||_p = rho`` (``delta = t * u``), each step moves to
    ``rho`` times the unit ``p``-norm steepest-ascent direction of the gradient in ``u``; the best
    loss seen is kept (a lower bound on the maximum; at a quadratic minimum with ``p = 2`` the
    iteration is a power method and converges to ``0.5 rho^2 lambda_max``). ``p`` in ``[1, inf]``.
    """
    rho = _check_positive("rho", rho)
    if not (p == np.inf or (isinstance(p, (int, float)) and p >= 1)):
        raise ValueError(f"p must be a number >= 1 or numpy.inf; got {p!r}.")
    _check_iters(iters)
    _check_eta(eta)
    check_curvature_mode(problem)
    key = {"rho": rho, "p": "inf" if p == np.inf else float(p), "adaptive": bool(adaptive), "eta": float(eta)}
    key |= {"iters": iters, "seed": int(seed), **curvature_settings(problem, mask, dtype, "double-backward")}

    def compute() -> Sharpness:
        return _worst_case(problem, rho, p, adaptive, eta, iters, seed, mask, dtype, progress, cancel)

    return cached("sharpness-worst-case", Sharpness, key, use_cache, compute, progress)


def _worst_case(problem, rho, p, adaptive, eta, iters, seed, mask, dtype, progress, cancel) -> Sharpness:
    index = _index(problem, mask)
    t = _scale(problem, index, adaptive, eta)
    gen = torch.Generator().manual_seed(int(seed))
    u = torch.randn(index.numel(), generator=gen, dtype=torch.float64)
    u = rho * u / u.norm(p=p)
    objective = _Objective(problem, index, dtype, progress, cancel, expected=iters + 1)
    best_value, best_u = -np.inf, u
    history = []
    for _ in range(iters + 1):
        value, grad = objective.value_and_grad(t * u)
        history.append(value)
        if value > best_value:
            best_value, best_u = value, u
        g = t * grad
        if not bool((g != 0).any()):
            break
        u = rho * _dual_direction(g, p)
    kind = "adaptive" if adaptive else "worst-case"
    base = _loss(problem, problem.theta0)
    delta = torch.zeros(problem.space.size, dtype=torch.float64)
    delta[index] = t * best_u
    top = _loss(problem, problem.theta0.detach().to("cpu", torch.float64) + delta)
    settings = {
        "kind": kind,
        "definition": "max_{||delta / t||_p <= rho} L(theta + delta) - L(theta), " + _scale_definition(adaptive),
        "rho": rho,
        "p": "inf" if p == np.inf else float(p),
        "eta": float(eta),
        "iters": iters,
        "seed": int(seed),
        "optimizer": "normalized steepest ascent onto the p-sphere from a random point; best iterate kept",
        "ascent_losses": history,
        **curvature_settings(problem, mask, dtype, "double-backward"),
    }
    return Sharpness(kind, top - base, base, top, settings, perturbation=delta)


def adaptive(
    problem, rho: float, p: float = 2, eta: float = 0.0, iters: int = 20, seed: int = 0, **kwargs
) -> Sharpness:
    """Adaptive (scale-invariant) worst-case sharpness: ``worst_case`` with ``t = |theta| + eta``."""
    return worst_case(problem, rho, p=p, adaptive=True, eta=eta, iters=iters, seed=seed, **kwargs)


def average(
    problem,
    sigma: float,
    samples: int = 100,
    adaptive: bool = False,
    eta: float = 0.0,
    seed: int = 0,
    mask: torch.Tensor | None = None,
    chunk: int = 64,
    progress=None,
    cancel=None,
    use_cache: bool = True,
) -> Sharpness:
    """``E[L(theta0 + sigma t * z)] - L(theta0)``, ``z ~ N(0, I)`` on the mask, with its standard error.

    ``t = |theta| + eta`` if ``adaptive`` else 1. Every perturbed loss is an exact full-split mean
    from the evaluator; ``stderr`` is the sample standard deviation over ``sqrt(samples)``.
    """
    sigma = _check_positive("sigma", sigma)
    if not isinstance(samples, int) or samples < 2:
        raise ValueError(f"samples must be an integer >= 2 (a standard error needs two); got {samples!r}.")
    check_curvature_mode(problem)
    _check_eta(eta)
    key = {"sigma": sigma, "samples": samples, "adaptive": bool(adaptive), "eta": float(eta), "seed": int(seed)}
    key["chunk"] = chunk  # the draws come in chunks of this many
    key |= curvature_settings(problem, mask, None, "auto")

    def compute() -> Sharpness:
        return _average(problem, sigma, samples, adaptive, eta, seed, mask, chunk, progress, cancel)

    return cached("sharpness-average", Sharpness, key, use_cache, compute, progress)


def _average(problem, sigma, samples, adaptive, eta, seed, mask, chunk, progress, cancel) -> Sharpness:
    index = _index(problem, mask)
    t = _scale(problem, index, adaptive, eta)
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
    base = _loss(problem, problem.theta0)
    increases = losses - base
    settings = {
        "kind": "average",
        "definition": "E_z[L(theta + sigma t z)] - L(theta), z ~ N(0, I), " + _scale_definition(adaptive),
        "sigma": sigma,
        "samples": samples,
        "adaptive": bool(adaptive),
        "eta": float(eta),
        "seed": int(seed),
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
    eta: float = 0.0,
    tol: float = 1e-6,
    max_iter: int | None = None,
    seed: int = 0,
    mask: torch.Tensor | None = None,
    dtype=None,
    hvp_method: str = "auto",
    progress=None,
    cancel=None,
) -> Spectrum:
    """Top ``k`` eigenvalues of ``T H T``, ``T = diag(|theta| + eta)``: adaptive sharpness to second order.

    Invariant to rescaling a ReLU layer by ``c`` and the next by ``1/c`` (with ``eta = 0``).
    ``vectors`` are in the rescaled coordinates ``u`` (``delta = t * u``), zero outside the mask.
    """
    _check_eta(eta)
    budget = max(300, 40 * k) if max_iter is None else max_iter
    op = HessianOperator(problem, mask, dtype, hvp_method, progress=progress, cancel=cancel, expected=budget)
    t = _scale(problem, _index(problem, mask), True, eta)
    out = eigsh(lambda v: t * op.matvec(t * v), op.size, k, "largest", tol=tol, max_iter=max_iter, seed=seed)
    settings = {
        "kind": "adaptive_curvature",
        "definition": "top eigenvalues of diag(|theta| + eta) H diag(|theta| + eta)",
        "k": k,
        "eta": float(eta),
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
