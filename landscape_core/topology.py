"""The landscape's topology: 0-dimensional sublevel-set persistence of a 2D grid of values.

Grow the sublevel set ``{cells: value <= t}`` as ``t`` rises. A basin is born at each local
minimum; when two basins first touch, at the level of the cell that joins them (a saddle of
the grid), the younger one (higher minimum) dies and the older lives on (the elder rule).
Each basin is one point ``(birth, death)`` of the persistence diagram; ``death - birth`` is its
persistence, the height of the lowest barrier out of it (Edelsbrunner, Letscher & Zomorodian
2002). The deepest basin never dies (``death = inf``).

Cells are those of gudhi's ``CubicalComplex(top_dimensional_cells=values)``: every grid value
is a square; its edges and corners enter with the lowest square that holds them, so two cells
touch when they share an edge *or a corner* (8-neighbourhood). Pairs of zero persistence are
left out, as gudhi's ``persistence()`` does by default. Cells that are not finite (NaN, +-inf:
diverged or not computed) are left out of the complex: a region cut off by them keeps its own
basin with ``death = inf``. Computed here by union-find in ``O(n log n)``; the tests check it
against gudhi on random grids, plateaus, holes and 1xN grids.

>>> import numpy as np
>>> p = persistence(np.array([[0.0, 2.0, 1.0]]))
>>> p.pairs.tolist()
[[0.0, inf], [1.0, 2.0]]
"""

from __future__ import annotations

import csv
import dataclasses
import io

import numpy as np

from .results import ResultIO, Surface

ALGORITHM_VERSION = 1
CONNECTIVITY = "8-neighbourhood (cells sharing an edge or a corner), as gudhi's top-dimensional cubical complex"


@dataclasses.dataclass(frozen=True)
class MergeTree:
    """The merge tree of the sublevel sets: leaves are basins, inner nodes are merges.

    Node ``n`` has ``levels[n]`` (the value at which it appears), ``cells[n]`` (float64 row,
    column of its grid cell) and ``parents[n]`` (the node it joins; a root is its own parent).
    The first ``k`` nodes are the basins, in the order of ``Persistence.pairs``; node
    ``k + m`` is the ``m``-th merge in order of level. ``basins[n]``: for a leaf its basin,
    for a merge the basin that survives it.
    """

    levels: np.ndarray
    cells: np.ndarray
    parents: np.ndarray
    basins: np.ndarray
    leaves: int

    @property
    def roots(self) -> np.ndarray:
        """Nodes that are their own parent: one per region of finite cells."""
        return np.flatnonzero(self.parents == np.arange(len(self.parents)))


