"""A quadratic Bezier curve with one trained bend between two checkpoints (Garipov et al. 2018).

    phi(t) = (1 - t)^2 theta_a + 2 t (1 - t) theta_bend + t^2 theta_b,   t in [0, 1]

The bend starts at the midpoint (so the untrained curve is the straight line) and is trained
to minimize the expected loss along the curve, E_{t ~ U(0, 1)} L(phi(t)), by stochastic
gradient descent over random ``t`` and random mini-batches of the train split (Garipov et al.,
"Loss surfaces, mode connectivity, and fast ensembling of DNNs", NeurIPS 2018). The loss along
the trained curve is reported next to the loss along the straight line, with the barriers of
both, so a user can see whether the two models are connected by a low-loss curve though not by
a line. BatchNorm nets train with batch statistics (train-mode BatchNorm, dropout off) and are
evaluated with the ``bn`` rule of ``interpolation.linear``.
"""

from __future__ import annotations

import copy
import dataclasses
import threading
from collections.abc import Mapping

import numpy as np
import torch

from . import batchnorm
from . import cache as cache_mod
from .evaluate import Cancelled, Progress, check_splits
from .interpolation import (
    BNMode,
    Path,
    _buffers_digest,
    _check_theta,
    barrier,
    from_nearer_end,
    linear,
    path_alphas,
    with_buffers_per_point,
)
from .provenance import digest
from .results import ResultIO, csv_table

ALGORITHM_VERSION = 1


@dataclasses.dataclass(frozen=True)
class Curve(ResultIO):
    """Loss (and metrics) along a trained Bezier curve and along the straight line, at the same ``ts``.

    ``ts``: float64 ``(steps,)`` from 0 to 1. ``values`` / ``line_values``: ``{quantity: float64 (steps,)}``.
    ``barrier`` / ``line_barrier``: ``{loss quantity: {"height", "alpha", "loss_a", "loss_b"}}``
    (``alpha`` is the ``t`` of the maximum). ``bend``: the trained middle control point ``(P,)``.
    ``training_loss``: float64 ``(iterations,)`` mini-batch loss at each SGD step (noisy; for a
    convergence plot). ``settings``: how it was made.
    """

    ts: np.ndarray
    values: dict
    line_values: dict
    barrier: dict
    line_barrier: dict
    bend: torch.Tensor
    training_loss: np.ndarray
    settings: dict

    def to_csv(self) -> str:
        """Tidy CSV: ``t,path,quantity,value`` with ``path`` = ``curve`` or ``line``."""
        rows = (
            (t, label, q, x)
            for label, values in (("curve", self.values), ("line", self.line_values))
            for q, v in values.items()
            for t, x in zip(self.ts, v)
        )
        return csv_table(["t", "path", "quantity", "value"], rows)


def bezier_point(theta_a: torch.Tensor, bend: torch.Tensor, theta_b: torch.Tensor, t: float) -> torch.Tensor:
    """``phi(t) = (1 - t)^2 theta_a + 2 t (1 - t) bend + t^2 theta_b``; differentiable in ``bend``."""
    return (1.0 - t) ** 2 * theta_a + 2.0 * t * (1.0 - t) * bend + t**2 * theta_b


def evaluate_curve(problem, theta_a, bend, theta_b, ts, splits=None, buffers=None, cancel=None) -> dict:
    """Values at ``phi(t)`` for ``ts`` ``(k,)`` with one buffer set; exactly A at t = 0 and B at t = 1.

    ``phi(t) = A + 2t(1-t)(bend - A) + t^2 (B - A)`` for t <= 1/2 and the mirror form from B otherwise,
    one call of the evaluator per half.
    """

    def along(center, other, s):
        return torch.stack([bend - center, other - center]), np.stack([2.0 * s * (1.0 - s), s**2], axis=1)

    return from_nearer_end(problem, theta_a, theta_b, ts, along, splits, buffers, cancel)


def _training_model(problem) -> torch.nn.Module:
    """A private copy of the model for training the bend: eval mode, BatchNorm layers in train mode."""
    model = copy.deepcopy(problem.model)
    model.eval()
    for _, layer in batchnorm.batchnorm_modules(model):
        layer.train()
    return model


