"""The curvature report in parts: eigenvalues, trace, density and sharpness, each computed on its own.

The Sharpness & Hessian page shows each part as soon as it is done (a part is one background
job), and ``landscape demo`` computes the same parts with the defaults, so both land on the same
cache entries. Every part is cached by its engine (``hessian``, ``sharpness``).

``settings`` is a flat dict (the page's form): ``k, which, tol, max_iter`` (eigenvalues),
``budget`` (trace), ``iters, runs, sigma`` (density), ``eps, rho, p, convention, starts, avg_sigma,
samples, avg_adaptive`` (sharpness) and ``seed``; ``default_settings()`` gives the defaults.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from . import hessian, sharpness
from .defaults import HESSIAN, SHARPNESS

PARTS = ("eigenvalues", "trace", "density", "sharpness")
EPSILON_ITERS = 100  # L-BFGS-B iterations of epsilon-sharpness (its default)
ADAPTIVE_ITERS = 20  # ascent steps of adaptive sharpness (its default)


def default_settings() -> dict:
    """The page's form with every default (``defaults.HESSIAN`` and ``defaults.SHARPNESS``)."""
    return {
        "k": HESSIAN.k,
        "which": HESSIAN.which,
        "tol": HESSIAN.tol,
        "max_iter": HESSIAN.max_iter,
        "budget": HESSIAN.trace_budget,
        "iters": HESSIAN.density_iters,
        "runs": HESSIAN.density_runs,
        "sigma": HESSIAN.density_sigma,
        "eps": SHARPNESS.eps,
        "rho": SHARPNESS.rho,
        "p": "inf" if SHARPNESS.p == np.inf else str(int(SHARPNESS.p)),
        "convention": "elementwise",
        "starts": 1,
        "avg_sigma": SHARPNESS.sigma,
        "samples": SHARPNESS.samples,
        "avg_adaptive": SHARPNESS.adaptive_noise,
        "seed": HESSIAN.seed,
    }


def budget(part: str, settings: dict) -> int:
    """Upper bound on the Hessian-vector products or loss evaluations ``part`` takes."""
    if part == "eigenvalues":
        return int(settings["max_iter"])
    if part == "trace":
        return int(settings["budget"])
    if part == "density":
        return int(settings["iters"]) * int(settings["runs"])
    if part == "sharpness":
        starts = int(settings.get("starts", 1))
        return starts * (EPSILON_ITERS + 1 + ADAPTIVE_ITERS + 1) + int(settings["samples"])
    raise ValueError(f"part must be one of {list(PARTS)}; got {part!r}.")


def compute_order(parts) -> list[str]:
    """``parts`` cheapest first (by ``budget`` with the defaults): the first numbers arrive soonest."""
    unknown = [p for p in parts if p not in PARTS]
    if unknown:
        raise ValueError(f"parts must be among {list(PARTS)}; got {unknown}.")
    defaults = default_settings()
    return sorted(parts, key=lambda p: (budget(p, defaults), PARTS.index(p)))


def compute(problem, part: str, settings: dict, progress: Callable | None = None, cancel=None):
    """One part at ``problem.theta0``: a ``Spectrum``, a ``TraceEstimate``, a ``Density`` or, for
    ``"sharpness"``, ``{"epsilon", "adaptive", "average": Sharpness}``. ``progress(done, total)``
    counts products / evaluations against ``budget(part, settings)``."""
    s = settings
    common = {"seed": int(s["seed"]), "cancel": cancel}
    if part == "eigenvalues":
        return hessian.top_eigenvalues(
            problem, k=s["k"], which=s["which"], tol=s["tol"], max_iter=s["max_iter"], progress=progress, **common
        )
    if part == "trace":
        return hessian.trace(problem, budget=s["budget"], progress=progress, **common)
    if part == "density":
        return hessian.density(problem, iters=s["iters"], runs=s["runs"], sigma=s["sigma"], progress=progress, **common)
    if part != "sharpness":
        raise ValueError(f"part must be one of {list(PARTS)}; got {part!r}.")
    total = budget(part, s)
    starts = int(s.get("starts", 1))
    convention = s.get("convention", "elementwise")
    shares = {
        "epsilon": starts * (EPSILON_ITERS + 1),
        "adaptive": starts * (ADAPTIVE_ITERS + 1),
        "average": int(s["samples"]),
    }
    offsets = {"epsilon": 0, "adaptive": shares["epsilon"], "average": shares["epsilon"] + shares["adaptive"]}

    def report(name):
        if progress is None:
            return None

        def callback(done, part_total):
            fraction = min(1.0, done / part_total) if part_total else 1.0
            progress(offsets[name] + int(fraction * shares[name]), total)

        return callback

    p = np.inf if s["p"] == "inf" else float(s["p"])
    return {
        "epsilon": sharpness.epsilon(
            problem, eps=s["eps"], iters=EPSILON_ITERS, starts=starts, progress=report("epsilon"), **common
        ),
        "adaptive": sharpness.adaptive(
            problem,
            rho=s["rho"],
            p=p,
            iters=ADAPTIVE_ITERS,
            starts=starts,
            convention=convention,
            progress=report("adaptive"),
            **common,
        ),
        "average": sharpness.average(
            problem,
            sigma=s["avg_sigma"],
            samples=s["samples"],
            adaptive=s["avg_adaptive"],
            convention=convention,
            progress=report("average"),
            **common,
        ),
    }
