"""Linear interpolation between two checkpoints and the loss barrier on the way (mode connectivity).

The path is ``theta(alpha) = (1 - alpha) theta_a + alpha theta_b``. Two barriers, as the papers
define them (``BARRIER_DEFINITIONS``; both over alpha in [0, 1] only, a wider span only extends the
picture; 0 means linearly connected):

* the **loss barrier** (Entezari et al. 2022, "The role of permutation invariance in linear mode
  connectivity of neural networks"): ``max_alpha L(alpha) - ((1 - alpha) L(0) + alpha L(1))``, the
  largest rise of the loss above the straight line between the endpoint losses;
* the **error barrier** (Frankle et al. 2020, "Linear mode connectivity and the lottery ticket
  hypothesis", their instability): ``max_alpha err(alpha) - (err(0) + err(1)) / 2`` with
  ``err = 1 - accuracy``, where the problem has an accuracy.

BatchNorm along the path (``bn``): ``"recompute"`` gives every alpha its own running statistics
(``landscape_core.batchnorm``); ``"interpolate"`` interpolates A's and B's buffers; ``"keep"``
uses A's buffers everywhere. Models without BatchNorm ignore ``bn``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import threading
from collections.abc import Callable, Mapping
from enum import Enum

import numpy as np
import torch

from . import batchnorm
from . import cache as cache_mod
from .evaluate import Cancelled, Progress, check_splits, evaluate_points
from .identity import raw_bytes
from .provenance import digest
from .results import ResultIO, csv_table
from .surface import check_span, check_steps

ALGORITHM_VERSION = 1

BARRIER_DEFINITIONS = {
    "loss": "Entezari et al. 2022: max over alpha in [0, 1] of L(alpha) - ((1 - alpha) L(0) + alpha L(1))",
    "error": "Frankle et al. 2020: max over alpha in [0, 1] of err(alpha) - (err(0) + err(1)) / 2, err = 1 - accuracy",
}


class BNMode(str, Enum):
    """How BatchNorm running statistics are set along a path."""

    RECOMPUTE = "recompute"  # recomputed at every alpha over the full train split
    INTERPOLATE = "interpolate"  # (1 - alpha) buffers_a + alpha buffers_b
    KEEP = "keep"  # buffers_a everywhere


@dataclasses.dataclass(frozen=True)
class Path(ResultIO):
    """Loss (and metrics) along the segment between two checkpoints.

    ``alphas``: float64 ``(steps,)``, 0 at A and 1 at B (always on the grid when the span covers them).
    ``values``: ``{quantity: float64 (steps,)}``, e.g. ``train_loss``, ``val_accuracy``; NaN where diverged.
    ``barrier``: over alpha in [0, 1], ``{"<split>_loss": {"height", "alpha", "loss_a", "loss_b"}}``, the
    loss barrier (Entezari et al. 2022), and where accuracy exists ``{"<split>_error": {"height", "alpha",
    "error_a", "error_b"}}``, the error barrier (Frankle et al. 2020); ``settings["barrier_definitions"]``
    names both. ``height`` is ``None`` if a value is not finite somewhere there. Both use the path's
    own values at alpha = 0 and 1, so with ``bn="keep"`` (A's statistics at B too) ``loss_b`` is not B's
    own loss; compare ``endpoint_values``.
    ``endpoint_values``: ``{quantity: float64 (2,)}``, the values at A and B with each checkpoint's own buffers
    (as stored); with ``bn="recompute"`` the path's alpha = 0, 1 values use recomputed statistics
    instead, so the two differ exactly when the stored statistics are stale.
    ``settings``: how it was made (checkpoint hashes, bn mode, span, steps, data, model).
    """

    alphas: np.ndarray
    values: dict
    barrier: dict
    endpoint_values: dict
    settings: dict

    @property
    def quantities(self) -> list[str]:
        return list(self.values)

    def linear_reference(self, quantity: str = "train_loss") -> np.ndarray:
        """The straight line ``(1 - alpha) L(0) + alpha L(1)`` at every alpha, ``(steps,)``."""
        i0, i1 = _index(self.alphas, 0.0), _index(self.alphas, 1.0)
        if i0 is None or i1 is None:
            raise ValueError("the path's span does not contain both alpha = 0 and alpha = 1.")
        v = self.values[quantity]
        return (1.0 - self.alphas) * v[i0] + self.alphas * v[i1]

    def to_csv(self) -> str:
        """Tidy CSV: ``alpha,quantity,value`` for every point and quantity."""
        rows = ((a, q, x) for q, v in self.values.items() for a, x in zip(self.alphas, v))
        return csv_table(["alpha", "quantity", "value"], rows)


def _index(alphas: np.ndarray, value: float) -> int | None:
    hits = np.flatnonzero(alphas == value)
    return int(hits[0]) if len(hits) else None


def path_alphas(span: tuple[float, float], steps: int) -> np.ndarray:
    """``steps`` evenly spaced alphas over ``span``, plus 0 and 1 when the span covers them (sorted)."""
    check_steps(steps)
    lo, hi = check_span(span)
    alphas = np.linspace(lo, hi, steps)
    for anchor in (0.0, 1.0):
        near = np.abs(alphas - anchor) < 1e-9 * (hi - lo)
        alphas[near] = anchor
        if lo <= anchor <= hi and not near.any():
            alphas = np.append(alphas, anchor)
    return np.unique(alphas)


def barrier(alphas: np.ndarray, losses: np.ndarray) -> dict:
    """Loss barrier (Entezari et al. 2022): ``{"height", "alpha", "loss_a", "loss_b"}`` over alpha in [0, 1].

    ``height = max L(alpha) - ((1 - alpha) L(0) + alpha L(1))``. ``alphas`` must contain 0 and 1.
    ``height`` is ``None`` when a loss in [0, 1] is not finite.
    """
    i0, i1 = _ends(alphas)
    inside = (alphas >= 0.0) & (alphas <= 1.0)
    a, loss = alphas[inside], losses[inside]
    loss_a, loss_b = float(losses[i0]), float(losses[i1])
    if not np.isfinite(loss).all():
        return {"height": None, "alpha": None, "loss_a": loss_a, "loss_b": loss_b}
    excess = loss - ((1.0 - a) * loss_a + a * loss_b)
    k = int(np.argmax(excess))
    return {"height": float(excess[k]), "alpha": float(a[k]), "loss_a": loss_a, "loss_b": loss_b}


def error_barrier(alphas: np.ndarray, accuracy: np.ndarray) -> dict:
    """Error barrier (Frankle et al. 2020): ``{"height", "alpha", "error_a", "error_b"}`` over alpha in [0, 1].

    ``height = max err(alpha) - (err(0) + err(1)) / 2`` with ``err = 1 - accuracy`` (a fraction; may
    be negative when the path is better than the ends). ``height`` is ``None`` when an accuracy in
    [0, 1] is not finite (a diverged point).
    """
    i0, i1 = _ends(alphas)
    inside = (alphas >= 0.0) & (alphas <= 1.0)
    a, error = alphas[inside], 1.0 - accuracy[inside]
    error_a, error_b = 1.0 - float(accuracy[i0]), 1.0 - float(accuracy[i1])
    if not np.isfinite(error).all():
        return {"height": None, "alpha": None, "error_a": error_a, "error_b": error_b}
    k = int(np.argmax(error))
    return {
        "height": float(error[k] - 0.5 * (error_a + error_b)),
        "alpha": float(a[k]),
        "error_a": error_a,
        "error_b": error_b,
    }


def barriers(alphas: np.ndarray, values: dict) -> dict:
    """Both barriers of every split in ``values`` (``{quantity: (k,)}``): ``"<split>_loss"`` and ``"<split>_error"``."""
    out = {q: barrier(alphas, v) for q, v in values.items() if q.endswith("_loss")}
    for q, v in values.items():
        if q.endswith("_accuracy"):
            out[q[: -len("_accuracy")] + "_error"] = error_barrier(alphas, v)
    return out


def _ends(alphas: np.ndarray) -> tuple[int, int]:
    i0, i1 = _index(alphas, 0.0), _index(alphas, 1.0)
    if i0 is None or i1 is None:
        raise ValueError("alphas must contain 0 and 1 to define a barrier.")
    return i0, i1


def _buffers_digest(buffers: Mapping | None) -> str | None:
    if buffers is None:
        return None
    h = hashlib.sha256()
    for name in sorted(buffers):
        h.update(name.encode())
        h.update(raw_bytes(buffers[name]))
    return h.hexdigest()


def _check_theta(problem, theta, what: str) -> torch.Tensor:
    problem.space.check(theta, what)
    if not torch.isfinite(theta).all():
        count = int((~torch.isfinite(theta)).sum())
        raise ValueError(f"{what} has {count} NaN or inf weights; a diverged checkpoint cannot be interpolated.")
    return theta.detach().to(problem.device, problem.dtype)


def point(theta_a: torch.Tensor, theta_b: torch.Tensor, alpha: float) -> torch.Tensor:
    """``(1 - alpha) theta_a + alpha theta_b`` built as ``evaluate_segment`` builds it (exact at 0 and 1)."""
    if alpha <= 0.5:
        return theta_a + torch.tensor(alpha, dtype=theta_a.dtype) * (theta_b - theta_a)
    return theta_b + torch.tensor(1.0 - alpha, dtype=theta_a.dtype) * (theta_a - theta_b)


def evaluate_segment(problem, theta_a, theta_b, alphas, splits=None, buffers=None, cancel=None) -> dict:
    """Values at ``(1 - alpha) theta_a + alpha theta_b`` for ``alphas`` ``(k,)`` with one buffer set.

    Points with alpha <= 1/2 are built from A (``theta_a + alpha (theta_b - theta_a)``), the others from
    B (``theta_b + (1 - alpha) (theta_a - theta_b)``), so alpha = 0 and 1 are exactly A and B.
    """

    def along(center, other, s):
        return (other - center)[None], s[:, None]

    return from_nearer_end(problem, theta_a, theta_b, alphas, along, splits, buffers, cancel)


def from_nearer_end(problem, theta_a, theta_b, params, along: Callable, splits=None, buffers=None, cancel=None) -> dict:
    """Values at the points of a path from A (``params`` 0) to B (1), each built from the nearer end.

    ``params`` ``(k,)``: the points with ``params <= 1/2`` are ``theta_a + coeffs @ basis`` with
    ``basis, coeffs = along(theta_a, theta_b, s)`` for their ``s = params``; the others the same
    from B with ``along(theta_b, theta_a, 1 - params)``, so ``params`` 0 and 1 are exactly A and B.
    One evaluator call per half; returns ``{quantity: float64 (k,)}``.
    """
    params = np.asarray(params, dtype=np.float64)
    out: dict[str, np.ndarray] = {}
    near_a = params <= 0.5
    for mask, center, other, s in ((near_a, theta_a, theta_b, params), (~near_a, theta_b, theta_a, 1.0 - params)):
        if not mask.any():
            continue
        basis, coeffs = along(center, other, s[mask])
        for q, v in evaluate_points(problem, center, basis, coeffs, splits, None, cancel, buffers).items():
            out.setdefault(q, np.full(len(params), np.nan))[mask] = v
    return out


def with_buffers_per_point(
    problem,
    params,
    point_at: Callable[[float], torch.Tensor],
    evaluate: Callable[[np.ndarray, dict], dict],
    bn: BNMode,
    buffers_a: Mapping,
    buffers_b: Mapping,
    cancel: threading.Event | None = None,
    done: Callable[[int], None] | None = None,
    what: str = "points",
) -> dict:
    """Values at each of ``params`` ``(k,)`` in [0, 1], each point with its own BatchNorm buffers.

    ``bn`` RECOMPUTE: the running statistics of the model at ``point_at(param)`` (train split);
    INTERPOLATE: ``(1 - param) buffers_a + param buffers_b``. ``evaluate(params[i:i+1], buffers)``
    gives one point's values; ``done(i + 1)`` is called after each point; ``cancel`` is checked
    before each (``Cancelled`` names the count of ``what``). Returns ``{quantity: float64 (k,)}``.
    """
    recomputer = batchnorm.Recomputer(problem) if bn is BNMode.RECOMPUTE else None
    values: dict[str, np.ndarray] = {}
    for i, param in enumerate(params):
        if cancel is not None and cancel.is_set():
            raise Cancelled(f"cancelled after {i} of {len(params)} {what}")
        if recomputer is not None:
            buffers = recomputer(point_at(float(param)))
        else:
            buffers = batchnorm.interpolate_buffers(buffers_a, buffers_b, float(param))
        for q, v in evaluate(params[i : i + 1], buffers).items():
            values.setdefault(q, np.full(len(params), np.nan))[i] = v[0]
        if done is not None:
            done(i + 1)
    return values


def linear(
    problem,
    theta_a: torch.Tensor,
    theta_b: torch.Tensor,
    steps: int = 25,
    span: tuple[float, float] = (0.0, 1.0),
    bn: BNMode | str = "recompute",
    progress: Progress | None = None,
    cancel: threading.Event | None = None,
    buffers_a: Mapping[str, torch.Tensor] | None = None,
    buffers_b: Mapping[str, torch.Tensor] | None = None,
    splits=None,
    use_cache: bool = True,
) -> Path:
    """Loss (and metrics) on the segment from ``theta_a`` (alpha = 0) to ``theta_b`` (alpha = 1).

    ``theta_a``, ``theta_b``: flat ``(P,)`` points of ``problem.space`` (e.g. ``Checkpoint.theta``).
    ``steps``: evenly spaced alphas over ``span`` (0 and 1 are added if the span covers them and the
    grid misses them). ``bn``: ``"recompute"`` | ``"interpolate"`` | ``"keep"`` (see module docstring).
    ``buffers_a``/``buffers_b``: the checkpoints' own running statistics (default: the problem's).
    ``progress(done, total)`` counts alphas; ``cancel`` (a ``threading.Event``) raises ``Cancelled``.

    >>> path = linear(problem, ckpt_a.theta, ckpt_b.theta, steps=25)        # doctest: +SKIP
    >>> path.barrier["train_loss"]["height"]                                  # doctest: +SKIP
    """
    plan = plan_path(problem, theta_a, theta_b, steps, span, bn, buffers_a, buffers_b, splits)
    key = path_key(plan)
    total = len(plan.alphas)
    if use_cache and (hit := cache_mod.fetch(key, Path.from_bytes)) is not None:
        if progress is not None:
            progress(total, total)
        return hit

    if progress is not None:
        progress(0, total)
    values = path_values(plan, problem, plan.alphas, cancel, None if progress is None else lambda i: progress(i, total))
    result = finish_path(plan, problem, values, cancel)
    if use_cache:
        cache_mod.put(key, result.to_bytes())
    return result


@dataclasses.dataclass(frozen=True)
class PathPlan:
    """A path checked and described before any evaluation: the ends, the alphas ``(k,)`` (``path_alphas``),
    the BatchNorm rule, the splits, both ends' buffers and the settings (the cache key's content)."""

    theta_a: torch.Tensor
    theta_b: torch.Tensor
    alphas: np.ndarray
    bn: BNMode
    per_point: bool  # each alpha gets its own BatchNorm buffers (recomputed or interpolated)
    splits: list
    buffers_a: dict
    buffers_b: dict
    settings: dict


def plan_path(problem, theta_a, theta_b, steps, span, bn, buffers_a=None, buffers_b=None, splits=None) -> PathPlan:
    """Check the arguments of ``linear`` and describe its path (``PathPlan``); evaluates nothing."""
    bn = BNMode(bn)
    theta_a = _check_theta(problem, theta_a, "theta_a")
    theta_b = _check_theta(problem, theta_b, "theta_b")
    if torch.equal(theta_a, theta_b):
        raise ValueError("theta_a and theta_b are identical: the path has zero length; pick two different checkpoints.")
    alphas = path_alphas(span, steps)
    splits = check_splits(problem, splits)
    buffers_a = dict(problem.buffers if buffers_a is None else buffers_a)
    buffers_b = dict(problem.buffers if buffers_b is None else buffers_b)
    has_bn = batchnorm.has_batchnorm(problem)
    per_point = has_bn and bn is not BNMode.KEEP and problem.mode.value != "train"
    settings = {
        "kind": "linear_path",
        "theta_a_sha256": digest(theta_a),
        "theta_b_sha256": digest(theta_b),
        "distance": float((theta_b.double() - theta_a.double()).norm()),
        "buffers_a_sha256": _buffers_digest(buffers_a),
        "buffers_b_sha256": _buffers_digest(buffers_b),
        "bn": bn.value if has_bn else "none (no BatchNorm)",
        "span": list(check_span(span)),
        "steps": int(steps),
        "points": len(alphas),
        "splits": splits,
        "barrier_definitions": BARRIER_DEFINITIONS,
        "problem": problem.describe(),
    }
    return PathPlan(theta_a, theta_b, alphas, bn, per_point, splits, buffers_a, buffers_b, settings)


def path_key(plan: PathPlan) -> str:
    """The cache key of ``plan``'s finished path (what ``linear`` stores and looks up)."""
    return cache_mod.make_key("path", ALGORITHM_VERSION, plan.settings)


