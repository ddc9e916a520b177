"""The Interpolation page's gradient section: ||grad L|| along the straight path, beside its loss.

UI only: the norms come from ``landscape_core.gradient_norm.path`` (exact full-split gradient
at each alpha of the page's path, disk-cached like the plane of the Surface page's map).
"""

from __future__ import annotations

import altair as alt
import numpy as np
import pandas as pd
import streamlit as st

from dashboard_ui import ui
from landscape_core import gradient_norm, jobs
from landscape_core.batchnorm import has_batchnorm

GRAD_COLOR = "#d9480f"
LOSS_COLOR = "#495057"
LOG_RATIO = 30.0  # a log axis when the norms span more than this factor


def path_frame(grads, loss_path, split: str) -> pd.DataFrame:
    """One row per alpha: the gradient norm and the loss of ``loss_path`` at that alpha (NaN where absent)."""
    norms = grads.values[f"{split}_grad_norm"]
    loss = None if loss_path is None else loss_path.values.get(f"{split}_loss")
    if loss is not None and not np.array_equal(loss_path.alphas, grads.alphas):
        loss = None
    return pd.DataFrame(
        {
            "alpha": grads.alphas,
            "gradient norm": norms,
            "loss": np.full(len(norms), np.nan) if loss is None else np.asarray(loss, dtype=np.float64),
        }
    )


def log_axis(norms: np.ndarray) -> bool:
    """Whether the positive finite norms span more than ``LOG_RATIO`` (a linear axis would flatten the small ones)."""
    finite = norms[np.isfinite(norms) & (norms > 0)]
    return finite.size > 1 and finite.max() / finite.min() > LOG_RATIO


def gradient_chart(frame: pd.DataFrame, split: str) -> alt.LayerChart:
    """||grad L|| (right axis, orange) over the loss (left axis, grey), one x axis in alpha."""
    x = alt.X("alpha:Q", title="alpha (0 = start, 1 = end)")
    tooltip = [
        alt.Tooltip("alpha:Q", format=".3f"),
        alt.Tooltip("loss:Q", format=".4g"),
        alt.Tooltip("gradient norm:Q", format=".4g"),
    ]
    norms = frame["gradient norm"].to_numpy()
    grad_scale = alt.Scale(type="log") if log_axis(norms) else alt.Scale(zero=True)
    grad = (
        alt.Chart(frame)
        .mark_line(color=GRAD_COLOR, strokeWidth=2.5, point=alt.OverlayMarkDef(color=GRAD_COLOR))
        .encode(
            x=x,
            y=alt.Y(
                "gradient norm:Q",
                title=f"||grad L_{split}|| (orange)",
                scale=grad_scale,
                axis=alt.Axis(orient="right", titleColor=GRAD_COLOR, labelColor=GRAD_COLOR, grid=False),
            ),
            tooltip=tooltip,
        )
    )
    layers = [grad]
    if frame["loss"].notna().any():
        loss = (
            alt.Chart(frame)
            .mark_line(color=LOSS_COLOR, strokeDash=[5, 3], strokeWidth=1.5)
            .encode(
                x=x,
                y=alt.Y(
                    "loss:Q",
                    title=f"{split} loss (grey, dashed)",
                    scale=alt.Scale(zero=False),
                    axis=alt.Axis(orient="left", titleColor=LOSS_COLOR),
                ),
                tooltip=tooltip,
            )
        )
        layers = [loss, grad]
    chart = alt.layer(*layers)
    if len(layers) == 2:
        chart = chart.resolve_scale(y="independent")
    return chart.properties(title=f"Gradient norm along the path ({split} split)", width="container", height=300)


def readout(frame: pd.DataFrame) -> str:
    norms, alphas = frame["gradient norm"].to_numpy(), frame["alpha"].to_numpy()
    if not np.isfinite(norms).any():
        return "The loss is not finite anywhere on the path, so there is no gradient to show."
    k = int(np.nanargmax(norms))
    ends = {a: n for a, n in zip(alphas, norms) if a in (0.0, 1.0)}
    text = f"The gradient is steepest at alpha = {alphas[k]:.2f}: **||grad L|| = {norms[k]:.4g}**"
    if len(ends) == 2:
        text += f" (at the ends: {ends[0.0]:.3g} at alpha = 0, {ends[1.0]:.3g} at alpha = 1)"
    text += "."
    if np.isnan(norms).any():
        text += f" {int(np.isnan(norms).sum())} points have no finite loss (diverged) and are left out."
    return text


def path_gradient(problem, end_a: dict, end_b: dict, paths: dict, settings: dict) -> None:
    """The section, on request: ||grad L|| at every alpha of the page's path (``settings``: the page's
    ``steps``, ``span`` and ``splits``), beside the loss along the same path."""
    split = "train" if "train" in settings["splits"] else settings["splits"][0]
    steps, span = settings["steps"], tuple(settings["span"])
    st.subheader("Where gradients turn erratic: the gradient norm along the path")
    bn = has_batchnorm(problem)
    note = (
        " BatchNorm layers use the start's stored statistics at every alpha (the 'keep' option): a gradient "
        "through statistics recomputed at each alpha is another quantity, so the loss drawn beside it is the "
        "path with the start's statistics kept."
        if bn
        else ""
    )
    st.caption(
        f"||grad L_{split}(theta(alpha))||, the exact gradient of the full-split loss at each of the {steps} points of "
        "the path (one forward and one backward pass each). A spike where the loss is smooth marks a region where a "
        f"gradient step is unreliable.{note}"
    )

    def run(progress, cancel):
        start = problem.at(end_a["theta"], end_a["buffers"]) if bn else problem
        return gradient_norm.path(
            start, end_a["theta"], end_b["theta"], steps=steps, span=span, split=split, progress=progress, cancel=cancel
        )

    key = jobs.job_key("interpolation-grad-norm", {**settings, "split": split})
    grads = ui.run_job(key, run, f"gradient norm at the {steps} points of the path", auto=False)
    if grads is None:
        return
    loss_path = paths.get("keep") if bn else next(iter(paths.values()), None)
    frame = path_frame(grads, loss_path, split)
    chart = gradient_chart(frame, split)
    st.altair_chart(chart, width="stretch")
    st.markdown(readout(frame))
    if bn and loss_path is None:
        st.caption(
            "Tick 'Also draw the other two BatchNorm options' to draw the loss with the start's statistics here."
        )
    with ui.section("The gradient-norm table"):
        st.dataframe(ui.readable(frame), hide_index=True, width="stretch")
    ui.downloads(grads, chart=chart, name=f"path_{split}_grad_norm")
