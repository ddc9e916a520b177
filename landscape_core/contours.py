"""Contour lines of a gridded surface, traced by contourpy (the engine behind matplotlib's contours).

``contour_lines(x, y, values, levels)`` returns, for each level, the polylines where the
surface crosses it: a crossing on a cell edge is placed by linear interpolation between the
edge's two corner values, so a surface that is linear in ``x`` and ``y`` gets exact
contours; a closed line ends where it starts. Cells with a NaN or inf corner (diverged or
not computed) are masked whole (no corner masking): contours never run through them.
``contour_segments`` gives the same lines cut into segments.

Charts (Altair has no contour mark) draw each polyline as one line mark, its points in order:
one row per vertex instead of one rule per cell crossing (smaller payloads at 101x101).
"""

from __future__ import annotations

import numpy as np


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


def contour_lines(x, y, values, levels) -> dict[float, list[np.ndarray]]:
    """Contour polylines of ``values`` (``values[i, j]`` at ``(x[i], y[j])``) for each level.

    ``x``: ``(nx,)`` and ``y``: ``(ny,)`` strictly increasing; ``values``: ``(nx, ny)``.
    Returns ``{level: [float64 array (m, 2) of (x, y) points, ...]}``; a closed line repeats
    its first point at the end.
    """
    from contourpy import LineType, contour_generator

    x, y, values = _check(x, y, values)
    z = np.ma.masked_invalid(values.T)  # contourpy indexes z[row = y, column = x]
    generator = contour_generator(
        x, y, z, name="serial", line_type=LineType.Separate, corner_mask=False, quad_as_tri=False
    )
    out: dict[float, list[np.ndarray]] = {}
    for level in np.atleast_1d(np.asarray(levels, dtype=np.float64)):
        out[float(level)] = [np.asarray(line, dtype=np.float64) for line in generator.lines(float(level))]
    return out


def contour_segments(x, y, values, levels) -> dict[float, np.ndarray]:
    """``contour_lines`` cut into segments: ``{level: float64 array (n_segments, 2, 2)}``, segment
    ``k`` running from ``(s[k, 0, 0], s[k, 0, 1])`` to ``(s[k, 1, 0], s[k, 1, 1])``."""
    out: dict[float, np.ndarray] = {}
    for level, lines in contour_lines(x, y, values, levels).items():
        pieces = [np.stack([line[:-1], line[1:]], axis=1) for line in lines if len(line) > 1]
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
