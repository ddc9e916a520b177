"""A first picture fast: a labelled preview on a data subset, then the exact grid coarse to fine.

``preview_plane(problem, d1, d2, ...)``: a coarse grid (7x7, 5x5 or 3x3, through the centre
and both ends of each axis) on a fixed random subset of the data (32 to 256 samples per split),
sized from a measured cost (``landscape_core.estimate``) to take about 2 s, returned as a
``Surface`` whose settings say ``"preview": true``, the subset size and its noise level: the standard error of the subset's loss at the centre as an estimate of the full
loss (from 8 equal groups of the subset, with the finite-population correction).

``refine_plane(problem, d1, d2, ...)``: the exact grid on the full data, computed level by level
(``refinement_levels``: strides 2^L, ..., 2, 1 through the centre), with ``on_level(surface)``
after each level (cells not yet computed are NaN), so a page can draw it filling in. Cells in
``known`` (a surface on the same grid from the same data, e.g. a finished preview when the
data set is no larger than the subset) are taken, not recomputed. Every value is that of the
one evaluator on the full split, so the finished grid equals a direct computation.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import numpy as np
import torch

from . import inputs as inp
from .estimate import CostModel, measure_cost
from .evaluate import Progress, check_splits, evaluate_points
from .results import Surface
from .surface import _settings, grid

PREVIEW_SAMPLES = 256
PREVIEW_STEPS = (7, 5, 3)  # tried in this order: the finest coarse grid that fits the time
PREVIEW_SECONDS = 2.0
MIN_SAMPLES = 32  # below this a subset's loss says little; the preview then shrinks its grid
NOISE_GROUPS = 8


def plan_preview(cost: CostModel, seconds: float, split_count: int = 1) -> tuple[int, int]:
    """``(steps, samples per split)`` of the preview that fits ``seconds`` under ``cost``: the
    most steps of ``PREVIEW_STEPS`` with at least ``MIN_SAMPLES`` samples, the samples as many as
    fit (at most ``PREVIEW_SAMPLES``); ``(3, MIN_SAMPLES)`` when nothing fits (a slow model)."""
    if not seconds > 0:
        raise ValueError(f"seconds must be positive; got {seconds!r}.")
    for steps in PREVIEW_STEPS:
        samples = min(PREVIEW_SAMPLES, cost.samples_within(seconds, steps * steps) // max(split_count, 1))
        if samples >= MIN_SAMPLES:
            return steps, samples
    return PREVIEW_STEPS[-1], MIN_SAMPLES


def axis_levels(steps: int) -> np.ndarray:
    """Level of each index ``0..steps-1`` of one axis: 0 for the coarsest sub-grid (stride
    ``2^L`` from the centre index ``(steps-1)//2``, plus both ends), ``L - log2(stride)`` for
    the first stride that reaches it, ``L`` the finest (every index). ``int`` array ``(steps,)``."""
    if steps < 1:
        raise ValueError(f"steps must be a positive integer; got {steps!r}.")
    anchor = (steps - 1) // 2
    top = 0
    while 2 ** (top + 1) * 2 <= max(1, steps - 1):  # coarsest level keeps about 5 points per axis
        top += 1
    levels = np.full(steps, top, dtype=int)
    for level in range(top, -1, -1):
        stride = 2 ** (top - level)
        levels[(np.arange(steps) - anchor) % stride == 0] = level
    levels[[0, steps - 1]] = 0
    return levels


def refinement_levels(steps_x: int, steps_y: int | None = None) -> list[np.ndarray]:
    """Flat cell indices (row-major over ``(steps_x, steps_y)``, or ``(steps_x,)`` for a line)
    in the order they are computed: level 0 first (the coarse sub-grid, centre included), each
    next level the cells whose coarsest sub-grid is one halving finer. Every cell exactly once."""
    lx = axis_levels(steps_x)
    cell = lx if steps_y is None else np.maximum.outer(lx, axis_levels(steps_y)).ravel()
    return [np.flatnonzero(cell == level) for level in range(int(cell.max()) + 1)]


def refine_plane(
    problem,
    d1: torch.Tensor,
    d2: torch.Tensor,
    span: tuple[float, float] = (-1.0, 1.0),
    steps: int = 51,
    splits=None,
    on_level: Callable[[Surface], None] | None = None,
    known: Surface | None = None,
    progress: Progress | None = None,
    cancel: threading.Event | None = None,
) -> Surface:
    """The ``steps x steps`` plane ``theta0 + a d1 + b d2`` over ``span``, computed coarse to fine.

    ``known``: a plane on the same grid and the same data whose finite cells are reused.
    Returns the finished ``Surface`` (``values[q]`` ``(steps, steps)``; settings record
    ``"refined": true`` and how many cells were reused).
    """
    alphas = grid(span, steps)
    splits = check_splits(problem, splits)
    basis = torch.stack([d1, d2]).to(problem.device, problem.dtype)
    a, b = np.meshgrid(alphas, alphas, indexing="ij")
    coeffs = np.stack([a.ravel(), b.ravel()], axis=1)
    quantities = [f"{s}_{q}" for s in splits for q in ("loss", *problem.metrics)]
    values = {q: np.full(steps * steps, np.nan) for q in quantities}
    reused = np.zeros(steps * steps, dtype=bool)
    if known is not None:
        if known.betas is None or not (np.array_equal(known.alphas, alphas) and np.array_equal(known.betas, alphas)):
            raise ValueError("known must be a plane on the same grid (same span and steps).")
        if known.settings.get("data") != _data_identity(problem, splits):
            raise ValueError("known was computed on other data; only a surface of the same data can be reused.")
        reused = np.all([np.isfinite(known.values[q]).ravel() for q in quantities], axis=0)
        for q in quantities:
            values[q][reused] = known.values[q].ravel()[reused]
    total, done = steps * steps, int(reused.sum())
    extra = {"span": list(span), "steps": steps, "span_y": list(span), "steps_y": steps}
    settings = {
        **_settings(problem, "plane", problem.theta0, basis, splits, extra),
        "refined": True,
        "reused_cells": done,
        "data": _data_identity(problem, splits),
    }
    for level in refinement_levels(steps, steps):
        todo = level[~reused[level]]
        if len(todo):
            report = None if progress is None else (lambda d, _t, base=done: progress(base + d, total))
            part = evaluate_points(problem, problem.theta0, basis, coeffs[todo], splits, report, cancel)
            for q in quantities:
                values[q][todo] = part[q]
            done += len(todo)
        if on_level is not None:
            on_level(_surface(alphas, values, steps, settings))
    return _surface(alphas, values, steps, settings)


def preview_plane(
    problem,
    d1: torch.Tensor,
    d2: torch.Tensor,
    span: tuple[float, float] = (-1.0, 1.0),
    seconds: float = PREVIEW_SECONDS,
    seed: int = 0,
    splits=None,
    cost: CostModel | None = None,
    progress: Progress | None = None,
    cancel: threading.Event | None = None,
) -> Surface:
    """A coarse plane on a fixed random subset (from ``seed``) sized to take about ``seconds``
    (``plan_preview``; ``cost`` from ``estimate.measure_cost``, measured here if not given).
    ``progress(done, total)`` counts the grid's points once the grid is chosen (nothing before).

    Settings: ``"preview": true``, ``"samples"`` (per split, as used), ``"noise"`` (``{quantity:
    standard error}`` of the subset's loss at the centre as an estimate of the full one; 0 when
    the subset is the whole split), ``"data"`` (which data the values are of) and ``"seed"``.
    """
    splits = check_splits(problem, splits)
    cost = measure_cost(problem, splits) if cost is None else cost
    steps, samples = plan_preview(cost, seconds, len(splits))
    small = problem.subset(samples, seed=seed)
    result = refine_plane(small, d1, d2, span=span, steps=steps, splits=splits, progress=progress, cancel=cancel)
    settings = {
        **result.settings,
        "preview": True,
        "samples": {s: small.splits[s].n for s in splits},
        "noise": {f"{s}_loss": _standard_error(problem, small, s) for s in splits},
        "seed": seed,
    }
    return Surface(alphas=result.alphas, betas=result.betas, values=result.values, settings=settings)


def _standard_error(full, small, split: str) -> float:
    """Standard error of the subset's loss at ``theta0`` as an estimate of the full split's."""
    n, total = small.splits[split].n, full.splits[split].n
    if n >= total:
        return 0.0
    X, y = small.splits[split].head(n)
    size = n // NOISE_GROUPS
    groups = []
    with torch.no_grad():
        for g in range(NOISE_GROUPS):
            part = slice(g * size, (g + 1) * size)
            Xg = inp.apply(X, lambda t, part=part: t[part])
            groups.append(float(small.loss_value(small.forward(small.theta0, Xg), y[part])))
    spread = float(np.std(groups, ddof=1)) * np.sqrt(size / n)  # group means' spread, scaled to n samples
    return spread * float(np.sqrt(max(0.0, 1.0 - n / total)))


def _data_identity(problem, splits) -> dict:
    return {s: problem.splits[s].fingerprint for s in splits}


def _surface(alphas, values, steps, settings) -> Surface:
    grid_values = {q: v.reshape(steps, steps).copy() for q, v in values.items()}
    return Surface(alphas=alphas, betas=alphas, values=grid_values, settings=dict(settings))
