"""Bottleneck distance between two persistence diagrams (0-dimensional, points ``(birth, death)``).

``d_B(D1, D2) = min over bijections g of max_p ||p - g(p)||_inf``, where every point may also
be matched to the diagonal at cost ``(death - birth) / 2`` (Cohen-Steiner, Edelsbrunner & Harer
2007). Points with ``death = inf`` (basins that never merge) are matched only among
themselves, by birth; if the two diagrams have different numbers of them the distance is
``inf``.

``bottleneck_distance(a, b)`` uses gudhi's bundled Hera (``gudhi.hera.bottleneck_distance`` with
``delta=0``, exact) when gudhi is installed (the optional extra ``topology``) and otherwise the
exact algorithm here: the answer is one of the finitely many candidate costs, found by
bisection over them with a feasibility test by bipartite matching
(``scipy.sparse.csgraph.maximum_bipartite_matching``). Feasible at ``r`` iff the points with
``(death - birth) / 2 > r`` (which cannot go to the diagonal) of each diagram can be matched
within ``r`` into the other; two one-sided matchings suffice (Mendelsohn-Dulmage). The tests
check the two against each other and against a brute-force matching.

Not ``gudhi.bottleneck_distance(..., e=0)``: in gudhi 3.13.0 its exact mode can stop its
augmenting-path search early and overstate the distance (0.7 where a matching of cost 0.35
exists, on two 3-point diagrams; fixed upstream in GUDHI pull request 1367); see the tests.
"""

from __future__ import annotations

import numpy as np
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import maximum_bipartite_matching

METHODS = ("auto", "gudhi", "exact")


def diagram(value) -> np.ndarray:
    """float64 ``(k, 2)`` points of a ``topology.Persistence`` or an array-like of ``(birth, death)``."""
    from .topology import Persistence

    points = value.pairs if isinstance(value, Persistence) else value
    try:
        points = np.asarray(points, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(
            f"a diagram must be a Persistence or an array of (birth, death) pairs; got {type(value).__name__}."
        ) from None
    if points.size == 0:
        return np.zeros((0, 2))
    if points.ndim != 2 or points.shape[1] != 2:
        raise ValueError(f"a diagram must have shape (k, 2) (birth, death); got {points.shape}.")
    if np.isnan(points).any() or np.isinf(points[:, 0]).any():
        raise ValueError("a diagram's births must be finite and no entry may be NaN.")
    if (points[:, 1] < points[:, 0]).any():
        raise ValueError("a diagram's deaths must not be below their births (sublevel-set persistence).")
    if np.isneginf(points[:, 1]).any():
        raise ValueError("a diagram's deaths must be finite or +inf.")
    return points


def bottleneck_distance(a, b, method: str = "auto") -> float:
    """Bottleneck distance between diagrams ``a`` and ``b`` (``Persistence`` or ``(k, 2)`` arrays).

    ``method``: ``"auto"`` (gudhi's Hera if gudhi is installed, else ``"exact"``), ``"gudhi"`` or
    ``"exact"`` (this module's own).
    Same units as the values (loss). ``inf`` when the numbers of never-dying points differ.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {list(METHODS)}; got {method!r}.")
    a, b = diagram(a), diagram(b)
    if method == "auto":
        method = "gudhi" if gudhi_available() else "exact"
    if method == "gudhi":
        if not gudhi_available():
            raise ValueError("method='gudhi' needs gudhi (pip install gudhi, or the extra 'topology'); use 'exact'.")
        import gudhi.hera

        a, b = a[a[:, 1] > a[:, 0]], b[b[:, 1] > b[:, 0]]  # Hera refuses diagonal points; they cost nothing
        if len(a) == 0 and len(b) == 0:
            return 0.0
        return float(gudhi.hera.bottleneck_distance(a, b, delta=0))
    return exact_bottleneck(a, b)


def gudhi_available() -> bool:
    try:
        import gudhi.hera  # noqa: F401
    except Exception:  # not installed or broken: the exact fallback is used
        return False
    return True


def exact_bottleneck(a: np.ndarray, b: np.ndarray) -> float:
    """The exact bottleneck distance by bisection over candidate costs (see the module docstring)."""
    a, b = diagram(a), diagram(b)
    ess_a, ess_b = np.sort(a[np.isinf(a[:, 1]), 0]), np.sort(b[np.isinf(b[:, 1]), 0])
    if len(ess_a) != len(ess_b):
        return float("inf")
    essential = float(np.max(np.abs(ess_a - ess_b))) if len(ess_a) else 0.0
    fa, fb = a[np.isfinite(a[:, 1])], b[np.isfinite(b[:, 1])]
    half_a, half_b = (fa[:, 1] - fa[:, 0]) / 2, (fb[:, 1] - fb[:, 0]) / 2
    cost = np.maximum(np.abs(fa[:, None, 0] - fb[None, :, 0]), np.abs(fa[:, None, 1] - fb[None, :, 1]))
    candidates = np.unique(np.concatenate([cost.ravel(), half_a, half_b, [0.0]]))
    candidates = candidates[candidates >= essential]
    if len(candidates) == 0 or _feasible(cost, half_a, half_b, essential):
        return essential
    lo, hi = 0, len(candidates) - 1  # candidates[hi] (the largest) is always feasible
    while lo < hi:
        mid = (lo + hi) // 2
        if _feasible(cost, half_a, half_b, candidates[mid]):
            hi = mid
        else:
            lo = mid + 1
    return float(candidates[lo])


def _feasible(cost: np.ndarray, half_a: np.ndarray, half_b: np.ndarray, r: float) -> bool:
    """Whether a matching of cost <= ``r`` exists: the heavy points of each side fit into the other."""
    edges = cost <= r
    heavy_a, heavy_b = half_a > r, half_b > r
    return _covers(edges[heavy_a], int(heavy_a.sum())) and _covers(edges[:, heavy_b].T, int(heavy_b.sum()))


def _covers(edges: np.ndarray, need: int) -> bool:
    """Whether every row of the boolean ``edges`` matrix can be matched to a distinct column."""
    if need == 0:
        return True
    if edges.shape[1] < need or not edges.any(axis=1).all():
        return False
    matching = maximum_bipartite_matching(csr_matrix(edges), perm_type="column")
    return int(np.sum(matching >= 0)) == need
