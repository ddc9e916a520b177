"""Trace of the Hessian from Hessian-vector products: Hutch++ (and plain Hutchinson).

Hutchinson (1989): ``tr(H) = E[g^T H g]`` for Rademacher ``g``; error ``~ ||H||_F / sqrt(m)``.
Hutch++ (Meyer, Musco, Musco & Woodruff 2021): with a third of the budget sketch ``Q = orth(H S)``,
take ``tr(Q^T H Q)`` exactly (another third) and Hutchinson only on the deflated remainder
``(I - QQ^T) H (I - QQ^T)`` (the last third); error ``~ 1/m`` instead of ``1/sqrt(m)``
when the spectrum decays, as a network's Hessian does.

``stderr`` is the sample standard deviation of the Hutchinson terms over ``sqrt(#terms)``: the
exact part is fixed once ``Q`` is drawn and the remainder estimate is an unbiased mean of
independent samples, so it is an honest standard error of the whole estimate given ``Q``.
"""

from __future__ import annotations

import dataclasses
from enum import Enum

import numpy as np
import torch

from .hvp import HessianOperator, cached, choice, curvature_settings
from .results import ResultIO, csv_table


class TraceMethod(str, Enum):
    HUTCHPP = "hutch++"
    HUTCHINSON = "hutchinson"


@dataclasses.dataclass(frozen=True)
class TraceEstimate(ResultIO):
    """Estimate of ``tr(H)`` (loss units).

    ``estimate`` and its ``stderr``; ``exact_part``: ``tr(Q^T H Q)`` of Hutch++'s sketch (0 for
    Hutchinson); ``samples``: float64 ``(m,)`` Hutchinson terms ``g^T H g`` of the remainder;
    ``hvp_count``: products used; ``settings["dimension"]``: ``n`` (``P`` or the mask size).
    """

    estimate: float
    stderr: float
    exact_part: float
    samples: np.ndarray
    hvp_count: int
    settings: dict

    @property
    def per_parameter(self) -> float:
        """``trace / n``: the mean eigenvalue, the curvature a random direction sees on average."""
        return self.estimate / self.settings["dimension"]

    def to_csv(self) -> str:
        """``quantity,value`` rows (estimate, stderr, exact part, hvp count, then each sample)."""
        rows = [("estimate", float(self.estimate)), ("stderr", float(self.stderr))]
        rows += [("exact_part", float(self.exact_part)), ("hvp_count", int(self.hvp_count))]
        rows += [(f"sample_{i}", float(s)) for i, s in enumerate(self.samples)]
        return csv_table(["quantity", "value"], rows)


def _rademacher(n: int, count: int, gen: torch.Generator) -> torch.Tensor:
    return torch.randint(0, 2, (count, n), generator=gen, dtype=torch.int8).to(torch.float64) * 2 - 1


def trace(
    problem,
    budget: int = 150,
    seed: int = 0,
    method: TraceMethod | str = "hutch++",
    mask: torch.Tensor | None = None,
    dtype=None,
    hvp_method: str = "auto",
    use_cache: bool = True,
    progress=None,
    cancel=None,
) -> TraceEstimate:
    """Estimate ``tr(H)`` at ``problem.theta0`` with at most ``budget`` Hessian-vector products.

    ``method``: ``"hutch++"`` (budget split in thirds, needs ``budget >= 6``) or
    ``"hutchinson"`` (``budget >= 2``). When a third of the budget reaches the dimension
    the sketch spans the space and the trace is exact (``stderr = 0``). ``progress(done, total)``
    after each product, ``cancel`` checked before each (raises ``Cancelled``).

    >>> est = trace(problem, budget=150)           # doctest: +SKIP
    >>> est.estimate, est.stderr, est.hvp_count    # doctest: +SKIP
    """
    method = choice(TraceMethod, method, "method")
    minimum = 6 if method is TraceMethod.HUTCHPP else 2
    if not isinstance(budget, int) or budget < minimum:
        raise ValueError(f"budget must be an integer >= {minimum} for method {method.value!r}; got {budget!r}.")
    n = problem.space.size if mask is None else int(torch.as_tensor(mask).sum())
    settings = {
        "kind": "trace",
        "method": method.value,
        "budget": budget,
        "seed": int(seed),
        "dimension": n,
        **curvature_settings(problem, mask, dtype, hvp_method),
    }

    def compute() -> TraceEstimate:
        op = HessianOperator(problem, mask, dtype, hvp_method, progress=progress, cancel=cancel, expected=budget)
        gen = torch.Generator().manual_seed(int(seed))
        exact, Q = 0.0, torch.zeros(0, n, dtype=torch.float64)
        remaining = budget
        if method is TraceMethod.HUTCHPP:
            s = min(budget // 3, n)
            S = _rademacher(n, s, gen)
            Y = torch.stack([op.matvec(v) for v in S])
            Q = torch.linalg.qr(Y.T).Q.T  # (s, n) orthonormal rows
            exact = float(sum(q @ op.matvec(q) for q in Q))
            remaining = budget - 2 * s
        samples = []
        if Q.shape[0] < n:
            for g in _rademacher(n, remaining, gen):
                g = g - Q.T @ (Q @ g)
                samples.append(float(g @ op.matvec(g)))
        samples = np.array(samples, dtype=np.float64)
        mean = float(samples.mean()) if samples.size else 0.0
        stderr = float(samples.std(ddof=1) / np.sqrt(samples.size)) if samples.size > 1 else 0.0
        return TraceEstimate(
            estimate=exact + mean,
            stderr=stderr,
            exact_part=exact,
            samples=samples,
            hvp_count=op.hvp_count,
            settings={**settings, "hvp_method_used": op.method},
        )

    return cached("trace", TraceEstimate, settings, use_cache, compute, progress)
