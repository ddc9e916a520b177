"""The one evaluator every landscape value passes through.

Points are given in affine form, ``theta_i = center + coeffs[i] @ basis`` (a plane is
``theta0 + alpha d1 + beta d2``, a path ``theta_a + alpha (theta_b - theta_a)``), so that
speed work lives in one place. Points are evaluated in chunks, several per forward pass;
how a chunk runs through the model (affine prefix, vmap, per-point loop; the centre point
alone so that a grid's centre cell equals ``problem.base`` bit for bit) is
``landscape_core.execution``. Here: splits and batches, the per-point loss and metrics
(plain cross-entropy on logits and the built-in accuracy without vmap:
``bench/bench_surface.py`` measures about 3.4x ``loss-landscapes`` on 2 cores), progress
``(done, total)`` and a cancel event checked between chunks.

Values are exact over the batches of each split, accumulated in float64: each batch value enters
with its coefficient from ``Problem.weighted_batches`` (its share of the split's weight, e.g. of the
class weights of a weighted cross-entropy; 1 for a sum; ``landscape_core.weighting``).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from . import executors
from .execution import DEFAULT_MEMORY_BUDGET, Runner, Strategy
from .metrics import Accuracy
from .weighting import Reduction

__all__ = ["Cancelled", "Progress", "Strategy", "evaluate_chunks", "evaluate_points"]

Progress = Callable[[int, int], None]


class Cancelled(RuntimeError):
    """Raised between chunks when the cancel event of a running evaluation is set."""


def evaluate_points(
    problem,
    center: torch.Tensor,
    basis: torch.Tensor | None,
    coeffs: torch.Tensor | np.ndarray | None,
    splits: Sequence[str] | None = None,
    progress: Progress | None = None,
    cancel: threading.Event | None = None,
    buffers: dict | None = None,
    memory_budget: int = DEFAULT_MEMORY_BUDGET,
    chunk_size: int | None = None,
) -> dict[str, np.ndarray]:
    """Evaluate ``problem`` at ``center + coeffs @ basis``.

    ``center``: ``(P,)``; ``basis``: ``(m, P)`` or ``None`` (the single point ``center``);
    ``coeffs``: ``(k, m)``. Returns ``{"<split>_<quantity>": float64 array (k,)}``.
    Raises ``Cancelled`` if ``cancel`` is set before a chunk starts. Runs on the executor of
    ``executors.current()`` (a remote one gets the points in pieces when there are several).
    """
    given_buffers = buffers
    space = problem.space
    space.check(center, "center")
    center = center.to(problem.device, problem.dtype)
    if basis is None:
        basis = torch.zeros((0, space.size), dtype=problem.dtype, device=problem.device)
        coeffs = torch.zeros((1, 0), dtype=torch.float64)
    else:
        space.check(basis, "basis", batched=True)
        basis = basis.to(problem.device, problem.dtype)
        coeffs = torch.as_tensor(coeffs, dtype=torch.float64)
        if coeffs.dim() != 2 or coeffs.shape[1] != basis.shape[0]:
            raise ValueError(f"coeffs must have shape (k, {basis.shape[0]}); got {tuple(coeffs.shape)}.")
    split_names = check_splits(problem, splits)
    buffers = problem.buffers if buffers is None else buffers
    runner = Runner(problem, center, basis, buffers, memory_budget)
    k = coeffs.shape[0]
    chunk = chunk_size or runner.chunk_size(memory_budget)
    quantities = ("loss", *problem.metrics)
    executor = executors.current()
    if executor.remote and k > 1:
        # a caller's chunk size (the cache's blocks) fixes the arithmetic: pieces are whole chunks, so
        # every point is computed in the very chunk it would be in-process (the same bits)
        size = chunk if chunk_size else executor.points_per_piece(k, chunk)
        pieces = [coeffs[i : i + size].numpy() for i in range(0, k, size)]
        parts = executor.run_chunks(
            problem,
            center,
            basis,
            pieces,
            split_names,
            buffers=given_buffers,
            memory_budget=memory_budget,
            progress=progress,
            cancel=cancel,
        )
        return {f"{s}_{q}": np.concatenate([p[f"{s}_{q}"] for p in parts]) for s in split_names for q in quantities}
    functions = {q: _batch_function(problem, q) for q in quantities}
    weighted = {s: {q: problem.coefficients(s, q) for q in quantities} for s in split_names}
    out = {f"{s}_{q}": np.full(k, np.nan) for s in split_names for q in quantities}
    if progress is not None:
        progress(0, k)
    for start in range(0, k, chunk):
        if cancel is not None and cancel.is_set():
            raise Cancelled(f"cancelled after {start} of {k} points")
        stop = min(start + chunk, k)
        c = coeffs[start:stop].to(problem.device)
        with torch.no_grad():
            for s in split_names:
                acc = {q: torch.zeros(stop - start, dtype=torch.float64, device=problem.device) for q in quantities}
                for b, (X, y, _) in enumerate(problem.splits[s].batches()):
                    # segments of points that ran together; each gets its own loss call, so a
                    # point's value does not depend on its neighbours (the centre equals the base)
                    segments = runner.outputs(c, X, (s, b))
                    for name, fn in functions.items():
                        coefficient = weighted[s][name][b]
                        if coefficient == 0.0:
                            continue  # every label of the batch ignored: its mean is 0/0 and weighs nothing
                        acc[name] += coefficient * torch.cat([_per_point(fn, o, y).double() for o in segments])
                for q in quantities:
                    out[f"{s}_{q}"][start:stop] = acc[q].cpu().numpy()
        if progress is not None:
            progress(stop, k)
    return out


def evaluate_chunks(
    problem,
    center: torch.Tensor,
    basis: torch.Tensor,
    chunks: Sequence[np.ndarray],
    splits: Sequence[str] | None = None,
    progress: Progress | None = None,
    cancel: threading.Event | None = None,
    on_chunk: Callable[[int, dict], None] | None = None,
) -> list[dict[str, np.ndarray]]:
    """``evaluate_points`` for several chunks of coefficients ``(k_i, m)``, one result per chunk.

    In-process the chunks run in order; a remote executor runs them side by side and calls
    ``on_chunk(i, values)`` in this thread as each finishes (so the caller stores it at once:
    an interrupted run keeps every finished chunk). ``progress`` counts points over all chunks.
    """
    problem.space.check(center, "center")
    problem.space.check(basis, "basis", batched=True)
    names = check_splits(problem, splits)
    executor = executors.current()
    if executor.remote:
        return executor.run_chunks(
            problem, center, basis, list(chunks), names, progress=progress, cancel=cancel, on_chunk=on_chunk
        )
    total = sum(len(c) for c in chunks)
    done, parts = 0, []
    for index, coeffs in enumerate(chunks):
        report = None if progress is None else (lambda d, _t, base=done: progress(base + d, total))
        parts.append(evaluate_points(problem, center, basis, coeffs, names, report, cancel))
        done += len(coeffs)
        if on_chunk is not None:
            on_chunk(index, parts[-1])
    return parts


def check_splits(problem, splits) -> list[str]:
    """``splits`` as a non-empty list of split names of ``problem`` (``None``: all of them)."""
    if splits is None:
        return list(problem.splits)
    if isinstance(splits, str):
        raise ValueError(f"splits must be a list of split names such as [{splits!r}]; got the string {splits!r}.")
    names = list(splits)
    if not names:
        raise ValueError(f"splits is empty; name at least one of {list(problem.splits)} (or None for all).")
    for s in names:
        if s not in problem.splits:
            raise ValueError(f"split {s!r} is not available; this problem has {list(problem.splits)}.")
    return names


def _batch_function(problem, quantity: str) -> Callable:
    """The function giving one batch value of ``quantity`` (a per-sample loss reduced to its mean)."""
    fn = problem.loss if quantity == "loss" else problem.metrics[quantity]
    if problem.weightings[quantity].reduction is Reduction.PER_SAMPLE:
        return lambda output, target: fn(output, target).mean()
    return fn


def _is_plain_cross_entropy(fn: Callable) -> bool:
    """``F.cross_entropy`` or an ``nn.CrossEntropyLoss()`` with default settings (batch mean)."""
    if fn is F.cross_entropy:
        return True
    return (
        type(fn) is nn.CrossEntropyLoss
        and fn.weight is None
        and fn.reduction == "mean"
        and fn.label_smoothing == 0.0
        and fn.ignore_index < 0
    )


def _per_point(fn: Callable, outputs: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``fn(outputs[i], y)`` for every point i, vmapped when ``fn`` allows it.

    Plain cross-entropy on logits ``(k, n, C)`` with class labels ``(n,)`` (none of them the
    ignore index) is computed directly as the per-point mean of per-sample losses: the same
    value without vmap's overhead.
    """
    if (
        outputs.dim() == 3
        and y.dim() == 1
        and not y.is_floating_point()
        and _is_plain_cross_entropy(fn)
        and bool((y >= 0).all())
    ):
        k, n, classes = outputs.shape
        class_major = outputs.transpose(1, 2)
        if class_major.is_contiguous():  # (k, C, n) storage from the affine path: softmax over strided classes
            per_sample = F.cross_entropy(class_major, y.expand(k, n), reduction="none")
        else:
            per_sample = F.cross_entropy(outputs.reshape(k * n, classes), y.repeat(k), reduction="none").view(k, n)
        return per_sample.mean(dim=1)
    if type(fn) is Accuracy and fn.class_dim == -1 and outputs.dim() == 3 and y.dim() == 1:
        return _accuracy(outputs, y, fn.ignore_index)
    outputs = outputs.contiguous()
    try:
        return torch.func.vmap(fn, in_dims=(0, None))(outputs, y).reshape(-1)
    except Exception:
        return torch.stack([torch.as_tensor(fn(o, y)).reshape(()) for o in outputs])


