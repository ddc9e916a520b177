"""Up-front limits: refuse a computation that cannot fit before it starts.

A grid too large for the memory budget or over the steps limit is refused with a
``LimitError`` (a ``ValueError``) that names the limit and what was asked, before any
point is evaluated. The dashboard and the CLI call these checks first.

Limits: ``surface.MAX_STEPS`` per axis and ``surface.MAX_POINTS`` per grid (the engine's
own bounds), and a memory budget for one computation (default 2 GiB, or
``$LANDSCAPE_MEMORY_BUDGET_MB``). The memory estimate is the result arrays (float64, one
per quantity and point) plus the evaluator's smallest working set (one point's parameters
and the activations of one batch), so a model whose single forward pass cannot fit is
refused too.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from .surface import MAX_POINTS, MAX_STEPS

DEFAULT_MEMORY_BUDGET = 2 * 2**30


class LimitError(ValueError):
    """A request over a stated limit; the message names the limit."""


def memory_budget() -> int:
    """Bytes one computation may use: ``$LANDSCAPE_MEMORY_BUDGET_MB`` (MiB) or 2 GiB."""
    env = os.environ.get("LANDSCAPE_MEMORY_BUDGET_MB")
    if env:
        try:
            value = float(env)
        except ValueError:
            raise LimitError(f"LANDSCAPE_MEMORY_BUDGET_MB must be a number of MiB; got {env!r}.") from None
        if value <= 0:
            raise LimitError(f"LANDSCAPE_MEMORY_BUDGET_MB must be positive; got {env!r}.")
        return int(value * 2**20)
    return DEFAULT_MEMORY_BUDGET


@dataclass(frozen=True)
class Estimate:
    """What a computation of ``points`` evaluations needs: bytes of results and of working set."""

    points: int
    result_bytes: int
    working_bytes: int

    @property
    def total_bytes(self) -> int:
        return self.result_bytes + self.working_bytes


def _activation_numel(problem) -> int:
    from .execution import activation_numel as numel  # the evaluator's own proxy

    return numel(problem)


def estimate(problem, points: int) -> Estimate:
    """Memory for evaluating ``problem`` at ``points`` points (results plus one point's working set)."""
    elem = torch.finfo(problem.dtype).bits // 8
    quantities = len(problem.quantities)
    largest_batch = max(s.batch_size for s in problem.splits.values())
    working = (3 * _activation_numel(problem) * largest_batch + 4 * problem.space.size) * elem
    return Estimate(points=int(points), result_bytes=int(points) * quantities * 8, working_bytes=int(working))


def _gib(n: float) -> str:
    return f"{n / 2**30:.2f} GiB" if n >= 2**28 else f"{n / 2**20:.1f} MiB"


def check_steps(steps, what: str = "steps") -> int:
    """An integer from 2 to ``MAX_STEPS``, else ``LimitError`` naming the limit."""
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 2:
        raise LimitError(f"{what} must be an integer of at least 2; got {steps!r}.")
    if steps > MAX_STEPS:
        raise LimitError(f"{what}={steps} is over the steps limit of {MAX_STEPS} per axis.")
    return steps


def check_points(problem, points: int, what: str = "this computation", budget: int | None = None) -> Estimate:
    """Refuse ``points`` evaluations of ``problem`` that exceed ``MAX_POINTS`` or the memory budget."""
    if points > MAX_POINTS:
        raise LimitError(f"{what} has {points:,} points, over the limit of {MAX_POINTS:,} points per computation.")
    budget = memory_budget() if budget is None else int(budget)
    need = estimate(problem, points)
    if need.total_bytes > budget:
        raise LimitError(
            f"{what} needs about {_gib(need.total_bytes)} ({points:,} points, {_gib(need.working_bytes)} working "
            f"set for batches of the data), over the memory budget of {_gib(budget)}; use fewer steps, a smaller "
            "batch_size or a data subset, or raise LANDSCAPE_MEMORY_BUDGET_MB."
        )
    return need


def check_grid(problem, steps: int, steps_y: int | None = None, budget: int | None = None) -> Estimate:
    """Check a line (``steps_y=None``) or a ``steps x steps_y`` plane against every limit, up front."""
    check_steps(steps, "steps")
    if steps_y is None:
        return check_points(problem, steps, f"a line of {steps} steps", budget)
    check_steps(steps_y, "steps_y")
    return check_points(problem, steps * steps_y, f"a {steps} x {steps_y} grid", budget)
