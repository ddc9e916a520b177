"""The weight-space landscape of a text model's embedding matrix alone.

Directions are filter-normalized random directions (Li et al. 2018) restricted by a parameter
mask to the embedding matrix: each row (one token's vector) is a filter, scaled to the norm
of that row of ``theta0``; every other parameter stays exactly where it is. The surfaces are
``surface.line`` / ``surface.plane`` along them, so they are cached and carry their settings.
"""

from __future__ import annotations

import threading

import torch

from . import directions as directions_mod
from . import surface as surface_mod
from .embeddings import EmbeddingAccess, Progress


def embedding_directions(problem, count: int = 2, seed: int = 0, embedding: str | None = None) -> torch.Tensor:
    """Filter-normalized random directions ``(count, P)`` that move only the embedding matrix.

    Each row of the matrix (one token's vector) is a filter: the direction's row has the
    norm of ``theta0``'s row, so the padding row (all zeros) never moves. Every other
    parameter is exactly zero.
    """
    name = EmbeddingAccess(problem, None, embedding).weight_name
    mask = problem.space.mask(include=name)
    d = directions_mod.random(problem, count=count, norm="filter", ignore=(), seed=seed, mask=mask)
    settings = {"kind": "random", "norm": "filter", "seed": int(seed), "count": count, "mask_include": name}
    return directions_mod.register(d, settings)


def embedding_surface(
    problem,
    plane: bool = False,
    span: tuple[float, float] = (-1.0, 1.0),
    steps: int = 31,
    seed: int = 0,
    embedding: str | None = None,
    splits=None,
    progress: Progress | None = None,
    cancel: threading.Event | None = None,
):
    """Loss of the problem when only the embedding matrix moves, along filter-normalized
    directions (``surface.line``, or ``surface.plane`` with ``plane=True``); a ``Surface``."""
    d = embedding_directions(problem, 2 if plane else 1, seed, embedding)
    if plane:
        return surface_mod.plane(problem, d[0], d[1], span, steps, splits=splits, progress=progress, cancel=cancel)
    return surface_mod.line(problem, d[0], span, steps, splits=splits, progress=progress, cancel=cancel)
