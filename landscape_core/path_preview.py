"""A first picture of a path fast: a labelled preview on a data subset, then the exact path coarse to fine.

The plane's version is ``landscape_core.preview``; this module does the same for the path of the
Interpolation page (``interpolation.linear``) and for a line through a point (``surface.line``).

``preview_path(problem, theta_a, theta_b, ...)``: the path at its coarse alphas (the first levels of
``path_levels`` that hold ``PREVIEW_POINTS``: both ends of the span, alpha = 0 and 1, and every
``2^L``-th alpha through the centre, 5 to 9 points) on a fixed random subset of the data (``MIN_SAMPLES`` to ``PREVIEW_SAMPLES`` per split)
sized from the measured cost (``landscape_core.estimate``) to take about 2 s. A ``Path`` whose
settings say ``"preview": true``, the subset size (``"samples"``), the loss's standard error at A
as an estimate of the full loss (``"noise"``), its wall time (``"seconds"``, for ``exact_seconds``)
and where its barriers come from (``"barrier_of"``);
with BatchNorm statistics recomputed, they are recomputed on the subset's train samples
(``"bn_statistics"``). Nothing of a preview is cached.

``refine_path(problem, theta_a, theta_b, ...)``: the exact path on all data, level by level
(``on_level(path)`` after each, NaN where not yet computed, no barrier until the end). Alphas of
``known`` (a finished preview) are taken, not recomputed, only when ``known`` is of the same
path on the same data (same model, data, ends, buffers, BatchNorm rule and splits): a preview on
a smaller subset is refused. The finished path equals ``interpolation.linear`` of the same
arguments and is cached under its key.

``preview_line`` / ``refine_line``: the same for ``surface.line``, a ``Surface`` line (the
preview at the first levels of ``preview.refinement_levels(steps)``, the centre and both ends
among them); the finished line equals ``surface.line`` (it is not cached: ``surface.line``
keeps its own tiles).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import numpy as np
import torch

from . import batchnorm, interpolation
from . import cache as cache_mod
from .estimate import CostModel, measure_cost
from .evaluate import Progress, check_splits, evaluate_points
from .interpolation import BNMode, Path
from .preview import (
    MIN_SAMPLES,
    PREVIEW_SAMPLES,
    PREVIEW_SECONDS,
    _data_identity,
    _standard_error,
    axis_levels,
    refinement_levels,
)
from .results import Surface
from .surface import _prepare, _settings, check_span, grid

PREVIEW_POINTS = 5  # at least this many alphas in a preview: both ends, the centre and two between
SAME_PATH = ("kind", "theta_a_sha256", "theta_b_sha256", "buffers_a_sha256", "buffers_b_sha256", "bn", "splits")


def path_levels(alphas: np.ndarray) -> list[np.ndarray]:
    """Indices into ``alphas`` ``(k,)`` in the order they are computed: level 0 (``axis_levels``'s
    coarsest points, plus alpha = 0 and 1 wherever they sit) first, each next level one halving
    finer. Every index exactly once; empty levels are left out."""
    alphas = np.asarray(alphas, dtype=np.float64)
    levels = axis_levels(len(alphas))
    levels[(alphas == 0.0) | (alphas == 1.0)] = 0  # the barrier needs both ends from the start
    return [idx for level in range(int(levels.max()) + 1) if len(idx := np.flatnonzero(levels == level))]


def preview_indices(levels: list[np.ndarray], points: int = PREVIEW_POINTS) -> np.ndarray:
    """The first whole levels that together hold at least ``points`` indices (all if fewer), sorted."""
    chosen: list[np.ndarray] = []
    for level in levels:
        chosen.append(level)
        if sum(map(len, chosen)) >= points:
            break
    return np.sort(np.concatenate(chosen))


def preview_samples(cost: CostModel, seconds: float, points: int, passes: int) -> int:
    """Samples per split for ``points`` points that each see ``passes`` splits' worth of samples
    (a BatchNorm recompute is one more pass over train) within ``seconds``: as many as fit, from
    ``MIN_SAMPLES`` (also when nothing fits) to ``PREVIEW_SAMPLES``."""
    if not seconds > 0:
        raise ValueError(f"seconds must be positive; got {seconds!r}.")
    fit = cost.samples_within(seconds, points) // max(passes, 1)
    return int(min(PREVIEW_SAMPLES, max(MIN_SAMPLES, fit)))


def same_data(path: Path, problem) -> bool:
    """Whether ``path`` (e.g. a preview) was computed on ``problem``'s model and all of its data."""
    return path.settings.get("problem") == problem.describe()


