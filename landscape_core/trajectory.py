"""Two-dimensional views of a training trajectory: PCA, UMAP and an autoencoder.

Input: the checkpoints of one run as an ``(n, P)`` tensor, a list of flat ``(P,)`` tensors or a
list of ``Checkpoint``s. Every view returns a ``Trajectory`` with 2-D coordinates per checkpoint
and ``trustworthiness`` (scikit-learn's definition, Venna & Kaski 2001: 1 when every point's
nearest neighbours in the picture are also its neighbours in parameter space), so the views can
be judged side by side; PCA and the autoencoder also report their reconstruction error.

PCA (``PCAVariant``): by default Li et al. 2018's (section 7, and their released code): a centred
PCA (scikit-learn's) of the differences ``theta_i - theta_final`` with biases and normalization
parameters removed, the plane drawn through the final point and each checkpoint placed at the
projection of its difference; ``"uncentred"`` is the SVD of the differences themselves (the plane
that best fits the checkpoints among planes through the reference point).

Memory: nothing of size ``n x n x P`` or ``P x P`` is formed. PCA works on ``n x n`` Gram
matrices of the differences, accumulated in float64 over column chunks of the checkpoints;
distances for trustworthiness and UMAP come from the same Gram matrices.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterable
from enum import Enum

import numpy as np
import torch

from . import cache as cache_mod
from .provenance import register
from .space import ParamKind
from .trajectory_base import (  # noqa: F401  (Trajectory and the row helpers are part of this module's API)
    CHUNK_BYTES,
    Trajectory,
    _block,
    _chunks,
    as_rows,
    default_trust_neighbors,
    distances_from_gram,
    gram,
    rows_digest,
    trustworthiness,
)

log = logging.getLogger(__name__)

UMAP_VERSION = 1  # bump when the UMAP view changes its numbers


def _reference(rows, reference) -> tuple[torch.Tensor, str]:
    if isinstance(reference, torch.Tensor):
        if reference.shape != rows[0].shape:
            raise ValueError(f"reference has shape {tuple(reference.shape)}; checkpoints have {tuple(rows[0].shape)}.")
        return reference.detach().to("cpu", torch.float64), "custom"
    if reference == "final":
        return rows[-1].to("cpu", torch.float64), "final"
    if reference == "first":
        return rows[0].to("cpu", torch.float64), "first"
    if reference == "mean":
        mean = torch.zeros(rows[0].shape[0], dtype=torch.float64)
        for sl in _chunks(rows[0].shape[0], len(rows)):
            mean[sl] = _block(rows, sl).mean(dim=0)
        return mean, "mean"
    if isinstance(reference, int) and not isinstance(reference, bool) and -len(rows) <= reference < len(rows):
        return rows[reference].to("cpu", torch.float64), f"checkpoint {reference % len(rows)}"
    raise ValueError(
        f"reference must be 'final', 'first', 'mean', a checkpoint index or a (P,) tensor; got {reference!r}."
    )


# -- PCA ---------------------------------------------------------------------------------------
class PCAVariant(str, Enum):
    """Which PCA of a trajectory (see the module docstring)."""

    LI2018 = "li2018"  # centred PCA of theta_i - reference (Li et al. 2018), the default
    UNCENTRED = "uncentred"  # SVD of theta_i - reference, no centring


PCA_DEFINITIONS = {
    PCAVariant.LI2018: "Li et al. 2018: centred PCA of theta_i - reference; checkpoints placed at the projections "
    "of theta_i - reference onto the components",
    PCAVariant.UNCENTRED: "uncentred: SVD of theta_i - reference (the best-fitting plane through the reference)",
}


def _kept(space, ignore: Iterable[str], size: int) -> tuple[torch.Tensor | None, list[str]]:
    """``(mask, ignored kinds)``: float64 ``(P,)`` with 0 on the ignored kinds' coordinates, or ``None``."""
    ignore = (ignore,) if isinstance(ignore, str) else tuple(ignore)
    allowed = [k.value for k in ParamKind if k is not ParamKind.WEIGHT]
    for k in ignore:
        if k not in allowed:
            raise ValueError(f"ignore may name {allowed}; got {k!r} in ignore={ignore!r}.")
    if not ignore:
        return None, []
    space = getattr(space, "space", space)  # a Problem or its ParamSpace
    if space is None:
        raise ValueError(
            f"removing {list(ignore)} needs the parameter space: pass space=problem.space (or the problem), "
            "or ignore=() to keep every parameter."
        )
    if space.size != size:
        raise ValueError(f"space has {space.size} parameters but the checkpoints have {size}.")
    mask = torch.ones(size, dtype=torch.float64)
    for p in space.params:
        if p.kind.value in ignore:
            mask[p.slice] = 0.0
    return mask, sorted(ignore)


