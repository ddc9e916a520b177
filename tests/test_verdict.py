"""The comparison sentence and table: exact strings from numbers."""

import math

import numpy as np
import pytest

from landscape_core.verdict import metric_table, ratio, slice_rise, verdict


def test_verdict_example_sentence():
    a = {"lambda_max": 10.0, "slice_rise": 0.5, "val_loss": 0.09, "val_accuracy": 0.93, "train_loss": 0.01}
    b = {"lambda_max": 31.0, "slice_rise": 1.2, "val_loss": 0.12, "val_accuracy": 0.912, "train_loss": 0.02}
    assert verdict(a, b, ("small batch", "large batch")) == (
        "Large batch's minimum is 3.1x sharper than small batch's by lambda_max (top Hessian eigenvalue); "
        "its 1D slices rise 2.4x faster; validation loss 0.12 vs 0.09; "
        "validation accuracy 91.2% vs 93.0% (large batch vs small batch)."
    )


def test_verdict_flatter_slower_and_same():
    a = {"lambda_max": 8.0, "slice_rise": 2.0}
    b = {"lambda_max": 2.0, "slice_rise": 1.0}
    assert (
        verdict(a, b)
        == "B's minimum is 4.0x flatter than A's by lambda_max (top Hessian eigenvalue); its 1D slices rise 2.0x slower."
    )
    assert (
        verdict({"lambda_max": 1.0}, {"lambda_max": 1.04})
        == "B's minimum is about as sharp as A's by lambda_max (top Hessian eigenvalue)."
    )
    assert verdict({"slice_rise": 1.0}, {"slice_rise": 3.0}) == "B's 1D slices rise 3.0x faster than A's."


def test_verdict_skips_missing_and_nonpositive():
    # a negative lambda_max (a saddle) has no meaningful ratio: fall through to the next sharpness metric
    a = {"lambda_max": -1.0, "hessian_trace": 10.0, "train_loss": 0.5}
    b = {"lambda_max": 2.0, "hessian_trace": 5.0, "train_loss": float("nan")}
    assert verdict(a, b) == "B's minimum is 2.0x flatter than A's by the Hessian trace."
    assert verdict({}, {"val_loss": 1.0}) == "No metric is available for both A and B; nothing to compare yet."


def test_metric_table_ratios_and_order():
    rows = metric_table({"val_loss": 0.1, "lambda_max": 2.0, "custom": 3.0}, {"val_loss": 0.3, "lambda_max": -1.0})
    assert [r["metric"] for r in rows] == ["lambda_max", "val_loss", "custom"]
    assert rows[0]["ratio"] is None
    assert rows[1]["ratio"] == pytest.approx(3.0)
    assert rows[2]["B"] is None and rows[2]["A"] == 3.0
    assert ratio(0.0, 1.0) is None and ratio(2.0, 1.0) == 0.5


def test_slice_rise_on_quadratics():
    alphas = np.linspace(-1, 1, 21)
    alphas[10] = 0.0
    curves = np.stack([c * alphas**2 + 0.3 for c in (1.0, 2.0, 6.0)])
    assert slice_rise(alphas, curves) == pytest.approx(3.0, abs=1e-15)
    curves[1, -1] = np.inf
    assert math.isnan(slice_rise(alphas, curves))
    with pytest.raises(ValueError, match="contain 0"):
        slice_rise(np.linspace(0.1, 1, 5), np.ones((1, 5)))