def exact_seconds(preview: Path, problem, steps: int, span, bn: BNMode | str) -> float:
    """Predicted seconds of the exact path (``interpolation.linear``, rule ``bn``) from ``preview``'s own
    timing: its seconds per point and sample seen, times every alpha and all samples (each split once,
    train once more when BatchNorm statistics are recomputed). Timed on the model itself at the
    preview's size, it is steadier than a few tiny probes; per-point overhead scales too (an upper estimate)."""
    s = preview.settings
    recompute = BNMode(bn) is BNMode.RECOMPUTE and batchnorm.has_batchnorm(problem) and problem.mode.value != "train"
    seen = sum(s["samples"].values()) + (s["samples"].get("train", 0) if "bn_statistics" in s else 0)
    full = sum(problem.splits[sp].n for sp in s["samples"]) + (problem.splits["train"].n if recompute else 0)
    per_sample = s["seconds"] / (s["points"] * max(seen, 1))
    return len(interpolation.path_alphas(span, steps)) * full * per_sample


def preview_path(
    problem,
    theta_a: torch.Tensor,
    theta_b: torch.Tensor,
    steps: int = 25,
    span: tuple[float, float] = (0.0, 1.0),
    bn: BNMode | str = "recompute",
    buffers_a=None,
    buffers_b=None,
    splits=None,
    seconds: float = PREVIEW_SECONDS,
    seed: int = 0,
    cost: CostModel | None = None,
    cancel: threading.Event | None = None,
) -> Path:
    """The path of ``interpolation.linear`` (same arguments) at its coarse alphas on a fixed random
    subset (from ``seed``) sized to take about ``seconds`` (``cost`` measured here if not given).

    Returns a ``Path`` with ``alphas`` the coarse alphas ``(m,)`` (0 and 1 among them when the span
    covers them), its barriers from those points and that subset, ``endpoint_values`` NaN (not
    computed), and settings labelling it (see the module docstring).
    """
    plan = interpolation.plan_path(problem, theta_a, theta_b, steps, span, bn, buffers_a, buffers_b, splits)
    coarse = preview_indices(path_levels(plan.alphas))
    cost = measure_cost(problem, plan.splits) if cost is None else cost
    recompute = plan.per_point and plan.bn is BNMode.RECOMPUTE
    samples = preview_samples(cost, seconds, len(coarse), len(plan.splits) + int(recompute))
    small = problem.subset(samples, seed=seed)
    small_plan = interpolation.plan_path(small, theta_a, theta_b, steps, span, bn, buffers_a, buffers_b, splits)
    alphas = plan.alphas[coarse]
    start = time.perf_counter()
    values = interpolation.path_values(small_plan, small, alphas, cancel)
    seconds = time.perf_counter() - start
    used = {s: small.splits[s].n for s in plan.splits}
    at_a = small.at(plan.theta_a, plan.buffers_a)
    whole = all(used[s] == problem.splits[s].n for s in plan.splits)
    settings = {
        **small_plan.settings,
        "points": len(alphas),
        "preview": True,
        "samples": used,
        "noise": {f"{s}_loss": _standard_error(problem, at_a, s) for s in plan.splits},
        "seed": int(seed),
        "seconds": seconds,
        "barrier_of": "this preview: its coarse alphas on "
        + ("all samples" if whole else "the data subset, not the exact path"),
    }
    if recompute:
        settings["bn_statistics"] = f"recomputed at each alpha on the preview's {small.splits['train'].n} train samples"
    found = interpolation.barriers(alphas, values) if 0.0 in alphas and 1.0 in alphas else {}
    nan = {q: np.full(2, np.nan) for q in values}
    return Path(alphas=alphas, values=values, barrier=found, endpoint_values=nan, settings=settings)