def path_values(plan: PathPlan, problem, alphas, cancel=None, done: Callable[[int], None] | None = None) -> dict:
    """Values ``{quantity: float64 (k,)}`` at ``alphas`` ``(k,)`` of ``plan``'s path on ``problem``'s data.

    Each point's value does not depend on which other alphas are asked for with it (up to float
    rounding of batched evaluation), so a path computed in parts equals one computed at once.
    ``done(i)``: ``i`` points finished.
    """
    alphas = np.asarray(alphas, dtype=np.float64)
    if not plan.per_point:
        values = evaluate_segment(problem, plan.theta_a, plan.theta_b, alphas, plan.splits, plan.buffers_a, cancel)
        if done is not None:
            done(len(alphas))
        return values
    return with_buffers_per_point(
        problem,
        alphas,
        lambda a: point(plan.theta_a, plan.theta_b, a),
        lambda part, buffers: evaluate_segment(problem, plan.theta_a, plan.theta_b, part, plan.splits, buffers, cancel),
        plan.bn,
        plan.buffers_a,
        plan.buffers_b,
        cancel,
        done,
    )


def finish_path(plan: PathPlan, problem, values: dict, cancel=None) -> Path:
    """The ``Path`` of ``plan`` from its values at every alpha: the barriers, and both ends evaluated
    with their own stored buffers (``endpoint_values``, two evaluations)."""
    endpoint_values = {q: np.full(2, np.nan) for q in values}
    for i, (theta, buffers) in enumerate(((plan.theta_a, plan.buffers_a), (plan.theta_b, plan.buffers_b))):
        for q, v in evaluate_points(problem, theta, None, None, plan.splits, None, cancel, buffers).items():
            endpoint_values[q][i] = v[0]
    alphas = plan.alphas
    found = barriers(alphas, values) if 0.0 in alphas and 1.0 in alphas else {}
    return Path(alphas=alphas, values=values, barrier=found, endpoint_values=endpoint_values, settings=plan.settings)