@dataclasses.dataclass(frozen=True)
class Persistence(ResultIO):
    """0-dimensional persistence of a grid of values (see the module docstring).

    One row per basin, deepest first (sorted by birth, then by death, descending):

    ``pairs``: float64 ``(k, 2)``: ``(birth, death)``; ``death = inf`` for a basin that never
    merges (the global minimum, and one per region cut off by non-finite cells).
    ``minima``: int64 ``(k, 2)``: row and column of each basin's minimum cell.
    ``saddles``: float64 ``(k, 2)``: row and column of the cell whose arrival merged the basin
    into an older one; NaN for a basin that never merges.
    ``parents``: int64 ``(k,)``: the basin it merges into (the elder); a basin that never
    merges is its own parent.
    ``barriers``: float64 ``(k,)``: the lowest level at which the basin connects to the
    deepest basin (row 0): the minimax value over all paths between them; row 0's own birth
    for itself, ``inf`` when no path of finite cells joins them.
    ``alphas``, ``betas``: float64 coordinates of the rows and columns (grid indices for a
    plain array; ``betas`` has one entry 0.0 for a 1D line).
    ``settings``: how it was made (quantity, shape, left-out cells, connectivity, the surface's
    own settings when computed from one).
    """

    pairs: np.ndarray
    minima: np.ndarray
    saddles: np.ndarray
    parents: np.ndarray
    barriers: np.ndarray
    alphas: np.ndarray
    betas: np.ndarray
    settings: dict

    @property
    def births(self) -> np.ndarray:
        return self.pairs[:, 0]

    @property
    def deaths(self) -> np.ndarray:
        return self.pairs[:, 1]

    @property
    def persistence(self) -> np.ndarray:
        """``death - birth`` per basin (inf for the basins that never merge)."""
        return self.pairs[:, 1] - self.pairs[:, 0]

    @property
    def barrier_heights(self) -> np.ndarray:
        """``barriers - births``: how far each basin's floor lies below its way to the deepest one."""
        return self.barriers - self.pairs[:, 0]

    @property
    def barrier_saddles(self) -> np.ndarray:
        """float64 ``(k, 2)``: the cell at which each basin's way joins the deepest basin, i.e. where
        the level ``barriers[i]`` is reached (the saddle of the last basin on its elder chain);
        NaN for the deepest basin and for basins cut off from it."""
        out = np.full((len(self.pairs), 2), np.nan)
        for i in range(1, len(self.pairs)):
            j = i
            while self.parents[j] != j and self.parents[j] != 0:
                j = int(self.parents[j])
            if self.parents[j] == 0 and self.deaths[j] == self.barriers[i]:
                out[i] = self.saddles[j]
        return out

    def count(self, threshold: float = 0.0) -> int:
        """Number of basins whose persistence is strictly above ``threshold`` (>= 0)."""
        return int(np.sum(self.persistence > _threshold(threshold)))

    def basins(self, threshold: float = 0.0) -> np.ndarray:
        """Row indices of the basins whose persistence is strictly above ``threshold``."""
        return np.flatnonzero(self.persistence > _threshold(threshold))

    def coords(self, cells: np.ndarray) -> np.ndarray:
        """``(alpha, beta)`` float64 ``(m, 2)`` of grid cells ``(m, 2)`` (NaN rows stay NaN)."""
        cells = np.asarray(cells, dtype=np.float64).reshape(-1, 2)
        out = np.full(cells.shape, np.nan)
        ok = np.isfinite(cells).all(axis=1)
        rows, cols = cells[ok].astype(np.int64).T
        out[ok, 0], out[ok, 1] = self.alphas[rows], self.betas[cols]
        return out

    def merge_tree(self) -> MergeTree:
        """The merge tree (``MergeTree``): each merge joins the current tops of two subtrees."""
        k = len(self.pairs)
        order = [i for i in np.argsort(self.deaths, kind="stable") if np.isfinite(self.deaths[i])]
        levels = list(self.births)
        cells = [tuple(map(float, c)) for c in self.minima]
        parents = list(range(k))
        basins = list(range(k))
        top = list(range(k))  # per surviving basin: the top node of its subtree so far
        joined = list(range(k))  # union-find over basins: who absorbed whom

        def find(b: int) -> int:
            while joined[b] != b:
                b = joined[b]
            return b

        for i in order:
            j = find(int(self.parents[i]))  # the elder may itself have merged at this same level
            node = len(levels)
            levels.append(float(self.deaths[i]))
            cells.append(tuple(map(float, self.saddles[i])))
            parents.append(node)
            basins.append(j)
            parents[top[i]] = node
            parents[top[j]] = node
            top[j] = node
            joined[i] = j
        return MergeTree(
            levels=np.asarray(levels, dtype=np.float64),
            cells=np.asarray(cells, dtype=np.float64).reshape(-1, 2),
            parents=np.asarray(parents, dtype=np.int64),
            basins=np.asarray(basins, dtype=np.int64),
            leaves=k,
        )

    def to_csv(self) -> str:
        """One row per basin: birth, death, persistence, barrier, minimum and saddle cell and coordinates."""
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(
            [
                "basin",
                "birth",
                "death",
                "persistence",
                "barrier_to_deepest",
                "merges_into",
                "min_row",
                "min_col",
                "min_alpha",
                "min_beta",
                "saddle_row",
                "saddle_col",
                "saddle_alpha",
                "saddle_beta",
            ]
        )
        at_min, at_saddle = self.coords(self.minima), self.coords(self.saddles)
        for i, (birth, death) in enumerate(self.pairs):
            writer.writerow(
                [
                    i,
                    repr(float(birth)),
                    repr(float(death)),
                    repr(float(death - birth)),
                    repr(float(self.barriers[i])),
                    int(self.parents[i]),
                    *(int(v) for v in self.minima[i]),
                    *(repr(float(v)) for v in at_min[i]),
                    *("" if np.isnan(v) else int(v) for v in self.saddles[i]),
                    *(repr(float(v)) for v in at_saddle[i]),
                ]
            )
        return buffer.getvalue()


def _threshold(value) -> float:
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"threshold must be a number >= 0; got {value!r}.") from None
    if not value >= 0:
        raise ValueError(f"threshold must be a number >= 0; got {value!r}.")
    return value


def _grid(values_or_surface, quantity: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict]:
    """``(values (rows, cols), alphas, betas, settings)`` from an array or a ``Surface``."""
    if isinstance(values_or_surface, Surface):
        surface = values_or_surface
        if quantity not in surface.values:
            raise ValueError(f"quantity {quantity!r} is not in this surface; it holds {sorted(surface.values)}.")
        values = np.asarray(surface.values[quantity], dtype=np.float64)
        alphas = np.asarray(surface.alphas, dtype=np.float64)
        betas = np.asarray(surface.betas, dtype=np.float64) if surface.is_plane else np.zeros(1)
        if values.ndim == 1:
            values = values[:, None]
        settings = {"quantity": quantity, "source": "surface", "surface": surface.settings}
    else:
        try:
            values = np.asarray(values_or_surface, dtype=np.float64)
        except (TypeError, ValueError):
            raise ValueError(
                "values_or_surface must be a Surface or a 1D/2D array of numbers; "
                f"got {type(values_or_surface).__name__}."
            ) from None
        if values.ndim == 1:
            values = values[:, None]
        if values.ndim != 2:
            raise ValueError(f"values must be a 1D or 2D array; got shape {values.shape}.")
        alphas = np.arange(values.shape[0], dtype=np.float64)
        betas = np.arange(values.shape[1], dtype=np.float64)
        settings = {"quantity": quantity, "source": "array"}
    if values.shape != (len(alphas), len(betas)):
        raise ValueError(f"values have shape {values.shape} but the axes have {len(alphas)} x {len(betas)} points.")
    if values.size == 0:
        raise ValueError("values are empty (shape with a zero); persistence needs at least one cell.")
    return values, alphas, betas, settings


