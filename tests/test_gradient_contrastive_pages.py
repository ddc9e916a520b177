"""AppTest runs of issue 15's parts 2 and 3 on the pages: the gradient-norm map on Surface, the
gradient column and the contrastive section on the Text page; the numbers are the library's."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True)
def synchronous_jobs(monkeypatch):
    monkeypatch.setenv("LANDSCAPE_JOB_WAIT", "inf")
    monkeypatch.syspath_prepend(str(ROOT))


def test_surface_gradient_norm_map_is_the_library_on_the_same_plane():
    from landscape_core import demos, directions, gradient_norm

    at = AppTest.from_file(str(ROOT / "pages" / "surface.py"), default_timeout=1800)
    at.session_state["ui_workspace"] = "digits-mlp"
    at.session_state["ui_subset"] = 256
    at.session_state["surface_steps"] = 11
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    next(b for b in at.button if b.label.startswith("Run: gradient norm")).click()
    at.run()
    assert not at.exception and not at.error, [e.value for e in at.exception] + [e.value for e in at.error]
    text = next(m.value for m in at.markdown if m.value.startswith("Gradient norm at the base point"))
    problem = demos.load("digits-mlp").problem.subset(256, seed=0)
    d = directions.random(problem, count=2, norm="filter", ignore=("bias", "norm"), seed=0)
    span = at.slider(key="surface_span").value
    grads = gradient_norm.plane(problem, d[0], d[1], span=(-span, span), steps=11)
    assert f"**{grads.center_value('train_grad_norm'):.3g}**" in text
    assert np.isfinite(grads.values["train_grad_norm"]).all()


def test_text_page_gradient_column_and_contrastive_section():
    from landscape_core import demos, embedding_motion

    at = AppTest.from_file(str(ROOT / "pages" / "text.py"), default_timeout=1800)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]
    ranking = at.dataframe[0].value
    assert "gradient norm ||dL/dE||" in ranking.columns and (ranking["gradient norm ||dL/dE||"] > 0).all()
    readout = next(m.value for m in at.markdown if "is the flatter encoder" in m.value)
    ws = demos.load("text-contrastive")
    m = embedding_motion.motion(ws.problem, ws.encodings["val"].ids[:150], 0.05, 8, 0)
    assert f"median movement **{np.median(m.average):.3g}**" in readout
    moved = next(d.value for d in at.dataframe if "average movement" in d.value.columns)
    assert moved["average movement"].is_monotonic_decreasing


# -- the gradient norm along the Interpolation page's path -------------------------------------------
def _drawn_gradient(at) -> dict:
    """``{column: array}`` of the data behind the page's gradient-norm chart (alpha, gradient norm, loss)."""
    import json

    for chart in at.get("vega_lite_chart"):
        spec = json.loads(chart.proto.spec)
        if "Gradient norm along the path" not in json.dumps(spec.get("title", "")):
            continue
        rows = [r for d in spec.get("datasets", {}).values() for r in d if "gradient norm" in r]
        if not rows and chart.proto.datasets:  # data sent as Arrow beside the spec
            import pyarrow as pa

            table = pa.ipc.open_stream(chart.proto.datasets[0].data.data).read_all().to_pandas()
            rows = table.to_dict("records")
        return {k: np.array([np.nan if r[k] is None else r[k] for r in rows], dtype=float) for k in rows[0]}
    raise AssertionError("no gradient-norm chart on the page")


def _autograd_norm(problem, theta, buffers) -> float:
    """||d L / d theta|| by ``torch.autograd.grad`` of the mean loss over the whole split in one pass."""
    import torch

    X, y = problem.splits["train"].head(problem.splits["train"].n)
    theta = theta.detach().double().clone().requires_grad_(True)
    model = problem.model.double().eval()
    try:
        params = {k: v.double() for k, v in problem.space.unflatten(theta).items()}
        state = {**{k: v.double() for k, v in buffers.items()}, **params}
        loss = problem.loss(torch.func.functional_call(model, state, (X.double(),)), y)
        (grad,) = torch.autograd.grad(loss, theta)
    finally:
        problem.model.float()
    return float(grad.norm())


@pytest.mark.parametrize("demo", ["digits-mlp", "digits-bn-cnn"])
def test_interpolation_gradient_norm_is_the_library_and_autograd(demo):
    import torch

    from landscape_core import demos, first_screen, gradient_norm, interpolation
    from landscape_core.defaults import path_ends

    at = AppTest.from_file(str(ROOT / "pages" / "interpolation.py"), default_timeout=1800)
    at.session_state["ui_workspace"] = demo
    at.session_state["ui_subset"] = 256
    at.session_state["interp_steps"] = 5
    at.run()
    assert not at.exception and not at.error, [e.value for e in at.exception] + [e.value for e in at.error]
    bn = demo == "digits-bn-cnn"
    if bn:  # start at a checkpoint: its own BatchNorm statistics, not the final model's
        start_name = next(o for o in at.selectbox(key="interp_a").options if o.startswith("checkpoint:"))
        at.selectbox(key="interp_a").set_value(start_name)
        next(b for b in at.button if b.proto.is_form_submitter).click()
        at.run()
    charts_before = len(at.get("vega_lite_chart"))
    next(b for b in at.button if b.label.startswith("Run: gradient norm")).click()
    at.run()
    assert not at.exception and not at.error, [e.value for e in at.exception] + [e.value for e in at.error]
    assert len(at.get("vega_lite_chart")) == charts_before + 1
    drawn = _drawn_gradient(at)
    np.testing.assert_allclose(drawn["alpha"], [0, 0.25, 0.5, 0.75, 1.0])

    ws = demos.load(demo)
    problem = ws.problem.subset(256, seed=0)
    start_end, end = path_ends(ws)
    if bn:
        start_end = "A:" + start_name.split(": ", 1)[1]
        assert not torch.equal(
            ws.checkpoint(start_end[2:]).buffers["1.running_mean"], problem.buffers["1.running_mean"]
        )
    (theta_a, buffers_a), (theta_b, buffers_b) = (first_screen.endpoint(ws, e) for e in (start_end, end))
    start = problem.at(theta_a, buffers_a) if bn else problem
    grads = gradient_norm.path(start, theta_a, theta_b, steps=5, use_cache=False).values["train_grad_norm"]
    np.testing.assert_allclose(drawn["gradient norm"], grads, rtol=1e-9)
    for k in (1, 3):  # independent of the library: autograd of the whole split's mean loss in float64
        theta = theta_a.double() + drawn["alpha"][k] * (theta_b.double() - theta_a.double())
        assert drawn["gradient norm"][k] == pytest.approx(_autograd_norm(problem, theta, buffers_a), rel=1e-4)
    # beside it, the loss of the path the gradient belongs to (BatchNorm: the start's statistics kept)
    loss = interpolation.linear(
        problem, theta_a, theta_b, steps=5, bn="keep" if bn else "recompute", buffers_a=buffers_a, buffers_b=buffers_b
    ).values["train_loss"]
    np.testing.assert_allclose(drawn["loss"], loss, rtol=1e-9)
    table = next(d.value for d in at.dataframe if "gradient norm" in d.value.columns)
    np.testing.assert_allclose(table["gradient norm"].to_numpy(dtype=float), grads, rtol=1e-9)
    readout = next(m.value for m in at.markdown if m.value.startswith("The gradient is steepest"))
    assert f"**||grad L|| = {np.max(grads):.4g}**" in readout
