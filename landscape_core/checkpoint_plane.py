"""The plane through three checkpoints (Garipov et al. 2018, figure 1), drawn with each model on it.

Axes: ``e1 = (theta_b - theta_a) / |theta_b - theta_a|`` and ``e2`` the unit part of
``theta_c - theta_a`` orthogonal to ``e1`` (Gram-Schmidt in float64). Both have norm 1, so the
picture has equal scale on both axes (a unit on either axis is a unit of Euclidean distance in
parameter space) and the three models sit at their true relative distances: A at (0, 0), B at
(|b - a|, 0), C above the first axis.
"""

from __future__ import annotations

import threading

import numpy as np
import torch

from . import surface as surface_mod
from .evaluate import Progress
from .provenance import digest, register
from .results import Surface


def through(theta_a: torch.Tensor, theta_b: torch.Tensor, theta_c: torch.Tensor) -> torch.Tensor:
    """Orthonormal ``(2, P)`` axes of the plane through three points, origin ``theta_a`` (see module docstring).

    Raises ``ValueError`` if two points coincide or the three are collinear (no plane).
    """
    points = [t.detach() for t in (theta_a, theta_b, theta_c)]
    for name, t in zip("abc", points):
        if not isinstance(t, torch.Tensor) or t.dim() != 1:
            raise ValueError(f"theta_{name} must be a flat (P,) tensor; got {getattr(t, 'shape', type(t))}.")
        if t.shape != points[0].shape:
            raise ValueError(f"theta_{name} has shape {tuple(t.shape)}; theta_a has {tuple(points[0].shape)}.")
        if not torch.isfinite(t).all():
            raise ValueError(f"theta_{name} has NaN or inf weights.")
    a, b, c = (t.double() for t in points)
    u, w = b - a, c - a
    if not u.norm() > 0:
        raise ValueError(
            "theta_a and theta_b are identical; the plane through three checkpoints needs distinct points."
        )
    e1 = u / u.norm()
    w = w - (w @ e1) * e1
    if not w.norm() > 1e-9 * max(float((c - a).norm()), float(u.norm())):
        raise ValueError("the three checkpoints are collinear (or C equals A); they do not define a plane.")
    e2 = w / w.norm()
    axes = torch.stack([e1, e2]).to(points[0].device, points[0].dtype)
    return register(axes, {"kind": "through", "points_sha256": [digest(t) for t in points]})


def coordinates(theta: torch.Tensor, center: torch.Tensor, axes: torch.Tensor) -> tuple[float, float]:
    """``(alpha, beta)`` of ``theta`` projected on the plane ``center + alpha axes[0] + beta axes[1]`` (orthonormal)."""
    diff = theta.detach().double() - center.detach().double()
    return float(diff @ axes[0].double()), float(diff @ axes[1].double())


def plane_through(
    problem,
    theta_a: torch.Tensor,
    theta_b: torch.Tensor,
    theta_c: torch.Tensor,
    steps: int = 31,
    margin: float = 0.25,
    names: tuple[str, str, str] = ("A", "B", "C"),
    splits=None,
    progress: Progress | None = None,
    cancel: threading.Event | None = None,
    use_cache: bool = True,
) -> tuple[Surface, dict[str, tuple[float, float]]]:
    """The loss surface over the plane through three checkpoints and each model's ``(alpha, beta)`` in it.

    The grid is square, ``steps x steps``, centred on the three models, with equal spans on both axes
    (the larger extent of the three points plus ``margin`` of it on each side). Evaluated with the
    problem's buffers (for BatchNorm nets, running statistics of the problem's model; see
    ``interpolation.linear`` for per-point recomputation along a line). ``surface.settings["points"]``
    holds the coordinates too.
    """
    if not (isinstance(margin, (int, float)) and 0 <= margin <= 10):
        raise ValueError(f"margin must be a number from 0 to 10 (fraction of the points' extent); got {margin!r}.")
    if len(names) != 3:
        raise ValueError(f"names must hold three labels; got {names!r}.")
    for name, t in zip(("theta_a", "theta_b", "theta_c"), (theta_a, theta_b, theta_c)):
        problem.space.check(t, name)
    axes = through(theta_a, theta_b, theta_c)
    center = theta_a.detach().to(problem.device, problem.dtype)
    points = {n: coordinates(t, center, axes) for n, t in zip(names, (theta_a, theta_b, theta_c))}
    xy = np.array(list(points.values()))
    mid = (xy.min(axis=0) + xy.max(axis=0)) / 2
    half = (xy.max(axis=0) - xy.min(axis=0)).max() / 2 * (1 + 2 * margin)
    span, span_y = (mid[0] - half, mid[0] + half), (mid[1] - half, mid[1] + half)
    result = surface_mod.plane(
        problem,
        axes[0],
        axes[1],
        span=span,
        steps=steps,
        center=center,
        span_y=span_y,
        steps_y=steps,
        splits=splits,
        progress=progress,
        cancel=cancel,
        use_cache=use_cache,
    )
    result.settings["points"] = {n: list(p) for n, p in points.items()}
    return result, points