def persistence(values_or_surface, quantity: str = "train_loss") -> Persistence:
    """0-dimensional sublevel-set persistence of a grid (see the module docstring).

    ``values_or_surface``: a float array ``(rows, cols)`` (a 1D array is one column), or a
    ``Surface`` (a plane, or a line as one column), of which ``values[quantity]`` is used.
    Returns a ``Persistence``: ``.pairs`` ``(k, 2)`` and the basins with their minima,
    saddles, elder parents and barriers to the deepest basin; ``.merge_tree()``.
    """
    values, alphas, betas, settings = _grid(values_or_surface, quantity)
    rows, cols = values.shape
    flat = values.ravel()
    finite = np.isfinite(flat)
    order = np.flatnonzero(finite)[np.argsort(flat[finite], kind="stable")]  # by value, ties by index

    parent = np.full(flat.size, -1, dtype=np.int64)  # union-find over cells; -1 = not yet in
    oldest = np.zeros(flat.size, dtype=np.int64)  # per root: the minimum cell of its component
    rank_of = np.empty(flat.size, dtype=np.int64)
    rank_of[order] = np.arange(order.size)  # age: earlier in the order = older

    def find(c: int) -> int:
        root = c
        while parent[root] != root:
            root = parent[root]
        while parent[c] != root:
            parent[c], c = root, parent[c]
        return root

    deaths: dict[int, tuple[float, int, int]] = {}  # minimum cell -> (level, merging cell, elder minimum)
    for c in order.tolist():
        r, col = divmod(c, cols)
        parent[c] = c
        oldest[c] = c
        roots = set()
        for dr in (-1, 0, 1):
            for dc in (-1, 0, 1):
                rr, cc = r + dr, col + dc
                if (dr or dc) and 0 <= rr < rows and 0 <= cc < cols:
                    n = rr * cols + cc
                    if parent[n] >= 0:
                        roots.add(find(n))
        if not roots:
            continue
        elder = min(roots, key=lambda root: rank_of[oldest[root]])
        for root in roots:
            if root != elder:
                young = int(oldest[root])
                if flat[young] < flat[c]:  # zero-persistence pairs are left out (gudhi's default)
                    deaths[young] = (float(flat[c]), c, int(oldest[elder]))
                parent[root] = elder
        parent[c] = elder

    essential = [int(oldest[c]) for c in order.tolist() if parent[c] == c]
    minima = essential + list(deaths)
    level = {m: (float(flat[m]), np.inf) for m in essential}
    level.update({m: (float(flat[m]), d[0]) for m, d in deaths.items()})
    minima.sort(key=lambda m: (level[m][0], -level[m][1], rank_of[m]))
    index = {m: i for i, m in enumerate(minima)}

    k = len(minima)
    pairs = np.array([level[m] for m in minima], dtype=np.float64).reshape(k, 2)
    minimum_cells = np.array([divmod(m, cols) for m in minima], dtype=np.int64).reshape(k, 2)
    saddles = np.full((k, 2), np.nan)
    parents = np.arange(k, dtype=np.int64)
    for m, (_, cell, elder) in deaths.items():
        saddles[index[m]] = divmod(cell, cols)
        parents[index[m]] = index[elder]
    barriers = _barriers(pairs, parents)
    settings = {
        **settings,
        "algorithm": "union-find, elder rule",
        "algorithm_version": ALGORITHM_VERSION,
        "connectivity": CONNECTIVITY,
        "shape": list(np.shape(values)),
        "left_out_cells": int((~finite).sum()),
        "zero_persistence_pairs": "left out",
    }
    return Persistence(
        pairs=pairs,
        minima=minimum_cells,
        saddles=saddles,
        parents=parents,
        barriers=barriers,
        alphas=alphas,
        betas=betas,
        settings=settings,
    )


def _barriers(pairs: np.ndarray, parents: np.ndarray) -> np.ndarray:
    """Minimax level between each basin and basin 0: the highest death on its way up the elder tree.

    A basin's elder is alive when it absorbs the basin, so deaths only rise along the way and
    the last finite death before the root is the barrier; a root other than 0 means no path.
    """
    k = len(pairs)
    out = np.full(k, np.inf)
    for i in range(k):
        j, highest = i, pairs[i, 0] if i == 0 else -np.inf
        while parents[j] != j:
            highest = max(highest, pairs[j, 1])
            j = int(parents[j])
        if j == 0:
            out[i] = highest if i else pairs[0, 0]
    return out
