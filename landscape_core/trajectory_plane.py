"""The loss over the PCA plane of a trajectory, and how faithful that picture is per checkpoint.

A PCA plane shows the loss at ``center + c1 d1 + c2 d2``, but a checkpoint usually lies off
the plane (``Trajectory.residual_norms``): the loss drawn under it is the loss at its
projection, not its own. ``projection_gap`` reports both, so a reader can see where the picture
can be trusted (a gap near 0) and where not.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable

import numpy as np
import torch

from . import cache as cache_mod
from . import surface as surface_mod
from .evaluate import Progress, check_splits, evaluate_points
from .provenance import digest
from .results import ResultIO, Surface, csv_table
from .trajectory import Trajectory, as_rows, rows_digest

GAP_VERSION = 1  # bump when projection_gap changes its numbers


@dataclasses.dataclass(frozen=True)
class ProjectionGap(ResultIO):
    """Per checkpoint, its true values next to the values at its projection on the PCA plane.

    ``names``: n labels. ``coords``: float64 ``(n, 2)`` in the plane. ``true_values`` and
    ``projected_values``: ``{quantity: float64 (n,)}``; ``gap``: ``{quantity: projected - true}``.
    ``residual_norms``: float64 ``(n,)`` distance of each checkpoint from the plane.
    All values use the same buffers (the problem's, as the surface does).
    """

    names: list
    coords: np.ndarray
    true_values: dict
    projected_values: dict
    gap: dict
    residual_norms: np.ndarray
    settings: dict

    def to_csv(self) -> str:
        """One row per checkpoint and quantity: ``name,c1,c2,residual_norm,quantity,true,projected,gap``."""
        head = ["name", "c1", "c2", "residual_norm", "quantity", "true", "projected", "gap"]
        rows = (
            (name, *self.coords[i], self.residual_norms[i], q)
            + (self.true_values[q][i], self.projected_values[q][i], self.gap[q][i])
            for q in self.true_values
            for i, name in enumerate(self.names)
        )
        return csv_table(head, rows)


def _check_pca(trajectory: Trajectory) -> None:
    if not isinstance(trajectory, Trajectory) or trajectory.method != "pca" or trajectory.directions is None:
        raise ValueError("trajectory must be the result of trajectory.pca (it needs PCA directions and a centre).")
    if trajectory.directions.shape[0] != 2:
        raise ValueError(f"the PCA plane needs 2 components; this trajectory has {trajectory.directions.shape[0]}.")


def projection_gap(
    problem,
    trajectory: Trajectory,
    thetas,
    splits=None,
    progress: Progress | None = None,
    cancel: threading.Event | None = None,
    use_cache: bool = True,
) -> ProjectionGap:
    """True loss (and metrics) of each checkpoint vs. the loss at its projection on the PCA plane.

    ``thetas``: the same checkpoints ``trajectory`` was computed from (same order).
    Two calls of the evaluator: the n checkpoints, and the n projections ``center + coords @ directions``.
    Kept in the disk cache, keyed by the problem, the checkpoints' bytes, the plane and the splits.
    """
    _check_pca(trajectory)
    rows, names, _ = as_rows(thetas)
    if len(rows) != trajectory.coords.shape[0]:
        raise ValueError(
            f"thetas has {len(rows)} checkpoints; the trajectory was computed from {len(trajectory.names)}."
        )
    for i, row in enumerate(rows):
        problem.space.check(row, f"checkpoint {names[i]!r}")
    n = len(rows)
    splits = check_splits(problem, splits)
    settings = {
        "kind": "projection_gap",
        "trajectory": trajectory.settings,
        "splits": splits,
        "problem": problem.describe(),
    }
    key_settings = {
        **settings,
        "checkpoints": rows_digest(rows, names),
        "plane": [digest(trajectory.center), *(digest(d) for d in trajectory.directions)],
    }
    key = cache_mod.make_key("projection-gap", GAP_VERSION, key_settings)
    if use_cache and (hit := cache_mod.fetch(key, ProjectionGap.from_bytes)) is not None:
        if progress is not None:
            progress(2 * n, 2 * n)
        return hit
    report = None if progress is None else (lambda d, _t: progress(d, 2 * n))
    stacked = torch.stack(rows).to(problem.device, problem.dtype)
    zero = torch.zeros_like(stacked[0])
    true = evaluate_points(problem, zero, stacked, torch.eye(n, dtype=torch.float64), splits, report, cancel)
    report = None if progress is None else (lambda d, _t: progress(n + d, 2 * n))
    center = trajectory.center.to(problem.device, problem.dtype)
    basis = trajectory.directions.to(problem.device, problem.dtype)
    projected = evaluate_points(problem, center, basis, trajectory.coords, splits, report, cancel)
    result = ProjectionGap(
        names=list(names),
        coords=np.asarray(trajectory.coords, dtype=np.float64),
        true_values=true,
        projected_values=projected,
        gap={q: projected[q] - true[q] for q in true},
        residual_norms=np.asarray(trajectory.residual_norms, dtype=np.float64),
        settings=settings,
    )
    if use_cache:
        cache_mod.put(key, result.to_bytes())
    return result


def pca_geometry(problem, trajectory: Trajectory, margin: float = 0.2) -> dict:
    """Where ``pca_plane`` draws: ``{"d1", "d2", "center", "span", "span_y"}``, the PCA directions
    and centre on the problem's device and the two axes' spans (equal lengths) covering every
    checkpoint's coordinates plus ``margin`` of the path's extent on each side."""
    _check_pca(trajectory)
    if not (isinstance(margin, (int, float)) and 0 <= margin <= 10):
        raise ValueError(f"margin must be a number from 0 to 10 (fraction of the path's extent); got {margin!r}.")
    xy = np.asarray(trajectory.coords, dtype=np.float64)
    mid = (xy.min(axis=0) + xy.max(axis=0)) / 2
    half = (xy.max(axis=0) - xy.min(axis=0)).max() / 2 * (1 + 2 * margin)
    d1, d2 = trajectory.directions.to(problem.device, problem.dtype)
    return {
        "d1": d1,
        "d2": d2,
        "center": trajectory.center.to(problem.device, problem.dtype),
        "span": (mid[0] - half, mid[0] + half),
        "span_y": (mid[1] - half, mid[1] + half),
    }


def _with_path(result: Surface, trajectory: Trajectory) -> Surface:
    result.settings["trajectory"] = {
        "names": list(trajectory.names),
        "coords": np.asarray(trajectory.coords, dtype=np.float64).tolist(),
        "explained_variance_ratio": [float(v) for v in trajectory.explained_variance_ratio],
    }
    return result


def pca_plane(
    problem,
    trajectory: Trajectory,
    steps: int = 31,
    margin: float = 0.2,
    splits=None,
    progress: Progress | None = None,
    cancel: threading.Event | None = None,
    use_cache: bool = True,
    on_level: Callable[[Surface], None] | None = None,
    known: Surface | None = None,
) -> Surface:
    """The loss surface over the PCA plane, spanning every checkpoint's coordinates plus ``margin``.

    Equal spans on both axes (the directions are orthonormal, so the picture is undistorted);
    ``settings["trajectory"]`` holds the checkpoints' names and coordinates for drawing the path.
    ``on_level`` or ``known`` given: computed coarse to fine (``preview.refine_plane``: each pass
    handed to ``on_level``, the cells of ``known`` on the grid reused); the same values and the
    same cache entry either way.
    """
    geometry = pca_geometry(problem, trajectory, margin)
    args = {"span": geometry["span"], "span_y": geometry["span_y"], "center": geometry["center"], "splits": splits}
    if on_level is None and known is None:
        result = surface_mod.plane(
            problem,
            geometry["d1"],
            geometry["d2"],
            steps=steps,
            steps_y=steps,
            progress=progress,
            cancel=cancel,
            use_cache=use_cache,
            **args,
        )
    else:
        from .preview import refine_plane

        result = refine_plane(
            problem,
            geometry["d1"],
            geometry["d2"],
            steps=steps,
            on_level=on_level,
            known=known,
            progress=progress,
            cancel=cancel,
            use_cache=use_cache,
            **args,
        )
    return _with_path(result, trajectory)


def cached_pca_plane(problem, trajectory: Trajectory, steps: int = 31, margin: float = 0.2, splits=None):
    """The PCA plane ``pca_plane`` would return if the cache holds all of it, else ``None`` (nothing
    is evaluated)."""
    geometry = pca_geometry(problem, trajectory, margin)
    d1, d2 = geometry.pop("d1"), geometry.pop("d2")
    hit = surface_mod.cached_plane(problem, d1, d2, steps=steps, splits=splits, **geometry)
    return None if hit is None else _with_path(hit, trajectory)


def pca_preview(problem, trajectory: Trajectory, margin: float = 0.2, splits=None, cost=None) -> Surface:
    """A labelled preview of the PCA plane (``preview.preview_plane``: a coarse grid on a data
    subset, with its size and noise in the settings), over the same spans as ``pca_plane``."""
    from .preview import preview_plane

    geometry = pca_geometry(problem, trajectory, margin)
    d1, d2 = geometry.pop("d1"), geometry.pop("d2")
    return _with_path(preview_plane(problem, d1, d2, splits=splits, cost=cost, **geometry), trajectory)