def refine_path(
    problem,
    theta_a: torch.Tensor,
    theta_b: torch.Tensor,
    steps: int = 25,
    span: tuple[float, float] = (0.0, 1.0),
    bn: BNMode | str = "recompute",
    buffers_a=None,
    buffers_b=None,
    splits=None,
    known: Path | None = None,
    on_level: Callable[[Path], None] | None = None,
    progress: Progress | None = None,
    cancel: threading.Event | None = None,
    use_cache: bool = True,
) -> Path:
    """``interpolation.linear`` (same arguments) computed coarse to fine (``path_levels``).

    ``known``: a path of the same ends, rule and data (e.g. a finished ``preview_path`` whose subset
    was the whole data) whose finite values at alphas of this path are reused; ``ValueError`` if it
    is of other data or another path. ``on_level(path)`` after each level (values NaN where pending,
    ``barrier`` empty, ``settings["pending_points"]``). ``progress(done, total)`` counts alphas.
    Returns the finished ``Path``, equal to ``linear``'s and cached under its key.
    """
    plan = interpolation.plan_path(problem, theta_a, theta_b, steps, span, bn, buffers_a, buffers_b, splits)
    key = interpolation.path_key(plan)
    alphas, total = plan.alphas, len(plan.alphas)
    if use_cache and (hit := cache_mod.fetch(key, Path.from_bytes)) is not None:
        if progress is not None:
            progress(total, total)
        return hit
    quantities = [f"{s}_{q}" for s in plan.splits for q in ("loss", *problem.metrics)]
    values = {q: np.full(total, np.nan) for q in quantities}
    reused = np.zeros(total, dtype=bool)
    if known is not None:
        _check_same_path(known, plan.settings)
        for j, alpha in enumerate(known.alphas):
            hits = np.flatnonzero(alphas == alpha)
            if len(hits) and all(np.isfinite(known.values[q][j]) for q in quantities):
                reused[hits] = True
                for q in quantities:
                    values[q][hits] = known.values[q][j]
    done = int(reused.sum())
    if progress is not None:
        progress(done, total)
    for level in path_levels(alphas):
        todo = level[~reused[level]]
        if len(todo):
            report = None if progress is None else (lambda i, base=done: progress(base + i, total))
            part = interpolation.path_values(plan, problem, alphas[todo], cancel, report)
            for q in quantities:
                values[q][todo] = part[q]
            done += len(todo)
        if on_level is not None and done < total:
            pending = {**plan.settings, "pending_points": total - done, "reused_points": int(reused.sum())}
            nan = {q: np.full(2, np.nan) for q in quantities}
            on_level(
                Path(
                    alphas=alphas,
                    values={q: v.copy() for q, v in values.items()},
                    barrier={},
                    endpoint_values=nan,
                    settings=pending,
                )
            )
    result = interpolation.finish_path(plan, problem, values, cancel)
    if on_level is not None:
        on_level(result)
    if use_cache:
        cache_mod.put(key, result.to_bytes())
    return result


def _check_same_path(known: Path, settings: dict) -> None:
    if known.settings.get("problem") != settings["problem"]:
        raise ValueError(
            "known was computed on other data (or another model): a preview on a data subset is not the exact "
            "path, and only a path of the same data can be reused."
        )
    differ = [k for k in SAME_PATH if known.settings.get(k) != settings[k]]
    if differ:
        raise ValueError(f"known is another path: its {', '.join(differ)} differ; only the same path can be reused.")