def bezier(
    problem,
    theta_a: torch.Tensor,
    theta_b: torch.Tensor,
    steps: int = 25,
    iterations: int = 400,
    lr: float = 0.05,
    momentum: float = 0.9,
    batch_size: int | None = 128,
    seed: int = 0,
    bn: BNMode | str = "recompute",
    buffers_a: Mapping[str, torch.Tensor] | None = None,
    buffers_b: Mapping[str, torch.Tensor] | None = None,
    splits=None,
    progress: Progress | None = None,
    cancel: threading.Event | None = None,
    use_cache: bool = True,
) -> Curve:
    """Train the bend of a quadratic Bezier curve from ``theta_a`` to ``theta_b`` and evaluate both paths.

    ``iterations`` SGD steps (``lr``, ``momentum``) on ``L(phi(t))`` for ``t ~ U(0, 1)`` and a random
    mini-batch of ``batch_size`` train samples (``None``: the full split), all drawn from
    ``torch.Generator().manual_seed(seed)``. ``iterations=0`` leaves the bend at the midpoint (the
    curve is then the straight line). ``progress(done, total)`` counts SGD steps then evaluated points.
    """
    bn = BNMode(bn)
    theta_a = _check_theta(problem, theta_a, "theta_a")
    theta_b = _check_theta(problem, theta_b, "theta_b")
    if torch.equal(theta_a, theta_b):
        raise ValueError(
            "theta_a and theta_b are identical: the curve has zero length; pick two different checkpoints."
        )
    for name, value, low in (("iterations", iterations, 0), ("batch_size", batch_size, 1)):
        if value is None and name == "batch_size":
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"{name} must be an integer >= {low}; got {value!r}.")
    if not (isinstance(lr, (int, float)) and lr > 0 and np.isfinite(lr)):
        raise ValueError(f"lr must be a positive number; got {lr!r}.")
    ts = path_alphas((0.0, 1.0), steps)
    splits = check_splits(problem, splits)
    buffers_a = dict(problem.buffers if buffers_a is None else buffers_a)
    buffers_b = dict(problem.buffers if buffers_b is None else buffers_b)
    has_bn = batchnorm.has_batchnorm(problem)
    settings = {
        "kind": "bezier_curve",
        "theta_a_sha256": digest(theta_a),
        "theta_b_sha256": digest(theta_b),
        "buffers_a_sha256": _buffers_digest(buffers_a),
        "buffers_b_sha256": _buffers_digest(buffers_b),
        "bn": bn.value if has_bn else "none (no BatchNorm)",
        "steps": int(steps),
        "iterations": iterations,
        "lr": float(lr),
        "momentum": float(momentum),
        "batch_size": batch_size,
        "seed": int(seed),
        "splits": splits,
        "problem": problem.describe(),
    }
    key = cache_mod.make_key("curve", ALGORITHM_VERSION, settings)
    total = iterations + len(ts)
    if use_cache and (hit := cache_mod.fetch(key, Curve.from_bytes)) is not None:
        if progress is not None:
            progress(total, total)
        return hit

    bend, history = _train_bend(
        problem, theta_a, theta_b, iterations, lr, momentum, batch_size, seed, progress, total, cancel
    )
    if not torch.isfinite(bend).all():
        raise ValueError(f"training the bend diverged (NaN/inf) with lr={lr}; try a smaller lr.")
    if not has_bn or bn is BNMode.KEEP or problem.mode.value == "train":
        values = evaluate_curve(problem, theta_a, bend, theta_b, ts, splits, buffers_a, cancel)
    else:
        values = with_buffers_per_point(
            problem,
            ts,
            lambda t: bezier_point(theta_a, bend, theta_b, t),
            lambda part, buffers: evaluate_curve(problem, theta_a, bend, theta_b, part, splits, buffers, cancel),
            bn,
            buffers_a,
            buffers_b,
            cancel,
            None if progress is None else lambda i: progress(iterations + i, total),
            what="curve points",
        )
    line: Path = linear(
        problem, theta_a, theta_b, steps, (0.0, 1.0), bn, None, cancel, buffers_a, buffers_b, splits, use_cache
    )
    result = Curve(
        ts=ts,
        values=values,
        line_values={q: v for q, v in line.values.items()},
        barrier={q: barrier(ts, v) for q, v in values.items() if q.endswith("_loss")},
        line_barrier=line.barrier,
        bend=bend.detach().clone(),
        training_loss=history,
        settings=settings,
    )
    if progress is not None:
        progress(total, total)
    if use_cache:
        cache_mod.put(key, result.to_bytes())
    return result


def _train_bend(problem, theta_a, theta_b, iterations, lr, momentum, batch_size, seed, progress, total, cancel):
    """SGD on the bend; returns ``(bend (P,), per-step mini-batch losses (iterations,))``."""
    gen = torch.Generator().manual_seed(int(seed))
    split = problem.splits["train"]
    size = split.n if batch_size is None else min(batch_size, split.n)
    model = _training_model(problem)
    frozen = problem.space.frozen
    bend = (0.5 * (theta_a + theta_b)).clone().requires_grad_(True)
    optimizer = torch.optim.SGD([bend], lr=lr, momentum=momentum)
    history = np.full(iterations, np.nan)
    for step in range(iterations):
        if cancel is not None and cancel.is_set():
            raise Cancelled(f"cancelled after {step} of {iterations} training steps")
        t = float(torch.rand((), generator=gen))
        X, y = split.take(torch.randperm(split.n, generator=gen)[:size])
        buffers = {k: v.clone() for k, v in problem.buffers.items()}  # train-mode BatchNorm writes into these
        params = problem.space.unflatten(bezier_point(theta_a, bend, theta_b, t))
        output = problem.call(model, {**buffers, **frozen, **params}, X)
        loss = problem.loss_value(output, y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        history[step] = float(loss.detach())
        if progress is not None:
            progress(step + 1, total)
    return bend.detach(), history
