"""How long a grid will take, measured on the user's own model before it runs.

Cost per point is affine in the samples it sees: ``seconds = overhead + per_sample * samples``
(``bench/bench_real.py --growth`` fits the samples exponent at 0.9-1.0 on the CNN and ResNet
benches; the grid's points enter linearly, every point costing the same forward passes).
``measure_cost`` times two off-centre points on two subset sizes through the one evaluator
(the same strategy a run uses) and fits the two numbers; ``CostModel.seconds(points, samples)``
predicts a run. The first forward of a model is warmed up and not counted.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from .evaluate import check_splits, evaluate_points

PROBE_POINTS = 2


@dataclass(frozen=True)
class CostModel:
    """``seconds per point = overhead + per_sample * samples`` on this machine, now.

    ``overhead``: seconds per point independent of the data; ``per_sample``: seconds per
    point and sample; ``samples``: the samples a full run sees (summed over its splits).
    """

    overhead: float
    per_sample: float
    samples: int

    def seconds(self, points: int, samples: int | None = None) -> float:
        """Predicted wall seconds for ``points`` grid points on ``samples`` (default: the full run's)."""
        n = self.samples if samples is None else samples
        return points * (self.overhead + self.per_sample * n)

    def samples_within(self, seconds: float, points: int) -> int:
        """The most samples for which ``points`` points fit in ``seconds`` (0 if none do)."""
        left = seconds / max(points, 1) - self.overhead
        return max(0, int(left / self.per_sample)) if self.per_sample > 0 else 10**9


def measure_cost(problem, splits=None, sizes: tuple[int, int] = (16, 64)) -> CostModel:
    """Time ``PROBE_POINTS`` off-centre points on subsets of ``sizes`` samples per split; fit
    ``CostModel``. Costs a few forward passes on at most ``sizes[1]`` samples."""
    splits = check_splits(problem, splits)
    small, large = sizes
    if not 1 <= small < large:
        raise ValueError(f"sizes must be two increasing positive sample counts; got {sizes!r}.")
    gen = torch.Generator().manual_seed(0)
    direction = torch.randn(problem.space.size, generator=gen, dtype=torch.float64).to(problem.device, problem.dtype)
    direction = direction * (1e-3 * max(float(problem.theta0.norm()), 1.0) / float(direction.norm()))
    coeffs = torch.linspace(0.5, 1.0, PROBE_POINTS, dtype=torch.float64)[:, None]
    timings = []
    for size in (small, small, large):  # the first run warms up (allocations, traced graphs)
        sub = problem.subset(size, seed=0)
        seen = sum(sub.splits[s].n for s in splits)
        t0 = time.perf_counter()
        evaluate_points(sub, sub.theta0, direction[None], coeffs, splits)
        timings.append((seen, (time.perf_counter() - t0) / PROBE_POINTS))
    (n1, t1), (n2, t2) = timings[1], timings[2]
    per_sample = max(0.0, (t2 - t1) / (n2 - n1)) if n2 > n1 else t2 / max(n2, 1)
    overhead = max(0.0, t1 - per_sample * n1)
    full = sum(problem.splits[s].n for s in splits)
    return CostModel(overhead=overhead, per_sample=per_sample, samples=full)


def describe_seconds(seconds: float) -> str:
    """``"about 40 s"``, ``"about 12 min"``, ``"about 3.5 h"``: a prediction in words."""
    if seconds < 90:
        return f"about {max(seconds, 0.1):.2g} s" if seconds < 10 else f"about {seconds:.0f} s"
    if seconds < 5400:
        return f"about {seconds / 60:.0f} min"
    return f"about {seconds / 3600:.1f} h"