def _accuracy(outputs: torch.Tensor, y: torch.Tensor, ignore_index: int) -> torch.Tensor:
    """Per-point accuracy ``(k,)`` of logits ``(k, n, C)``: ``Accuracy`` without vmap.

    Where every sample has a unique largest logit, "label's logit is the largest" is the
    arg-max test and much faster on the class-major layout; otherwise (ties) arg-max itself
    decides, so the value is always that of ``Accuracy``. Labels equal to ``ignore_index`` are
    skipped; a point whose logits hold a NaN or inf is NaN (diverged).
    """
    k, n, _ = outputs.shape
    valid = y != ignore_index
    labelled = valid.sum().to(outputs.dtype)
    class_major = outputs.transpose(1, 2)
    largest = class_major.amax(dim=1)
    ties = (class_major == largest.unsqueeze(1)).sum(dim=1)
    if bool(valid.all()) and bool((ties == 1).all()):  # NaN compares unequal: ties 0, arg-max path
        picked = class_major.gather(1, y.expand(k, n).unsqueeze(1)).squeeze(1)
        correct = picked == largest
    else:
        correct = (outputs.argmax(dim=-1) == y) & valid
    value = correct.sum(dim=1).to(outputs.dtype) / labelled
    finite = torch.isfinite(outputs).flatten(1).all(dim=1)
    return torch.where(finite, value, torch.full_like(value, float("nan")))
