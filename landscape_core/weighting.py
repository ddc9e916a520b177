"""How the batch values of a loss (or metric) combine into its exact value on a whole split.

A split too large for one forward pass is evaluated in batches. A loss that returns a
*weighted mean* ``L_b = S_b / W_b`` per batch (``S_b`` a sum over the batch, ``W_b`` what it
divides by) has the whole-split value ``L = sum_b S_b / sum_b W_b = sum_b (W_b / W) L_b``, so each
batch enters with the coefficient ``W_b / W``: the share of the split's weight, not of its samples.

What ``W_b`` is, per kind of loss (``Weighting.weight``):

* ``"class-weights"``: ``nn.CrossEntropyLoss``/``nn.NLLLoss`` (and ``F.cross_entropy``/``F.nll_loss``,
  also as a ``functools.partial``) and ``losses.TokenCrossEntropy`` with integer class targets: ``W_b = sum_i weight[y_i]`` over the
  targets that are not ``ignore_index`` (``weight`` = 1 when not given). Torch divides the
  label-smoothed loss by the same sum, so label smoothing is covered too.
* ``"declared"``: a callable with a ``batch_weight(output, target)`` method says its own ``W_b``
  (it may depend on the targets and on the output's shape, not on the output's values; it is
  asked once per batch, at the base point).
* ``"samples"``: everything else: ``W_b = n_b``, the batch's sample count (exact for every mean over
  samples or over equally many elements per sample: MSE, BCE with elementwise weights, KL...).

A ``reduction="sum"`` loss (torch's modules, a partial with ``reduction="sum"``, any callable with
a ``reduction`` attribute of ``"sum"``) is a sum over samples: the whole-split value is the sum of
the batch values, i.e. the same loss called once on the whole split. A loss that returns one value
per sample (``reduction="none"``, any tensor with the batch on its first axis) is reduced to the
mean of its entries: the whole-split value is the mean over every entry of the split.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum

import torch
import torch.nn.functional as F
from torch import nn

from .losses import TokenCrossEntropy
from .metrics import IGNORE_INDEX, Accuracy


class Reduction(str, Enum):
    """What one batch value of a loss is."""

    MEAN = "mean"  # a (weighted) mean: batches combine by their weight W_b
    SUM = "sum"  # a sum over samples: batches add up
    PER_SAMPLE = "per-sample"  # one value per sample (or entry): the mean of all entries


_CLASS_LOSS_MODULES = (nn.CrossEntropyLoss, nn.NLLLoss)
_CLASS_LOSS_FUNCTIONS = (F.cross_entropy, F.nll_loss)


def _options(fn: Callable) -> dict | None:
    """``{"weight", "ignore_index", "reduction"}`` of a torch class loss (module, function or partial)
    or of a ``TokenCrossEntropy``."""
    if isinstance(fn, TokenCrossEntropy):
        return {"weight": fn.weight, "ignore_index": fn.ignore_index, "reduction": fn.reduction}
    if isinstance(fn, _CLASS_LOSS_MODULES) and type(fn).forward in {c.forward for c in _CLASS_LOSS_MODULES}:
        return {"weight": fn.weight, "ignore_index": fn.ignore_index, "reduction": fn.reduction}
    if fn in _CLASS_LOSS_FUNCTIONS:
        return {"weight": None, "ignore_index": IGNORE_INDEX, "reduction": "mean"}
    if isinstance(fn, functools.partial) and fn.func in _CLASS_LOSS_FUNCTIONS and not fn.args:
        kw = fn.keywords
        if kw.get("size_average") is not None or kw.get("reduce") is not None:
            return None  # legacy arguments: leave the meaning to torch (sample weights)
        return {
            "weight": kw.get("weight"),
            "ignore_index": kw.get("ignore_index", IGNORE_INDEX),
            "reduction": kw.get("reduction", "mean"),
        }
    return None


def ignore_index_of(fn: Callable) -> int:
    """The label value ``fn`` skips: its ``ignore_index`` (module, partial or attribute), else -100."""
    options = _options(fn)
    if options is not None:
        return int(options["ignore_index"])
    value = getattr(fn, "ignore_index", IGNORE_INDEX)
    return int(value) if isinstance(value, int) and not isinstance(value, bool) else IGNORE_INDEX


def _reduction_of(fn: Callable) -> str:
    options = _options(fn)
    if options is not None:
        return options["reduction"]
    if isinstance(fn, functools.partial):
        return fn.keywords.get("reduction", getattr(fn.func, "reduction", "mean"))
    value = getattr(fn, "reduction", "mean")
    return value if isinstance(value, str) else "mean"


@dataclass(frozen=True)
class Weighting:
    """How one loss or metric combines over batches (see the module docstring).

    ``reduction``: ``Reduction``. ``weight``: ``"class-weights"``, ``"declared"`` or ``"samples"``
    (what a batch mean divides by; ``MEAN`` only). ``ignore_index`` and ``class_weight`` for
    ``"class-weights"``.
    """

    reduction: Reduction
    weight: str
    ignore_index: int | None = None
    class_weight: torch.Tensor | None = None

    @property
    def description(self) -> str:
        """One sentence for settings and the UI: what the whole-split value is."""
        if self.reduction is Reduction.SUM:
            return "sum over the split's samples (reduction='sum'), as one call on the whole split"
        if self.reduction is Reduction.PER_SAMPLE:
            return "mean over every per-sample entry the loss returns"
        if self.weight == "class-weights":
            weights = "the class weights of the targets" if self.class_weight is not None else "the targets"
            return f"mean weighted by {weights}, skipping ignore_index={self.ignore_index}"
        if self.weight == "declared":
            return "mean weighted by the loss's own batch_weight(output, target)"
        return "mean over samples"

    def batch_value(self, fn: Callable, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """``fn``'s value for one batch as a scalar (the mean of its entries if it returns one per sample)."""
        value = fn(output, target)
        if self.reduction is Reduction.PER_SAMPLE:
            return value.mean()
        return value

    def batch_weight(self, fn: Callable, target: torch.Tensor, output_at: Callable[[], torch.Tensor]) -> float:
        """``W_b`` of one batch (``1`` for a sum): float64. ``output_at()`` gives the batch's output if needed."""
        if self.reduction is Reduction.SUM:
            return 1.0
        if self.reduction is Reduction.PER_SAMPLE or self.weight == "samples":
            return float(target.shape[0])
        if self.weight == "class-weights":
            return float(class_weight_sum(target, self.class_weight, self.ignore_index))
        value = float(torch.as_tensor(fn.batch_weight(output_at(), target), dtype=torch.float64))
        if not (value >= 0 and value < float("inf")):
            raise ValueError(f"batch_weight(output, target) must be a finite number >= 0; got {value!r}.")
        return value

    def coefficients(self, weights: list[float]) -> list[float]:
        """Per-batch coefficients from the weights ``W_b``: ``W_b / W`` for a mean (``W = sum_b W_b``), 1 for a sum.

        Raises ``ValueError`` when every weight is 0 (nothing to average: every label ignored).
        """
        if self.reduction is Reduction.SUM:
            return [1.0] * len(weights)
        total = sum(weights)
        if not total > 0:
            raise ValueError(
                "every sample has weight 0 (all labels equal the ignore_index, or their class weights are 0), "
                "so the mean is undefined; give labels the loss counts."
            )
        return [w / total for w in weights]


