"""A first picture fast: a labelled preview on a data subset, then the exact grid coarse to fine.

``preview_plane(problem, d1, d2, ...)``: a coarse grid (7x7, 5x5 or 3x3, through the centre
and both ends of each axis) on a fixed random subset of the data (32 to 256 samples per split),
sized from a measured cost (``landscape_core.estimate``) to take about 2 s, returned as a
``Surface`` whose settings say ``"preview": true``, the subset size and its noise level: the standard error of the subset's loss at the centre as an estimate of the full
loss (from 8 equal groups of the subset, with the finite-population correction).

``refine_plane(problem, d1, d2, ...)``: the exact grid on the full data, computed level by level
(``refinement_levels``: strides 2^L, ..., 2, 1 through the centre), with ``on_level(surface)``
after each level (cells not yet computed are NaN; ``fill_pending`` draws them from their nearest
computed neighbour), so a page can draw it filling in. Cells of ``known`` (a plane of the same
directions, centre and data, e.g. a finished preview when the data set is no larger than the
subset, or a coarser pass) that lie on the grid are taken, not recomputed. Every value is that of
the one evaluator on the full split, so the finished grid equals a direct computation (to float
rounding: the evaluator batches points differently). With ``use_cache`` the finished grid is kept
under ``surface.plane``'s own key (a plane cached either way opens without evaluating) and the
work in flight is kept as it goes, so a cancelled refinement resumes.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import numpy as np
import torch

from . import cache as cache_mod
from . import inputs as inp
from .estimate import CostModel, measure_cost
from .evaluate import Cancelled, Progress, check_splits, evaluate_points
from .results import Surface
from .surface import plane_request

PREVIEW_SAMPLES = 256
PREVIEW_STEPS = (7, 5, 3)  # tried in this order: the finest coarse grid that fits the time
PREVIEW_SECONDS = 2.0
MIN_SAMPLES = 32  # below this a subset's loss says little; the preview then shrinks its grid
NOISE_GROUPS = 8
REFINE_CHUNK_S = 1.0  # seconds of work between stored partial grids (the most a cancel loses, roughly)
FIRST_PIECE = 16  # cells in the first piece of a level, before the rate is known


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
    center: torch.Tensor | None = None,
    span_y: tuple[float, float] | None = None,
    use_cache: bool = False,
) -> Surface:
    """The ``steps x steps`` plane ``center + a d1 + b d2`` (``a`` over ``span``, ``b`` over ``span_y``,
    default the same; ``center`` default ``theta0``), computed coarse to fine.

    ``known``: a plane of the same directions, centre and data whose finite cells that lie on this
    grid (equal coordinates) are reused, e.g. a coarser pass. ``on_level(picture)`` after each
    level: ``picture.settings`` has ``"level"``, ``"levels"`` and ``"computed"`` (cells done);
    cells not yet computed are NaN (``fill_pending`` draws them). Returns the finished ``Surface``
    (``values[q]`` ``(steps, steps)``; settings: those of ``surface.plane`` plus ``"refined": true``,
    ``"reused_cells"`` and ``"data"``).

    ``use_cache``: a plane the cache holds (however computed) is returned at once, without
    ``on_level``; the finished grid is stored under ``surface.plane``'s key, so ``surface.plane``
    and ``surface.cached_plane`` find it; work in flight is kept every ``REFINE_CHUNK_S`` seconds
    or so and a cancelled run resumes from it (``Cancelled.kept`` says how many cells).
    """
    request = plane_request(problem, d1, d2, span, steps, center, span_y, None, splits)
    alphas, betas, center, basis, splits = request[:5]
    total = steps * steps
    if use_cache and (hit := cache_mod.fetch(request.key, Surface.from_bytes)) is not None:
        if progress is not None:
            progress(total, total)
        return hit
    a, b = np.meshgrid(alphas, betas, indexing="ij")
    coeffs = np.stack([a.ravel(), b.ravel()], axis=1)
    quantities = [f"{s}_{q}" for s in splits for q in ("loss", *problem.metrics)]
    values = {q: np.full(total, np.nan) for q in quantities}
    filled = np.zeros(total, dtype=bool)
    data = _data_identity(problem, splits)
    partial_key = f"{request.key}:refining"
    kept = cache_mod.fetch(partial_key, Surface.from_bytes) if use_cache else None
    for source in (known, kept):
        if source is not None:
            cells, taken = _cells_on_grid(source, request, data, quantities)
            fresh = cells[~filled[cells]]
            for q in quantities:
                values[q][fresh] = taken[q][~filled[cells]]
            filled[fresh] = True
    settings = {**request.settings, "refined": True, "reused_cells": int(filled.sum()), "data": data}

    def picture(extra: dict | None = None) -> Surface:
        grid_values = {q: v.reshape(steps, steps).copy() for q, v in values.items()}
        return Surface(alphas=alphas, betas=betas, values=grid_values, settings={**settings, **(extra or {})})

    levels = refinement_levels(steps, steps)
    done = int(filled.sum())
    if progress is not None:
        progress(done, total)
    count = FIRST_PIECE  # cells per piece with the cache (a piece's work is kept when it ends)
    for index, level in enumerate(levels):
        todo = level[~filled[level]]
        while len(todo):
            size = count if use_cache else len(todo)  # without the cache: one evaluator call per level
            piece, todo = todo[:size], todo[size:]
            report = None if progress is None else (lambda d, _t, base=done: progress(base + d, total))
            began = time.perf_counter()
            try:
                part = evaluate_points(problem, center, basis, coeffs[piece], splits, report, cancel)
            except Cancelled:
                raise _cancelled(done, total, use_cache) from None
            for q in quantities:
                values[q][piece] = part[q]
            filled[piece] = True
            done += len(piece)
            if use_cache:
                rate = len(piece) / max(time.perf_counter() - began, 1e-6)
                count = max(1, int(min(rate * REFINE_CHUNK_S, 4 * count)))
                if len(todo):
                    cache_mod.put(partial_key, picture().to_bytes())
        if use_cache and index < len(levels) - 1:
            cache_mod.put(partial_key, picture().to_bytes())
        if on_level is not None:
            on_level(picture({"level": index, "levels": len(levels), "computed": done}))
    result = picture()
    if use_cache:
        cache_mod.put(request.key, result.to_bytes())
        cache_mod.delete(partial_key)
    return result


def fill_pending(picture: Surface) -> Surface:
    """A picture of ``refine_plane``'s ``on_level`` with each cell not yet computed drawn with the
    value of the nearest computed cell of its level's sub-grid (diverged cells stay NaN), for
    showing a grid while it fills in. A finished surface is returned as it is."""
    level = picture.settings.get("level")
    if level is None or picture.betas is None:
        return picture
    rows = np.flatnonzero(axis_levels(len(picture.alphas)) <= level)
    cols = np.flatnonzero(axis_levels(len(picture.betas)) <= level)
    near_rows = rows[np.abs(np.arange(len(picture.alphas))[:, None] - rows[None, :]).argmin(axis=1)]
    near_cols = cols[np.abs(np.arange(len(picture.betas))[:, None] - cols[None, :]).argmin(axis=1)]
    values = {}
    for q, v in picture.values.items():
        nearest = v[np.ix_(near_rows, near_cols)]
        # a computed cell is its own nearest: one that diverged stays NaN; a reused finer cell is kept
        values[q] = np.where(np.isnan(v), nearest, v)
    return Surface(alphas=picture.alphas, betas=picture.betas, values=values, settings=dict(picture.settings))


def same_data(surface: Surface, problem, splits=None) -> bool:
    """Whether ``surface`` (a preview or a refined plane) was computed on exactly ``problem``'s data
    of ``splits``: only then may ``refine_plane`` reuse its cells (``known=``)."""
    return surface.settings.get("data") == _data_identity(problem, check_splits(problem, splits))


def reusable(known: Surface | None, problem, splits=None) -> Surface | None:
    """``known`` if ``refine_plane`` may reuse its cells here (``same_data``), else ``None``: a preview
    on a data subset is drawn, not reused."""
    return known if known is not None and same_data(known, problem, splits) else None


def _cells_on_grid(known: Surface, request, data: dict, quantities: list[str]):
    """``(flat cells of the new grid, {q: their values})`` for the finite cells of ``known`` that lie on it."""
    if known.betas is None:
        raise ValueError("known must be a plane (a Surface with betas).")
    if known.settings.get("data") != data:
        raise ValueError("known was computed on other data; only a surface of the same data can be reused.")
    ours = request.settings
    for field, what in (("direction_sha256", "directions"), ("center_sha256", "centre")):
        if known.settings.get(field) != ours[field]:
            raise ValueError(f"known was computed with other {what}; only a plane of the same ones can be reused.")
    rows, at_rows = _positions(known.alphas, request.alphas)
    cols, at_cols = _positions(known.betas, request.betas)
    missing = [q for q in quantities if q not in known.values]
    if missing or not len(rows) or not len(cols):
        return np.zeros(0, dtype=int), {q: np.zeros(0) for q in quantities}
    sub = {q: known.values[q][np.ix_(at_rows, at_cols)].ravel() for q in quantities}
    finite = np.all([np.isfinite(v) for v in sub.values()], axis=0)
    cells = (rows[:, None] * len(request.betas) + cols[None, :]).ravel()[finite]
    return cells, {q: v[finite] for q, v in sub.items()}


def _positions(coords: np.ndarray, grid_coords: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(indices in grid_coords, indices in coords)`` of the coordinates both share (to 1e-9 of the span)."""
    tol = 1e-9 * float(grid_coords[-1] - grid_coords[0])
    nearest = np.abs(coords[:, None] - grid_coords[None, :]).argmin(axis=1)
    match = np.abs(grid_coords[nearest] - coords) <= tol
    return nearest[match], np.flatnonzero(match)


