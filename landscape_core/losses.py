"""Losses of sequence models that torch's functional forms do not take as they are.

``TokenCrossEntropy``: cross-entropy of logits ``(..., C)`` against integer labels ``(...)``,
e.g. a language model's ``(n, T, C)`` against ``(n, T)`` with ``-100`` on padding and on the
tokens that are not predicted (Hugging Face's convention for masked and causal LM labels).
Its batch value is the mean over the counted tokens, so over a split it combines by the count
of counted tokens in each batch (``landscape_core.weighting``), which makes it exact under
batching where a mean of per-batch means is not.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .metrics import IGNORE_INDEX


class TokenCrossEntropy:
    """Mean cross-entropy over the labelled positions of logits ``(..., C)`` and labels ``(...)``.

    ``ignore_index``: label value skipped (-100); ``weight``: class weights ``(C,)`` (the mean is
    then weighted by them, as torch's); ``reduction``: ``"mean"`` or ``"sum"``;
    ``label_smoothing`` as in ``F.cross_entropy``.
    """

    def __init__(
        self,
        ignore_index: int = IGNORE_INDEX,
        weight: torch.Tensor | None = None,
        reduction: str = "mean",
        label_smoothing: float = 0.0,
    ):
        if reduction not in ("mean", "sum"):
            raise ValueError(f"reduction must be 'mean' or 'sum'; got {reduction!r}.")
        if not 0.0 <= float(label_smoothing) <= 1.0:
            raise ValueError(f"label_smoothing must lie in [0, 1]; got {label_smoothing!r}.")
        self.ignore_index = int(ignore_index)
        self.weight = weight
        self.reduction = reduction
        self.label_smoothing = float(label_smoothing)

    def __call__(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if output.dim() != target.dim() + 1 or output.shape[:-1] != target.shape:
            raise ValueError(
                f"TokenCrossEntropy takes logits (..., C) and labels (...); got logits {tuple(output.shape)} "
                f"and labels {tuple(target.shape)}."
            )
        weight = None if self.weight is None else self.weight.to(output.device, output.dtype)
        return F.cross_entropy(
            output.reshape(-1, output.shape[-1]),
            target.reshape(-1),
            weight=weight,
            ignore_index=self.ignore_index,
            reduction=self.reduction,
            label_smoothing=self.label_smoothing,
        )

    def __repr__(self) -> str:
        weight = None if self.weight is None else self.weight.tolist()
        return (
            f"TokenCrossEntropy(ignore_index={self.ignore_index}, weight={weight}, reduction={self.reduction!r}, "
            f"label_smoothing={self.label_smoothing})"
        )