def class_weight_sum(target: torch.Tensor, weight: torch.Tensor | None, ignore_index: int) -> torch.Tensor:
    """``sum_i weight[y_i]`` over the targets that are not ``ignore_index`` (count if ``weight`` is None); float64."""
    valid = target != ignore_index
    if weight is None:
        return valid.sum().to(torch.float64)
    safe = target.masked_fill(~valid, 0).reshape(-1)
    picked = weight.detach().to(target.device, torch.float64)[safe]
    return (picked * valid.reshape(-1)).sum()


def weighting_of(fn: Callable, target: torch.Tensor, value: torch.Tensor) -> Weighting:
    """How ``fn`` combines over batches, from what it is and what it returned on a probe batch.

    ``target``: the probe batch's targets; ``value = fn(output, target)`` on it. A value with the
    batch on its first axis is per-sample; a single number is a mean or a sum.
    """
    if value.dim() >= 1 and value.shape[0] == target.shape[0]:
        return Weighting(Reduction.PER_SAMPLE, "samples")
    if value.numel() != 1:
        raise ValueError(
            f"the loss returned shape {tuple(value.shape)} for a batch of {target.shape[0]}; it must return a scalar "
            "(the batch mean or sum) or one value per sample (first axis: the batch)."
        )
    reduction = _reduction_of(fn)
    if reduction == "sum":
        return Weighting(Reduction.SUM, "samples")
    options = _options(fn)
    if options is not None and not target.is_floating_point():
        weight = options["weight"]
        return Weighting(Reduction.MEAN, "class-weights", int(options["ignore_index"]), weight)
    if isinstance(fn, Accuracy):  # its batch_weight: the labels that are not ignore_index
        return Weighting(Reduction.MEAN, "class-weights", fn.ignore_index)
    if callable(getattr(fn, "batch_weight", None)):
        return Weighting(Reduction.MEAN, "declared")
    return Weighting(Reduction.MEAN, "samples")
