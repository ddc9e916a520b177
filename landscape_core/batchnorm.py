"""BatchNorm running statistics at arbitrary points of parameter space.

A BatchNorm net evaluated in eval mode uses the running mean/variance stored with it. At a
point the net was never trained at (the middle of an interpolation path, a point of a plane)
the stored statistics of either endpoint are wrong for that point's activations, and the
drawn loss is then an artefact. ``recompute`` gives each point its own statistics:

    reset the running statistics, run the full train split through the model at ``theta``
    in train mode (BatchNorm normalizes with batch statistics and updates its running ones;
    dropout stays off, no augmentation, no gradient), with a per-batch momentum
    ``n_b / (n_1 + ... + n_b)`` so that the result is the sample-weighted average of the
    batch statistics over the whole split (one batch covering the split gives exactly its
    mean and unbiased variance; a last batch of a single sample joins the one before);

then evaluate in eval mode with these buffers. This is ``torch.optim.swa_utils.update_bn``
made exact for unequal last batches and deterministic.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping

import torch
from torch import nn

from . import inputs

_BN = nn.modules.batchnorm._BatchNorm


def batchnorm_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """``(name, module)`` of every BatchNorm layer that tracks running statistics."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, _BN) and m.track_running_stats]


def has_batchnorm(problem) -> bool:
    """Whether ``problem.model`` has BatchNorm layers with running statistics."""
    return bool(batchnorm_modules(problem.model))


def interpolate_buffers(buffers_a: Mapping, buffers_b: Mapping, alpha: float) -> dict[str, torch.Tensor]:
    """``(1 - alpha) a + alpha b`` for floating buffers; integer buffers (counters) come from the nearer end.

    ``alpha = 0`` returns ``a``'s values and ``alpha = 1`` ``b``'s, exactly.
    """
    out = {}
    for name, a in buffers_a.items():
        b = buffers_b.get(name, a)
        if a.is_floating_point():
            out[name] = a if alpha == 0.0 else b.to(a.dtype) if alpha == 1.0 else (1.0 - alpha) * a + alpha * b
        else:
            out[name] = a if alpha <= 0.5 else b
    return out


def batch_bounds(n: int, batch_size: int) -> list[tuple[int, int]]:
    """``(start, stop)`` of the batches of a split; a last batch of one sample joins the one before
    (train-mode BatchNorm cannot normalize a single sample)."""
    if n < 2:
        raise ValueError(f"recomputing BatchNorm statistics needs at least 2 train samples; got {n}.")
    starts = list(range(0, n, batch_size))
    if len(starts) > 1 and n - starts[-1] == 1:
        starts.pop()
    return [(s, starts[i + 1] if i + 1 < len(starts) else n) for i, s in enumerate(starts)]


class Recomputer:
    """Recomputes BatchNorm statistics for many points with one private copy of the model.

    ``problem.model`` is never touched: the work happens on a deep copy made once.
    """

    def __init__(self, problem, split: str = "train"):
        if split not in problem.splits:
            raise ValueError(f"split {split!r} is not available; this problem has {list(problem.splits)}.")
        self.problem = problem
        self.split = problem.splits[split]
        self.model = copy.deepcopy(problem.model)
        self.model.eval()
        self.layers = batchnorm_modules(self.model)
        self.params = dict(self.model.named_parameters())
        self.bounds = batch_bounds(self.split.n, self.split.batch_size) if self.layers else []

    def __call__(self, theta: torch.Tensor) -> dict[str, torch.Tensor]:
        """Buffers ``{name: tensor}`` (all of the model's) with BatchNorm statistics recomputed at ``theta``."""
        problem = self.problem
        problem.space.check(theta, "theta")
        if not self.layers:
            return {k: v.detach().clone() for k, v in problem.buffers.items()}
        values = problem.space.unflatten(theta.detach().to(problem.device, problem.dtype))
        with torch.no_grad():
            for name, value in values.items():
                self.params[name].copy_(value)
            for _, layer in self.layers:
                layer.reset_running_stats()
                layer.train()
            seen = 0
            for start, stop in self.bounds:
                n_b = stop - start
                seen += n_b
                for _, layer in self.layers:
                    layer.momentum = n_b / seen
                args, kwargs = inputs.call_args(self.split.slice(start, stop)[0])
                self.model(*args, **kwargs)
            for _, layer in self.layers:
                layer.eval()
        return {k: v.detach().clone() for k, v in self.model.named_buffers()}


def recompute(problem, theta: torch.Tensor, split: str = "train") -> dict[str, torch.Tensor]:
    """BatchNorm running statistics recomputed at ``theta`` over the full ``split`` (see module docstring).

    Returns all buffers of the model as ``{name: tensor}``, ready for ``evaluate_points(..., buffers=)``.
    """
    return Recomputer(problem, split)(theta)
