"""The plain-language comparison of two models, from numbers (a pure function, no I/O).

``metric_table(a, b)`` lines up every metric both models have, with the ratio B / A;
``verdict(a, b, labels)`` says the same in one sentence a team demo can read aloud:

    "large batch's minimum is 3.1x sharper than small batch's by lambda_max (top Hessian
    eigenvalue); its 1D slices rise 2.4x faster; validation loss 0.12 vs 0.09."

Metrics are plain dicts ``{name: float}``; known names (``METRICS``) get wording, others
appear in the table only. Non-finite values are skipped; a ratio is only formed when both
values are positive (a ratio of a negative eigenvalue means nothing).

``slice_rise(alphas, curves)`` is the 1D-slice metric: the mean rise of the loss from the
base point to the ends of the span, averaged over both ends and over several directions.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class MetricInfo:
    """How to speak of one metric. ``sharpness``: a bigger value means a sharper minimum."""

    title: str
    phrase: str
    sharpness: bool = False
    percent: bool = False


METRICS: dict[str, MetricInfo] = {
    "lambda_max": MetricInfo("lambda_max (top Hessian eigenvalue)", "by lambda_max (top Hessian eigenvalue)", True),
    "hessian_trace": MetricInfo("Hessian trace", "by the Hessian trace", True),
    "epsilon_sharpness": MetricInfo("epsilon-sharpness", "by epsilon-sharpness", True),
    "adaptive_sharpness": MetricInfo("adaptive sharpness", "by adaptive sharpness", True),
    "average_sharpness": MetricInfo("average sharpness", "by average sharpness", True),
    "adaptive_average_sharpness": MetricInfo(
        "adaptive average sharpness (mean loss rise under noise relative to |theta|)",
        "by adaptive average sharpness",
        True,
    ),
    "slice_rise": MetricInfo("1D slice rise (mean loss increase at +/- span)", "its 1D slices rise"),
    "train_loss": MetricInfo("train loss", "train loss"),
    "val_loss": MetricInfo("validation loss", "validation loss"),
    "train_accuracy": MetricInfo("train accuracy", "train accuracy", percent=True),
    "val_accuracy": MetricInfo("validation accuracy", "validation accuracy", percent=True),
}

SAME_WITHIN = 0.05  # ratios within 5% of 1 are "about the same"


def _finite(value) -> bool:
    return value is not None and isinstance(value, (int, float, np.floating)) and math.isfinite(float(value))


def ratio(a: float | None, b: float | None) -> float | None:
    """``b / a`` when both are finite and positive, else ``None``."""
    if not (_finite(a) and _finite(b)) or a <= 0 or b <= 0:
        return None
    return float(b) / float(a)


def metric_table(a: dict, b: dict) -> list[dict]:
    """One row per metric present in ``a`` or ``b``: ``{"metric", "title", "A", "B", "ratio"}``.

    Known metrics first, in ``METRICS`` order; ``ratio`` is ``B / A`` or ``None``.
    """
    names = [m for m in METRICS if m in a or m in b] + sorted((set(a) | set(b)) - set(METRICS))
    rows = []
    for name in names:
        va, vb = a.get(name), b.get(name)
        rows.append(
            {
                "metric": name,
                "title": METRICS[name].title if name in METRICS else name.replace("_", " "),
                "A": float(va) if _finite(va) else None,
                "B": float(vb) if _finite(vb) else None,
                "ratio": ratio(va, vb),
            }
        )
    return rows


def _value(v: float, info: MetricInfo) -> str:
    return f"{100 * v:.1f}%" if info.percent else f"{v:.3g}"


def _times(r: float) -> str:
    return f"{r:.1f}x"


def verdict(a: dict, b: dict, labels: tuple[str, str] = ("A", "B")) -> str:
    """One sentence comparing model B with model A (see the module docstring).

    Sharpness: the first known sharpness metric with a ratio; slice rise; then the
    validation (else train) loss and accuracy as "B vs A". Returns a sentence saying nothing is comparable if so.
    """
    name_a, name_b = labels
    parts: list[str] = []
    for name, info in METRICS.items():
        if not info.sharpness:
            continue
        r = ratio(a.get(name), b.get(name))
        if r is None:
            continue
        if abs(r - 1) <= SAME_WITHIN:
            parts.append(f"{name_b}'s minimum is about as sharp as {name_a}'s {info.phrase}")
        elif r > 1:
            parts.append(f"{name_b}'s minimum is {_times(r)} sharper than {name_a}'s {info.phrase}")
        else:
            parts.append(f"{name_b}'s minimum is {_times(1 / r)} flatter than {name_a}'s {info.phrase}")
        break
    r = ratio(a.get("slice_rise"), b.get("slice_rise"))
    if r is not None:
        subject, than = ("its 1D slices", "") if parts else (f"{name_b}'s 1D slices", f" than {name_a}'s")
        if abs(r - 1) <= SAME_WITHIN:
            parts.append(f"{subject} rise about as fast as {name_a}'s")
        elif r > 1:
            parts.append(f"{subject} rise {_times(r)} faster{than}")
        else:
            parts.append(f"{subject} rise {_times(1 / r)} slower{than}")
    values = []
    split = "val" if _finite(a.get("val_loss")) and _finite(b.get("val_loss")) else "train"
    for name in (f"{split}_loss", f"{split}_accuracy"):
        if _finite(a.get(name)) and _finite(b.get(name)):
            info = METRICS[name]
            values.append(f"{info.phrase} {_value(b[name], info)} vs {_value(a[name], info)}")
    if values:
        values[-1] += f" ({name_b} vs {name_a})"
    parts += values
    if not parts:
        return f"No metric is available for both {name_a} and {name_b}; nothing to compare yet."
    sentence = "; ".join(parts)
    return sentence[0].upper() + sentence[1:] + "."


def slice_rise(alphas, curves) -> float:
    """Mean loss increase from the base point to the ends of 1D slices.

    ``alphas``: ``(steps,)`` increasing, containing 0; ``curves``: ``(n_directions, steps)``
    loss along each direction. Returns the mean over directions of
    ``(L(alphas[0]) + L(alphas[-1])) / 2 - L(0)``; NaN if any of those values is not finite
    (a diverged end is reported, not averaged away).
    """
    alphas = np.asarray(alphas, dtype=np.float64)
    curves = np.atleast_2d(np.asarray(curves, dtype=np.float64))
    if alphas.ndim != 1 or curves.shape[-1] != alphas.shape[0]:
        raise ValueError(f"curves must have shape (n, {alphas.shape[0]}) to match alphas; got {curves.shape}.")
    zero = np.flatnonzero(alphas == 0.0)
    if not len(zero):
        raise ValueError("alphas must contain 0 (the base point) to measure a rise from it.")
    rise = (curves[:, 0] + curves[:, -1]) / 2 - curves[:, zero[0]]
    return float(np.mean(rise)) if np.all(np.isfinite(rise)) else float("nan")
