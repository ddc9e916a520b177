"""Contour lines of a gridded surface, by marching squares, in numpy.

``contour_segments(x, y, values, levels)`` returns, for each level, the line segments
where the bilinear-in-edges interpolation of ``values`` crosses it. Each grid cell is
classified by which of its four corners lie at or above the level (16 cases); a crossing
on a cell edge is placed by linear interpolation between the edge's two corner values,
so a surface that is linear in ``x`` and ``y`` gets exact contours. The two ambiguous
"saddle" cells are resolved by the mean of the four corners. Cells with a NaN or inf
corner (diverged or not computed) get no segment: contours never run through them.

Charts (Altair has no contour mark) draw each segment as a rule from ``(x1, y1)`` to
``(x2, y2)``.
"""

from __future__ import annotations

import numpy as np

# Cell edges: 0 = bottom (x_i..x_i+1 at y_j), 1 = right (x_i+1), 2 = top (y_j+1), 3 = left (x_i).
# Case bits: corner (i, j) = 1, (i+1, j) = 2, (i+1, j+1) = 4, (i, j+1) = 8, set when value >= level.
_SEGMENTS: dict[int, tuple[tuple[int, int], ...]] = {
    1: ((3, 0),),
    2: ((0, 1),),
    3: ((3, 1),),
    4: ((1, 2),),
    6: ((0, 2),),
    7: ((3, 2),),
    8: ((2, 3),),
    9: ((0, 2),),
    11: ((1, 2),),
    12: ((3, 1),),
    13: ((0, 1),),
    14: ((3, 0),),
}
# Saddles: (segments when the cell mean is >= level, segments when it is below).
_SADDLES: dict[int, tuple[tuple[tuple[int, int], ...], tuple[tuple[int, int], ...]]] = {
    5: (((0, 1), (2, 3)), ((3, 0), (1, 2))),
    10: (((3, 0), (1, 2)), ((0, 1), (2, 3))),
}


def _check(x, y, values) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    values = np.asarray(values, dtype=np.float64)
    if x.ndim != 1 or y.ndim != 1 or len(x) < 2 or len(y) < 2:
        raise ValueError(f"x and y must be 1-D with at least 2 points; got shapes {x.shape} and {y.shape}.")
    if values.shape != (len(x), len(y)):
        raise ValueError(f"values must have shape (len(x), len(y)) = {(len(x), len(y))}; got {values.shape}.")
    if not (np.all(np.diff(x) > 0) and np.all(np.diff(y) > 0)):
        raise ValueError("x and y must be strictly increasing.")
    return x, y, values


def _edge_points(x, y, values, level) -> np.ndarray:
    """Crossing point on each of the 4 edges of every cell: float64 ``(4, nx-1, ny-1, 2)``.

    Entries for edges without a crossing are meaningless (never selected)."""
    z00, z10, z11, z01 = values[:-1, :-1], values[1:, :-1], values[1:, 1:], values[:-1, 1:]
    x0, x1 = x[:-1, None], x[1:, None]
    y0, y1 = y[None, :-1], y[None, 1:]
    shape = z00.shape

    def frac(a, b):
        with np.errstate(divide="ignore", invalid="ignore"):
            return (level - a) / (b - a)

    points = np.empty((4, *shape, 2))
    t = frac(z00, z10)
    points[0, ..., 0], points[0, ..., 1] = x0 + t * (x1 - x0), np.broadcast_to(y0, shape)
    t = frac(z10, z11)
    points[1, ..., 0], points[1, ..., 1] = np.broadcast_to(x1, shape), y0 + t * (y1 - y0)
    t = frac(z01, z11)
    points[2, ..., 0], points[2, ..., 1] = x0 + t * (x1 - x0), np.broadcast_to(y1, shape)
    t = frac(z00, z01)
    points[3, ..., 0], points[3, ..., 1] = np.broadcast_to(x0, shape), y0 + t * (y1 - y0)
    return points


def contour_segments(x, y, values, levels) -> dict[float, np.ndarray]:
    """Contour segments of ``values`` (``values[i, j]`` at ``(x[i], y[j])``) for each level.

    ``x``: ``(nx,)`` and ``y``: ``(ny,)`` strictly increasing; ``values``: ``(nx, ny)``.
    Returns ``{level: float64 array (n_segments, 2, 2)}``, segment ``k`` running from
    ``(s[k, 0, 0], s[k, 0, 1])`` to ``(s[k, 1, 0], s[k, 1, 1])`` in ``(x, y)`` coordinates.
    """
    x, y, values = _check(x, y, values)
    finite = np.isfinite(values)
    valid = finite[:-1, :-1] & finite[1:, :-1] & finite[1:, 1:] & finite[:-1, 1:]
    out: dict[float, np.ndarray] = {}
    for level in np.atleast_1d(np.asarray(levels, dtype=np.float64)):
        level = float(level)
        with np.errstate(invalid="ignore"):
            high = values >= level
        case = high[:-1, :-1].astype(np.int8) + 2 * high[1:, :-1] + 4 * high[1:, 1:] + 8 * high[:-1, 1:]
        case = np.where(valid, case, 0)
        points = _edge_points(x, y, values, level)
        pieces = []
        for c, segments in _SEGMENTS.items():
            cells = np.nonzero(case == c)
            for a, b in segments:
                pieces.append(np.stack([points[a][cells], points[b][cells]], axis=1))
        if np.any((case == 5) | (case == 10)):
            mean = (values[:-1, :-1] + values[1:, :-1] + values[1:, 1:] + values[:-1, 1:]) / 4
            for c, (joined, split) in _SADDLES.items():
                for above, segments in ((True, joined), (False, split)):
                    cells = np.nonzero((case == c) & ((mean >= level) == above))
                    for a, b in segments:
                        pieces.append(np.stack([points[a][cells], points[b][cells]], axis=1))
        out[level] = np.concatenate(pieces) if pieces else np.empty((0, 2, 2))
    return out


def auto_levels(values, count: int = 10, log: bool = False) -> np.ndarray:
    """``count`` contour levels strictly inside the finite range of ``values``.

    Evenly spaced, or evenly spaced in log10 when ``log`` (positive values only).
    Returns an empty array when the finite values are constant or absent.
    """
    if not isinstance(count, (int, np.integer)) or count < 1:
        raise ValueError(f"count must be a positive integer; got {count!r}.")
    finite = np.asarray(values, dtype=np.float64)
    finite = finite[np.isfinite(finite)]
    if log:
        finite = finite[finite > 0]
    if finite.size == 0:
        return np.empty(0)
    lo, hi = float(finite.min()), float(finite.max())
    if not hi > lo:
        return np.empty(0)
    if log:
        return np.logspace(np.log10(lo), np.log10(hi), count + 2)[1:-1]
    return np.linspace(lo, hi, count + 2)[1:-1]
