"""1D lines and 2D planes of the loss around a point.

``line(problem, d)`` evaluates ``center + alpha d``; ``plane(problem, d1, d2)`` evaluates
``center + alpha d1 + beta d2`` on a grid. Both go through the one evaluator, cache their
result by content, and a plane is computed (and cached) in chunks of rows, so an
interrupted plane resumes from its finished chunks.
"""

from __future__ import annotations

import threading

import numpy as np
import torch

from . import cache as cache_mod
from . import executors
from .evaluate import Progress, check_splits, evaluate_chunks, evaluate_points
from .provenance import digest, provenance
from .results import Surface

ALGORITHM_VERSION = 1
MAX_STEPS = 401
MAX_POINTS = 401 * 401


def grid(span: tuple[float, float], steps: int, what: str = "span", steps_what: str = "steps") -> np.ndarray:
    """``steps`` evenly spaced float64 coordinates over ``span``; a coordinate within
    1e-12 of zero is set to exactly 0, so the centre of an odd symmetric grid is the centre."""
    check_steps(steps, steps_what)
    lo, hi = check_span(span, what)
    coords = np.linspace(lo, hi, steps)
    coords[np.abs(coords) < 1e-12 * (hi - lo)] = 0.0
    return coords


def check_steps(steps, what: str = "steps") -> int:
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or not 2 <= steps <= MAX_STEPS:
        raise ValueError(f"{what} must be an integer from 2 to {MAX_STEPS}; got {steps!r}.")
    return int(steps)


def check_span(span, what: str = "span") -> tuple[float, float]:
    try:
        lo, hi = (float(v) for v in span)
    except (TypeError, ValueError):
        raise ValueError(f"{what} must be a pair (low, high) of numbers; got {span!r}.") from None
    if not (np.isfinite(lo) and np.isfinite(hi)) or not hi > lo:
        raise ValueError(f"{what} must satisfy low < high with finite ends; got ({lo}, {hi}).")
    return lo, hi


def _prepare(problem, directions: list[torch.Tensor], center):
    for i, d in enumerate(directions):
        what = f"d{i + 1}" if len(directions) > 1 else "direction"
        problem.space.check(d, what)
        bad = int((~torch.isfinite(d)).sum())
        if bad:
            raise ValueError(f"{what} has {bad} NaN or inf entries; every entry must be finite.")
        if not d.abs().max() > 0:
            raise ValueError(f"{what} is all zeros; it needs at least one non-zero entry (the surface would be flat).")
    center = problem.theta0 if center is None else center
    problem.space.check(center, "center")
    return center.to(problem.device, problem.dtype), torch.stack(directions).to(problem.device, problem.dtype)


def _settings(problem, kind, center, basis, splits, extra) -> dict:
    return {
        "kind": kind,
        "directions": [provenance(d) for d in basis],
        "direction_sha256": [digest(d) for d in basis],
        "direction_norms": [float(d.double().norm()) for d in basis],
        "center": "theta0" if torch.equal(center, problem.theta0) else "custom",
        "center_sha256": digest(center),
        "splits": list(splits),
        "problem": problem.describe(),
        **extra,
    }


def line(
    problem,
    direction: torch.Tensor,
    span: tuple[float, float] = (-1.0, 1.0),
    steps: int = 51,
    center: torch.Tensor | None = None,
    splits=None,
    progress: Progress | None = None,
    cancel: threading.Event | None = None,
    use_cache: bool = True,
) -> Surface:
    """Loss (and metrics) along ``center + alpha * direction`` for ``alpha`` over ``span``.

    Returns a ``Surface`` with ``alphas`` ``(steps,)`` and ``values[q]`` ``(steps,)``.
    """
    alphas = grid(span, steps)
    center, basis = _prepare(problem, [direction], center)
    splits = check_splits(problem, splits)
    settings = _settings(problem, "line", center, basis, splits, {"span": list(check_span(span)), "steps": steps})
    key = cache_mod.make_key("surface", ALGORITHM_VERSION, settings)
    if use_cache and (hit := cache_mod.get(key)) is not None:
        if progress is not None:
            progress(steps, steps)
        return Surface.from_bytes(hit)
    values = evaluate_points(problem, center, basis, alphas[:, None], splits, progress, cancel)
    result = Surface(alphas=alphas, values=values, settings=settings)
    if use_cache:
        cache_mod.put(key, result.to_bytes())
    return result