def preview_line(
    problem,
    direction: torch.Tensor,
    span: tuple[float, float] = (-1.0, 1.0),
    steps: int = 51,
    center: torch.Tensor | None = None,
    splits=None,
    seconds: float = PREVIEW_SECONDS,
    seed: int = 0,
    cost: CostModel | None = None,
    cancel: threading.Event | None = None,
) -> Surface:
    """``surface.line`` (same arguments) at the first levels of its grid (``preview_indices``)
    on a fixed random subset sized to take about ``seconds``. A ``Surface`` with ``alphas`` ``(m,)``
    and settings ``"preview": true``, ``"samples"``, ``"noise"``, ``"seed"`` and ``"data"``."""
    alphas = grid(span, steps)
    center, basis = _prepare(problem, [direction], center)
    splits = check_splits(problem, splits)
    coarse = preview_indices(refinement_levels(steps))
    cost = measure_cost(problem, splits) if cost is None else cost
    small = problem.subset(preview_samples(cost, seconds, len(coarse), len(splits)), seed=seed)
    values = evaluate_points(small, center, basis, alphas[coarse][:, None], splits, None, cancel)
    extra = {"span": list(check_span(span)), "steps": steps}
    settings = {
        **_settings(small, "line", center, basis, splits, extra),
        "data": _data_identity(small, splits),
        "preview": True,
        "samples": {s: small.splits[s].n for s in splits},
        "noise": {f"{s}_loss": _standard_error(problem, small, s) for s in splits},
        "seed": int(seed),
    }
    return Surface(alphas=alphas[coarse], values=values, settings=settings)


def refine_line(
    problem,
    direction: torch.Tensor,
    span: tuple[float, float] = (-1.0, 1.0),
    steps: int = 51,
    center: torch.Tensor | None = None,
    splits=None,
    known: Surface | None = None,
    on_level: Callable[[Surface], None] | None = None,
    progress: Progress | None = None,
    cancel: threading.Event | None = None,
) -> Surface:
    """``surface.line`` (same arguments) computed coarse to fine (``refinement_levels(steps)``).

    ``known``: a line through the same point along the same direction on the same data (e.g. a
    ``preview_line`` whose subset was all the data) whose finite values at alphas of this grid are
    reused; ``ValueError`` otherwise. ``on_level(line)`` after each level (NaN where pending).
    Returns the finished ``Surface`` (``values[q]`` ``(steps,)``; settings as ``surface.line``'s plus
    ``"refined"``, ``"reused_points"`` and ``"data"``).
    """
    alphas = grid(span, steps)
    center, basis = _prepare(problem, [direction], center)
    splits = check_splits(problem, splits)
    extra = {"span": list(check_span(span)), "steps": steps}
    settings = {**_settings(problem, "line", center, basis, splits, extra), "data": _data_identity(problem, splits)}
    quantities = [f"{s}_{q}" for s in splits for q in ("loss", *problem.metrics)]
    values = {q: np.full(steps, np.nan) for q in quantities}
    reused = np.zeros(steps, dtype=bool)
    if known is not None:
        if known.settings.get("problem") != settings["problem"] or known.settings.get("data") != settings["data"]:
            raise ValueError("known was computed on other data; only a line of the same data can be reused.")
        if any(known.settings.get(k) != settings[k] for k in ("kind", "direction_sha256", "center_sha256", "splits")):
            raise ValueError(
                "known is another line (direction, centre or splits differ); only the same line can be reused."
            )
        for j, alpha in enumerate(known.alphas):
            hits = np.flatnonzero(alphas == alpha)
            if len(hits) and all(np.isfinite(known.values[q][j]) for q in quantities):
                reused[hits] = True
                for q in quantities:
                    values[q][hits] = known.values[q][j]
    done, total = int(reused.sum()), steps
    settings |= {"refined": True, "reused_points": done}
    for level in refinement_levels(steps):
        todo = level[~reused[level]]
        if len(todo):
            report = None if progress is None else (lambda d, _t, base=done: progress(base + d, total))
            part = evaluate_points(problem, center, basis, alphas[todo][:, None], splits, report, cancel)
            for q in quantities:
                values[q][todo] = part[q]
            done += len(todo)
        if on_level is not None:
            on_level(Surface(alphas=alphas, values={q: v.copy() for q, v in values.items()}, settings=dict(settings)))
    return Surface(alphas=alphas, values=values, settings=settings)
