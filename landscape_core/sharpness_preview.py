"""A first number on the Sharpness page fast: the average sharpness on a data subset, labelled.

``preview_average_sharpness(problem, sigma, ...)``: the average sharpness
``E[L(theta0 + sigma t z)] - L(theta0)`` (``sharpness.average``) from a few noise draws on a fixed
random train subset sized from the measured cost (``landscape_core.estimate``) to take about 2 s,
with a standard error that counts both the draws and the subset. Of the page's measures it is
the one whose subset estimate is unbiased and made of loss evaluations only (what ``CostModel``
predicts): the top eigenvalue of a subset's Hessian is biased upwards (a maximum of noisy
curvatures), and the worst-case measures need many gradient steps on all data.

``average_cached(problem, ...)``: whether the exact ``sharpness.average`` of these arguments is
in the cache, told without evaluating anything (a page shows the preview only when it is not).
"""

from __future__ import annotations

import threading

import numpy as np
import torch

from . import inputs as inp
from .estimate import CostModel, measure_cost
from .evaluate import Cancelled
from .hvp import check_curvature_mode
from .perturbation import DEFAULT_ETA, check_eta, check_positive, convention_of, scale, scale_definition, selected
from .preview import MIN_SAMPLES, NOISE_GROUPS, PREVIEW_SAMPLES, PREVIEW_SECONDS
from .sharpness import Sharpness, average

PREVIEW_DRAWS = (32, 16, 8)  # noise draws, tried in this order: the most that fit the time


def preview_average_sharpness(
    problem,
    sigma: float,
    adaptive: bool = False,
    convention: str = "elementwise",
    eta: float | None = None,
    seed: int = 0,
    seconds: float = PREVIEW_SECONDS,
    cost: CostModel | None = None,
    cancel: threading.Event | None = None,
    theta: torch.Tensor | None = None,
    buffers=None,
) -> Sharpness:
    """``E[L(theta0 + sigma t z)] - L(theta0)`` (``sharpness.average``'s definition, train split)
    from ``settings["draws"]`` draws of ``z`` (from ``seed``) on a fixed random train subset sized
    to take about ``seconds`` (``cost`` measured here if not given).

    The subset is cut into ``NOISE_GROUPS`` equal groups and every draw is evaluated on every
    group: ``d[i, g]`` the rise of draw ``i`` on group ``g``. ``value`` is their mean; ``stderr``
    ``sqrt(var_i(mean_g d) / draws + (1 - n / N) var_g(mean_i d) / groups)``, the spread over
    draws plus the spread over data (conservative: the interaction is counted twice).
    ``samples``: the rise of each draw, float64 ``(draws,)``. Settings: ``"preview": true``,
    ``"samples"`` (train samples used), ``"of_samples"``, ``"draws"``, ``"seed"``. ``theta``
    (and ``buffers``): the point to measure at instead of ``problem.theta0`` (e.g. a checkpoint;
    only the subset is evaluated there).
    """
    sigma = check_positive("sigma", sigma)
    convention = convention_of(convention)
    eta = DEFAULT_ETA[convention] if eta is None else eta
    check_eta(eta)
    check_curvature_mode(problem)
    cost = measure_cost(problem, ["train"]) if cost is None else cost
    for draws in PREVIEW_DRAWS:  # one forward per draw and group: the groups add call overhead
        fit = cost.samples_within(seconds, (draws + 1) * NOISE_GROUPS) * NOISE_GROUPS
        if fit >= MIN_SAMPLES:
            break
    samples = int(min(PREVIEW_SAMPLES, max(MIN_SAMPLES, fit)))
    small = problem.subset(samples, seed=seed)
    if theta is not None:
        small = small.at(theta, buffers)
    split = small.splits["train"]
    size = split.n // NOISE_GROUPS
    if size < 1:
        raise ValueError(
            f"a sharpness preview needs at least {NOISE_GROUPS} train samples; this problem has {split.n}."
        )
    index = selected(small, None)
    t = scale(small, index, adaptive, eta, convention)
    gen = torch.Generator().manual_seed(int(seed))
    z = torch.randn(draws, index.numel(), generator=gen, dtype=torch.float64)
    theta0 = small.theta0.detach().to("cpu", torch.float64)
    thetas = theta0.repeat(draws + 1, 1)
    thetas[1:, index] += sigma * t * z
    thetas = thetas.to(small.device, small.dtype)
    X, y = split.head(size * NOISE_GROUPS)
    losses = np.empty((draws + 1, NOISE_GROUPS))
    with torch.no_grad():
        for g in range(NOISE_GROUPS):
            if cancel is not None and cancel.is_set():
                raise Cancelled("sharpness preview cancelled")
            part = slice(g * size, (g + 1) * size)
            Xg = inp.apply(X, lambda v, part=part: v[part])
            for i in range(draws + 1):
                losses[i, g] = float(small.loss_value(small.forward(thetas[i], Xg), y[part]))
    rises = losses[1:] - losses[0]  # (draws, groups)
    if not np.isfinite(rises).all():
        raise ValueError(f"the loss is not finite at some of the {draws} points of the preview (sigma={sigma:g}).")
    used, total = size * NOISE_GROUPS, problem.splits["train"].n
    correction = max(0.0, 1.0 - used / total)
    stderr = float(
        np.sqrt(rises.mean(axis=1).var(ddof=1) / draws + correction * rises.mean(axis=0).var(ddof=1) / NOISE_GROUPS)
    )
    base = float(losses[0].mean())
    settings = {
        "kind": "average",
        "definition": "E_z[L(theta + sigma t * z)] - L(theta), z ~ N(0, I), " + scale_definition(adaptive, convention),
        "sigma": sigma,
        "adaptive": bool(adaptive),
        "eta": float(eta),
        "convention": convention.value if adaptive else None,
        "preview": True,
        "draws": draws,
        "samples": used,
        "of_samples": total,
        "groups": NOISE_GROUPS,
        "seed": int(seed),
        "estimate": "preview: few draws on a train subset; the standard error counts both",
        "problem": small.describe(),
    }
    return Sharpness(
        "average", float(rises.mean()), base, base + float(rises.mean()), settings, stderr, None, rises.mean(axis=1)
    )


def average_cached(
    problem, sigma: float, samples: int, adaptive: bool = False, convention: str = "elementwise", seed: int = 0
) -> bool:
    """Whether ``sharpness.average(problem, sigma, samples, adaptive=..., convention=..., seed=...)`` is
    cached (the look-up is cancelled before its first evaluation). ``True`` also when the arguments
    are refused (``ValueError``): the exact run says why, and a preview would add nothing."""
    stop = threading.Event()
    stop.set()
    try:
        average(problem, sigma, samples, adaptive, seed=seed, convention=convention, cancel=stop)
    except Cancelled:
        return False
    except ValueError:
        return True
    return True