def plane(
    problem,
    d1: torch.Tensor,
    d2: torch.Tensor,
    span: tuple[float, float] = (-1.0, 1.0),
    steps: int = 51,
    center: torch.Tensor | None = None,
    span_y: tuple[float, float] | None = None,
    steps_y: int | None = None,
    splits=None,
    progress: Progress | None = None,
    cancel: threading.Event | None = None,
    use_cache: bool = True,
    rows_per_chunk: int | None = None,
) -> Surface:
    """Loss (and metrics) on the grid ``center + alphas[i] d1 + betas[j] d2``.

    ``span``/``steps`` set the alpha axis; ``span_y``/``steps_y`` the beta axis (default:
    the same). Returns a ``Surface`` with ``values[q]`` of shape ``(steps, steps_y)``.
    Finished chunks of rows are cached as they complete; a cancelled run raises
    ``Cancelled`` and the next identical call resumes from them.
    """
    if rows_per_chunk is not None and (
        isinstance(rows_per_chunk, bool) or not isinstance(rows_per_chunk, int) or rows_per_chunk < 1
    ):
        raise ValueError(f"rows_per_chunk must be a positive integer or None (automatic); got {rows_per_chunk!r}.")
    span_y = span if span_y is None else span_y
    steps_y = steps if steps_y is None else steps_y
    alphas = grid(span, steps, "span")
    betas = grid(span_y, steps_y, "span_y", "steps_y")
    center, basis = _prepare(problem, [d1, d2], center)
    splits = check_splits(problem, splits)
    settings = _settings(
        problem,
        "plane",
        center,
        basis,
        splits,
        {"span": list(check_span(span)), "steps": steps, "span_y": list(check_span(span_y)), "steps_y": steps_y},
    )
    key = cache_mod.make_key("surface", ALGORITHM_VERSION, settings)
    total = steps * steps_y
    if use_cache and (hit := cache_mod.get(key)) is not None:
        if progress is not None:
            progress(total, total)
        return Surface.from_bytes(hit)

    rows_per_chunk = rows_per_chunk or executors.current().rows_per_chunk(steps, steps_y)
    values = {f"{s}_{q}": np.full((steps, steps_y), np.nan) for s in splits for q in ("loss", *problem.metrics)}
    chunk_keys, missing = [], []
    done = 0
    for index, r0 in enumerate(range(0, steps, rows_per_chunk)):
        r1 = min(r0 + rows_per_chunk, steps)
        chunk_keys.append(f"{key}:chunk:{index}:{r0}-{r1}")
        stored = cache_mod.get(chunk_keys[-1]) if use_cache else None
        if stored is None:
            missing.append((index, r0, r1))
            continue
        for q, v in Surface.from_bytes(stored).values.items():
            if q in values:
                values[q][r0:r1] = v
        done += (r1 - r0) * steps_y

    def store(i: int, flat: dict) -> None:
        # called as each chunk finishes (by a remote executor in the order they finish): kept at once
        index, r0, r1 = missing[i]
        part = {q: v.reshape(r1 - r0, steps_y) for q, v in flat.items()}
        for q, v in part.items():
            values[q][r0:r1] = v
        if use_cache:
            cache_mod.put(chunk_keys[index], Surface(alphas=alphas[r0:r1], values=part, settings={}).to_bytes())

    if missing:
        coeffs = []
        for _, r0, r1 in missing:
            a, b = np.meshgrid(alphas[r0:r1], betas, indexing="ij")
            coeffs.append(np.stack([a.ravel(), b.ravel()], axis=1))
        report = None if progress is None else (lambda d, _t: progress(done + d, total))
        evaluate_chunks(problem, center, basis, coeffs, splits, report, cancel, on_chunk=store)
    if progress is not None:
        progress(total, total)
    result = Surface(alphas=alphas, betas=betas, values=values, settings=settings)
    if use_cache:
        cache_mod.put(key, result.to_bytes())
        for chunk_key in chunk_keys:
            cache_mod.delete(chunk_key)
    return result
