"""What every trajectory view shares: the ``Trajectory`` result, the checkpoints as rows, and
distances and trustworthiness from streamed Gram matrices.

``trajectory`` (PCA, UMAP) and ``trajectory_autoencoder`` both build on this module and it on
neither, so the views import one way. Nothing of size ``n x n x P`` is formed: Gram matrices are
accumulated in float64 over column chunks of ``CHUNK_BYTES``.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Sequence

import numpy as np
import torch

from .identity import raw_bytes
from .results import ResultIO, csv_table
from .workspace import Checkpoint

CHUNK_BYTES = 64 * 2**20  # float64 bytes of one column chunk of the checkpoint matrix


@dataclasses.dataclass(frozen=True)
class Trajectory(ResultIO):
    """A 2-D (or k-D) picture of n checkpoints.

    ``method``: ``"pca"``, ``"umap"`` or ``"autoencoder"``. ``coords``: float64 ``(n, k)``.
    ``names``/``steps``: per checkpoint (``steps`` entries may be ``None``).
    ``trustworthiness``: in [0, 1], with ``settings["n_neighbors_trust"]`` neighbours.
    ``reconstruction_error``: fraction of squared distance (PCA: from ``center``; autoencoder: of the
    standardized, mean-centred checkpoints) that the picture does not hold; ``None`` for UMAP.
    PCA only: ``explained_variance_ratio`` float64 ``(k,)``; ``directions`` ``(k, P)`` orthonormal
    tensor and ``center`` ``(P,)``, so that ``surface.plane(problem, *directions, center=center)``
    draws the loss of the PCA plane with checkpoint i at ``coords[i]``; ``residual_norms`` float64
    ``(n,)``, each checkpoint's distance from that plane.
    """

    method: str
    coords: np.ndarray
    names: list
    steps: list
    trustworthiness: float
    settings: dict
    reconstruction_error: float | None = None
    explained_variance_ratio: np.ndarray | None = None
    directions: torch.Tensor | None = None
    center: torch.Tensor | None = None
    residual_norms: np.ndarray | None = None

    def to_csv(self) -> str:
        """One row per checkpoint: ``name,step,c1,c2[,residual_norm]``."""
        k = self.coords.shape[1]
        header = ["name", "step", *(f"c{j + 1}" for j in range(k))]
        if self.residual_norms is not None:
            header.append("residual_norm")
        rows = []
        for i, name in enumerate(self.names):
            row = [str(name), self.steps[i], *(float(c) for c in self.coords[i])]
            if self.residual_norms is not None:
                row.append(float(self.residual_norms[i]))
            rows.append(row)
        return csv_table(header, rows)


# -- inputs ----------------------------------------------------------------------------------
def as_rows(thetas, minimum: int = 3, what: str = "thetas") -> tuple[list[torch.Tensor], list[str], list]:
    """``(rows, names, steps)`` from an ``(n, P)`` tensor or a list of ``(P,)`` tensors / ``Checkpoint``s.

    Raises ``ValueError`` for fewer than ``minimum`` checkpoints, ragged sizes or NaN/inf weights.
    """
    if isinstance(thetas, torch.Tensor):
        if thetas.dim() != 2:
            raise ValueError(f"{what} must be an (n, P) tensor or a list; got shape {tuple(thetas.shape)}.")
        items = list(thetas)
        names, steps = [f"#{i}" for i in range(len(items))], [i for i in range(len(items))]
    elif isinstance(thetas, Sequence):
        items, names, steps = [], [], []
        for i, item in enumerate(thetas):
            if isinstance(item, Checkpoint):
                items.append(item.theta)
                names.append(item.name)
                steps.append(item.step)
            elif isinstance(item, torch.Tensor) and item.dim() == 1:
                items.append(item)
                names.append(f"#{i}")
                steps.append(i)
            else:
                raise ValueError(f"{what}[{i}] must be a Checkpoint or a flat (P,) tensor; got {type(item).__name__}.")
    else:
        raise ValueError(f"{what} must be an (n, P) tensor or a list of Checkpoints; got {type(thetas).__name__}.")
    if len(items) < minimum:
        raise ValueError(f"{what}: a trajectory view needs at least {minimum} checkpoints; got {len(items)}.")
    size = items[0].shape[0]
    for i, row in enumerate(items):
        if row.shape != (size,):
            raise ValueError(f"{what}: checkpoint {names[i]!r} has shape {tuple(row.shape)}; the first has ({size},).")
        if not torch.isfinite(row).all():
            raise ValueError(f"{what}: checkpoint {names[i]!r} has NaN or inf weights; it cannot be placed.")
    return [r.detach() for r in items], names, steps


def rows_digest(rows, names=(), steps=()) -> str:
    """sha256 over the checkpoints' float64 bytes, names and steps (their identity in cache keys)."""
    h = hashlib.sha256(repr((list(map(str, names)), list(map(str, steps)))).encode())
    for row in rows:
        h.update(raw_bytes(row.detach().to("cpu", torch.float64)))
    return h.hexdigest()


def _chunks(size: int, n: int):
    width = max(1, CHUNK_BYTES // (8 * max(n, 1)))
    for start in range(0, size, width):
        yield slice(start, min(start + width, size))


def _block(rows, sl: slice, offset=None, scale=None) -> torch.Tensor:
    """Columns ``sl`` of the checkpoint matrix as float64 CPU ``(n, w)``, minus ``offset``, divided by ``scale``."""
    block = torch.stack([r[sl].to("cpu", torch.float64) for r in rows])
    if offset is not None:
        block = block - offset[sl]
    if scale is not None:
        block = block / scale[sl]
    return block


def gram(rows, offset=None, scale=None) -> np.ndarray:
    """``G[i, j] = <(r_i - offset) / scale, (r_j - offset) / scale>`` in float64, ``(n, n)``, streamed over columns."""
    n = len(rows)
    G = torch.zeros(n, n, dtype=torch.float64)
    for sl in _chunks(rows[0].shape[0], n):
        block = _block(rows, sl, offset, scale)
        G += block @ block.T
    return G.numpy()


def distances_from_gram(G: np.ndarray) -> np.ndarray:
    """Euclidean distance matrix ``(n, n)`` of the vectors whose Gram matrix is ``G``."""
    d = np.diag(G)
    sq = np.maximum(d[:, None] + d[None, :] - 2.0 * G, 0.0)
    np.fill_diagonal(sq, 0.0)
    return np.sqrt(sq)


def default_trust_neighbors(n: int) -> int:
    """Neighbours for trustworthiness: 5, fewer for small n (scikit-learn needs ``k < n / 2``)."""
    return max(1, min(5, (n - 1) // 2))


def trustworthiness(distances: np.ndarray, coords: np.ndarray, n_neighbors: int | None = None) -> float:
    """scikit-learn's trustworthiness of ``coords`` ``(n, k)`` for the high-dimensional ``distances`` ``(n, n)``."""
    from sklearn.manifold import trustworthiness as sk_trust

    n = distances.shape[0]
    k = default_trust_neighbors(n) if n_neighbors is None else int(n_neighbors)
    if not 1 <= k < n / 2:
        raise ValueError(f"n_neighbors for trustworthiness must satisfy 1 <= k < n/2 = {n / 2}; got {k}.")
    return float(sk_trust(distances, np.asarray(coords, dtype=np.float64), n_neighbors=k, metric="precomputed"))