def pca(
    thetas,
    reference="final",
    n_components: int = 2,
    n_neighbors: int | None = None,
    variant: PCAVariant | str = "li2018",
    ignore: Iterable[str] = ("bias", "norm"),
    space=None,
) -> Trajectory:
    """PCA of the differences ``theta_i - reference`` over the checkpoints.

    ``variant``: ``"li2018"`` (default; Li et al. 2018, section 7): the principal components of the
    differences after subtracting their mean (scikit-learn's PCA); ``"uncentred"``: of the
    differences themselves. ``ignore``: kinds of parameters removed from the differences before the
    PCA (``"bias"``, ``"norm"``; Li et al. remove both), zero in the directions; needs ``space`` (the
    problem or its ``ParamSpace``) to know which coordinates they are; ``ignore=()`` keeps all.
    ``coords[i]``: checkpoint i's projection ``(theta_i - reference) . directions``, so the plane is
    drawn through ``center = reference`` and checkpoint i sits at ``coords[i]``;
    ``explained_variance_ratio[j]``: direction j's share of the variance the PCA saw (centred or not);
    ``residual_norms``/``reconstruction_error``: what the plane misses of ``|theta_i - reference|``
    (every parameter). Computed from ``n x n`` Gram matrices. Directions are registered
    (``directions.provenance``).

    >>> traj = pca(workspace.checkpoints, space=problem)                  # doctest: +SKIP
    >>> surface.plane(problem, *traj.directions, center=traj.center)      # doctest: +SKIP
    """
    rows, names, steps = as_rows(thetas)
    n = len(rows)
    if not isinstance(n_components, int) or not 1 <= n_components <= n - 1:
        raise ValueError(f"n_components must be an integer from 1 to n - 1 = {n - 1}; got {n_components!r}.")
    try:
        variant = PCAVariant(variant)
    except ValueError:
        raise ValueError(f"variant must be one of {[v.value for v in PCAVariant]}; got {variant!r}.") from None
    size = rows[0].shape[0]
    mask, ignored = _kept(space, ignore, size)
    center, ref_name = _reference(rows, reference)
    G_full = torch.zeros(n, n, dtype=torch.float64)  # every parameter: distances and residuals
    G = torch.zeros(n, n, dtype=torch.float64)  # what the PCA sees (ignored kinds removed)
    for sl in _chunks(size, n):
        block = _block(rows, sl, offset=center)
        G_full += block @ block.T
        if mask is not None:
            block = block * mask[sl]
        G += block @ block.T
    G_full, G = G_full.numpy(), G.numpy()
    total = float(np.trace(G_full))
    if not total > 0:
        raise ValueError("all checkpoints are identical to the reference; there is no trajectory to project.")
    # centring: C = J D with J = I - 11^T / n; the components are eigenvectors of J G J
    J = np.eye(n) - (1.0 / n if variant is PCAVariant.LI2018 else 0.0)
    K = J @ G @ J
    seen = float(np.trace(K))
    if not seen > 0:
        what = "after removing " + ", ".join(ignored) if ignored else "around their mean"
        raise ValueError(f"the checkpoints do not differ {what}; there is no trajectory to project.")
    evals, evecs = np.linalg.eigh(K)
    order = np.argsort(evals)[::-1]
    evals, evecs = np.clip(evals[order], 0.0, None), evecs[:, order]
    k = n_components
    if evals[k - 1] <= 1e-12 * seen:
        rank = int((evals > 1e-12 * seen).sum())
        raise ValueError(
            f"the checkpoints span only {rank} dimension(s) around the reference; cannot find {k} principal directions."
        )
    U, s = evecs[:, :k], np.sqrt(evals[:k])
    weights = J @ U / s  # (n, k): direction_j = sum_i weights[i, j] (masked theta_i - center)
    coords = G @ weights  # (theta_i - center) . direction_j (directions are 0 on ignored coordinates)
    signs = np.sign(coords[np.argmax(np.abs(coords), axis=0), np.arange(k)])
    signs[signs == 0] = 1.0
    coords, weights = coords * signs, weights * signs
    w = torch.from_numpy(weights)
    directions = torch.zeros(k, size, dtype=torch.float64)
    for sl in _chunks(size, n):
        block = _block(rows, sl, offset=center)
        if mask is not None:
            block = block * mask[sl]
        directions[:, sl] = w.T @ block
    dtype, device = rows[0].dtype, rows[0].device
    directions = directions.to(device, dtype)
    evr = evals[:k] / seen
    residual = np.sqrt(np.maximum(np.diag(G_full) - (coords**2).sum(axis=1), 0.0))
    trust_k = default_trust_neighbors(n) if n_neighbors is None else n_neighbors
    trust = trustworthiness(distances_from_gram(G_full), coords, trust_k)
    settings = {
        "kind": "trajectory",
        "method": "pca",
        "variant": variant.value,
        "definition": PCA_DEFINITIONS[variant],
        "ignored": ignored,
        "reference": ref_name,
        "n_components": k,
        "checkpoints": n,
        "parameters": int(size),
        "n_neighbors_trust": trust_k,
        "explained_variance_ratio": [float(v) for v in evr],
    }
    register(
        directions,
        {
            "kind": "pca",
            "variant": variant.value,
            "ignored": ignored,
            "reference": ref_name,
            "checkpoints": n,
            "evr": settings["explained_variance_ratio"],
        },
    )
    return Trajectory(
        method="pca",
        coords=coords,
        names=names,
        steps=steps,
        trustworthiness=trust,
        settings=settings,
        reconstruction_error=float(max(0.0, 1.0 - (coords**2).sum() / total)),
        explained_variance_ratio=evr,
        directions=directions,
        center=center.to(device, dtype),
        residual_norms=residual,
    )