def _cancelled(done: int, total: int, kept: bool) -> Cancelled:
    if not kept:
        return Cancelled(f"cancelled after {done:,} of {total:,} cells")
    exc = Cancelled(f"kept {done:,} of {total:,} points; Run resumes from there")
    exc.kept = done
    return exc


def preview_plane(
    problem,
    d1: torch.Tensor,
    d2: torch.Tensor,
    span: tuple[float, float] = (-1.0, 1.0),
    seconds: float = PREVIEW_SECONDS,
    seed: int = 0,
    splits=None,
    cost: CostModel | None = None,
    center: torch.Tensor | None = None,
    span_y: tuple[float, float] | None = None,
    progress: Progress | None = None,
    cancel: threading.Event | None = None,
) -> Surface:
    """A coarse plane on a fixed random subset (from ``seed``) sized to take about ``seconds``
    (``plan_preview``; ``cost`` from ``estimate.measure_cost``, measured here if not given);
    ``center`` and ``span_y`` as in ``refine_plane``. ``progress(done, total)`` counts the grid's
    points once the grid is chosen (nothing before).

    Settings: ``"preview": true``, ``"samples"`` (per split, as used), ``"noise"`` (``{quantity:
    standard error}`` of the subset's loss at the centre as an estimate of the full one; 0 when
    the subset is the whole split), ``"data"`` (which data the values are of) and ``"seed"``.
    """
    splits = check_splits(problem, splits)
    cost = measure_cost(problem, splits) if cost is None else cost
    steps, samples = plan_preview(cost, seconds, len(splits))
    small = problem.subset(samples, seed=seed)
    result = refine_plane(
        small,
        d1,
        d2,
        span=span,
        steps=steps,
        splits=splits,
        center=center,
        span_y=span_y,
        progress=progress,
        cancel=cancel,
    )
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
