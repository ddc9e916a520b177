"""Built-in metrics: quantities evaluated beside the loss (accuracy).

A metric is ``fn(output, target) -> batch value`` like the loss, and combines over batches the
same way (``landscape_core.weighting``). ``Accuracy`` declares its own batch weight: the number
of labels it counts (labels equal to ``ignore_index`` are skipped, as the loss skips them).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

IGNORE_INDEX = -100  # torch's default ignore_index of cross_entropy and nll_loss


class Accuracy:
    """Share of labelled positions whose arg-max logit equals the integer label.

    ``output``: logits ``(..., C)`` (``class_dim=-1``) or ``(n, C, ...)`` (``class_dim=1``, torch's
    cross-entropy layout); ``target``: integer labels of the other axes, ``(...)``. Labels equal to
    ``ignore_index`` are skipped: the value is the mean over the others (NaN if there are none).
    A batch whose output holds a NaN or inf is diverged: its accuracy is NaN, never a count of
    whatever the arg-max of NaN returns.

    ``batch_weight(output, target)``: the number of labels counted, what the batch mean divides by.
    """

    def __init__(self, ignore_index: int = IGNORE_INDEX, class_dim: int = -1):
        if class_dim not in (-1, 1):
            raise ValueError(f"class_dim must be -1 (logits (..., C)) or 1 (logits (n, C, ...)); got {class_dim!r}.")
        self.ignore_index = int(ignore_index)
        self.class_dim = int(class_dim)

    def __call__(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        correct = (output.argmax(dim=self.class_dim) == target) & (target != self.ignore_index)
        value = correct.sum().to(output.dtype) / (target != self.ignore_index).sum().to(output.dtype)
        return torch.where(torch.isfinite(output).all(), value, torch.full_like(value, float("nan")))

    def batch_weight(self, output, target: torch.Tensor) -> torch.Tensor:
        """Number of labels that are not ``ignore_index`` (``output`` is not needed)."""
        return (target != self.ignore_index).sum()

    def __repr__(self) -> str:
        return f"Accuracy(ignore_index={self.ignore_index}, class_dim={self.class_dim})"

    def __eq__(self, other) -> bool:
        return type(other) is Accuracy and (other.ignore_index, other.class_dim) == (self.ignore_index, self.class_dim)

    def __hash__(self) -> int:
        return hash((Accuracy, self.ignore_index, self.class_dim))


accuracy = Accuracy()  # logits (..., C), labels (...), -100 skipped

BUILTIN_METRICS: dict[str, Callable] = {"accuracy": accuracy}


def class_axis(output: torch.Tensor, target: torch.Tensor) -> int | None:
    """Where the class axis of ``output`` is if it holds logits for the integer labels ``target``.

    ``-1`` for logits ``(..., C)`` against labels ``(...)``; ``1`` for torch's ``(n, C, d1, ...)`` against
    ``(n, d1, ...)``; ``None`` when the task is not classification (float targets, one output column,
    shapes that do not pair up).
    """
    if not isinstance(output, torch.Tensor) or target.is_floating_point() or target.is_complex():
        return None
    if output.dim() != target.dim() + 1 or output.dim() < 2:
        return None
    if output.shape[:-1] == target.shape and output.shape[-1] >= 2:
        return -1
    if output.dim() >= 3 and output.shape[0] == target.shape[0] and output.shape[2:] == target.shape[1:]:
        return 1 if output.shape[1] >= 2 else None
    return None