# -- UMAP --------------------------------------------------------------------------------------
def umap(
    thetas, n_neighbors: int | None = None, seed: int = 0, min_dist: float = 0.1, use_cache: bool = True
) -> Trajectory:
    """UMAP (McInnes et al. 2018, umap-learn) of the checkpoints on their exact Euclidean distances.

    ``n_neighbors``: UMAP's neighbourhood size, ``2 <= n_neighbors < n``; default ``min(15, n - 1)``.
    Deterministic for a given ``seed``. Needs at least 3 checkpoints. Kept in the disk cache
    (UMAP's first call in a process compiles for seconds), keyed by the checkpoints' bytes.
    """
    rows, names, steps = as_rows(thetas)
    n = len(rows)
    if n_neighbors is None:
        n_neighbors = min(15, n - 1)
    if isinstance(n_neighbors, bool) or not isinstance(n_neighbors, int) or not 2 <= n_neighbors < n:
        raise ValueError(
            f"n_neighbors must be an integer with 2 <= n_neighbors < n (number of checkpoints = {n}); "
            f"got {n_neighbors!r}. UMAP needs more checkpoints than neighbours."
        )
    key = cache_mod.make_key(
        "trajectory-umap",
        UMAP_VERSION,
        {"checkpoints": rows_digest(rows, names, steps), "n_neighbors": n_neighbors, "min_dist": float(min_dist)}
        | {"seed": int(seed)},
    )
    if use_cache and (hit := cache_mod.fetch(key, Trajectory.from_bytes)) is not None:
        return hit
    G = gram(rows, offset=rows[-1].to("cpu", torch.float64))
    distances = distances_from_gram(G)
    import umap as umap_learn

    reducer = umap_learn.UMAP(
        n_components=2,
        n_neighbors=n_neighbors,
        min_dist=min_dist,
        metric="precomputed",
        random_state=int(seed),
        init="spectral" if n > 4 else "random",
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        coords = np.asarray(reducer.fit_transform(distances), dtype=np.float64)
    trust_k = default_trust_neighbors(n)
    settings = {
        "kind": "trajectory",
        "method": "umap",
        "n_neighbors": n_neighbors,
        "min_dist": float(min_dist),
        "seed": int(seed),
        "checkpoints": n,
        "parameters": int(rows[0].shape[0]),
        "n_neighbors_trust": trust_k,
    }
    trust = trustworthiness(distances, coords, trust_k)
    result = Trajectory(
        method="umap", coords=coords, names=names, steps=steps, trustworthiness=trust, settings=settings
    )
    if use_cache:
        cache_mod.put(key, result.to_bytes())
    return result


# -- autoencoder -----------------------------------------------------------------------------
def autoencoder(
    thetas, dim: int = 2, seed: int = 0, hidden: int = 32, epochs: int = 2000, lr: float = 1e-2
) -> Trajectory:
    """A small torch autoencoder as a non-linear view (``trajectory_autoencoder.autoencoder``)."""
    from .trajectory_autoencoder import autoencoder as _autoencoder

    return _autoencoder(thetas, dim=dim, seed=seed, hidden=hidden, epochs=epochs, lr=lr)
