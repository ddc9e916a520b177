"""1D lines and 2D planes of the loss around a point.

``line(problem, d)`` evaluates ``center + alpha d``; ``plane(problem, d1, d2)`` evaluates
``center + alpha d1 + beta d2`` on a grid. Both go through the one evaluator, cache their
result by content, and are computed in tiles kept as they finish (``landscape_core.tiles``),
so an interrupted line or plane resumes from its finished tiles.
"""

from __future__ import annotations

import threading
from typing import NamedTuple

import numpy as np
import torch

from . import cache as cache_mod
from .evaluate import Progress, check_splits
from .provenance import digest, provenance
from .results import Surface
from .tiles import TiledRun

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
    return center.to(problem.device, problem.dtype), _rows(directions).to(problem.device, problem.dtype)


def _rows(vectors: list[torch.Tensor]) -> torch.Tensor:
    """``torch.stack(vectors)`` ``(k, P)``, or a view without a copy when the vectors already are
    consecutive rows of one tensor (``d1, d2 = directions.random(...)``; on a 22.7M-parameter
    space the copy was 174 MiB of a plane's peak)."""
    first = vectors[0]
    n = first.numel()
    rows = all(
        v.dim() == 1
        and v.is_contiguous()
        and v.dtype == first.dtype
        and v.device == first.device
        and v.untyped_storage().data_ptr() == first.untyped_storage().data_ptr()
        and v.storage_offset() == first.storage_offset() + i * n
        for i, v in enumerate(vectors)
    )
    return first.as_strided((len(vectors), n), (n, 1)) if rows else torch.stack(vectors)


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

    Returns a ``Surface`` with ``alphas`` ``(steps,)`` and ``values[q]`` ``(steps,)``. Computed
    in tiles like ``plane`` (a cancelled line resumes).
    """
    alphas = grid(span, steps)
    center, basis = _prepare(problem, [direction], center)
    splits = check_splits(problem, splits)
    settings = _settings(problem, "line", center, basis, splits, {"span": list(check_span(span)), "steps": steps})
    key = cache_mod.make_key("surface", ALGORITHM_VERSION, settings)

    def build(values):
        return Surface(alphas=alphas, values=values, settings=settings)

    run = TiledRun(
        problem, center, basis, alphas[:, None], splits, key, build, Surface.from_bytes, use_cache, progress, cancel
    )
    return run.run()


class PlaneRequest(NamedTuple):
    """A plane checked and identified: its grid, centre, basis ``(2, P)``, splits, settings and cache key."""

    alphas: np.ndarray
    betas: np.ndarray
    center: torch.Tensor
    basis: torch.Tensor
    splits: list[str]
    settings: dict
    key: str


def plane_request(
    problem,
    d1: torch.Tensor,
    d2: torch.Tensor,
    span: tuple[float, float] = (-1.0, 1.0),
    steps: int = 51,
    center: torch.Tensor | None = None,
    span_y: tuple[float, float] | None = None,
    steps_y: int | None = None,
    splits=None,
) -> PlaneRequest:
    """What ``plane`` with these arguments computes and where it keeps it (nothing is evaluated):
    every way of computing a plane (``plane``, ``preview.refine_plane``) stores it under this key."""
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
    return PlaneRequest(alphas, betas, center, basis, splits, settings, key)


def cached_plane(problem, d1: torch.Tensor, d2: torch.Tensor, **plane_args) -> Surface | None:
    """The plane ``plane(problem, d1, d2, **plane_args)`` would return if the cache holds all of it,
    else ``None``. Evaluates nothing (``plane_args``: those of ``plane_request``)."""
    return cache_mod.fetch(plane_request(problem, d1, d2, **plane_args).key, Surface.from_bytes)


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
    The grid is computed in tiles (``landscape_core.tiles``): chunks of about a second of
    work, each kept in the cache as it finishes and shared with other processes computing
    the same plane; values never depend on how the work was split (``landscape_core.blocks``).
    A cancelled run raises ``Cancelled`` saying how many points were kept; the next identical
    call computes only the rest. ``rows_per_chunk``: that many rows per block, tile and chunk
    (at most what the memory budget allows) instead of sizing tiles and chunks by time.
    """
    if rows_per_chunk is not None and (
        isinstance(rows_per_chunk, bool) or not isinstance(rows_per_chunk, (int, np.integer)) or rows_per_chunk < 1
    ):
        raise ValueError(f"rows_per_chunk must be a positive integer or None (automatic); got {rows_per_chunk!r}.")
    request = plane_request(problem, d1, d2, span, steps, center, span_y, steps_y, splits)
    alphas, betas, center, basis, splits, settings, key = request
    steps_y = len(betas)
    a, b = np.meshgrid(alphas, betas, indexing="ij")
    coeffs = np.stack([a.ravel(), b.ravel()], axis=1)  # row-major: point i * steps_y + j

    def build(values):
        grid_values = {q: v.reshape(steps, steps_y) for q, v in values.items()}
        return Surface(alphas=alphas, betas=betas, values=grid_values, settings=settings)

    block_rows = None if rows_per_chunk is None else int(min(rows_per_chunk, steps))
    run = TiledRun(
        problem,
        center,
        basis,
        coeffs,
        splits,
        key,
        build,
        Surface.from_bytes,
        use_cache,
        progress,
        cancel,
        steps_y,
        block_rows,
    )
    return run.run()
