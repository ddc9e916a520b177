"""Interpolation page: the loss on the straight line between two models, and its barrier.

UI only: the path and its barrier come from ``landscape_core.interpolation.linear``. The user
picks two endpoints (checkpoints of A, or the final A and B models when they share an
architecture), the span and steps, and how BatchNorm statistics are set along the path.
"""

from __future__ import annotations

import altair as alt
import numpy as np
import pandas as pd
import streamlit as st

from dashboard_ui import gradient_sections, ui
from dashboard_ui.charts import BASE_COLOR, SPLIT_COLORS
from landscape_core import interpolation, jobs
from landscape_core.batchnorm import has_batchnorm
from landscape_core.defaults import INTERPOLATION, path_ends, same_space
from landscape_core.directions import digest
from landscape_core.snippet import problem_code

SPANS = {
    "0 to 1 (A to B)": (0.0, 1.0),
    "-0.25 to 1.25 (a little beyond each end)": (-0.25, 1.25),
    "-0.5 to 1.5 (well beyond each end)": (-0.5, 1.5),
}
BN_MODES = ("recompute", "interpolate", "keep")
BN_LABELS = {
    "recompute": "recompute (fresh statistics at every alpha)",
    "interpolate": "interpolate A's and B's statistics",
    "keep": "keep A's statistics",
}
BN_SHORT = {
    "recompute": "recomputed statistics",
    "interpolate": "interpolated statistics",
    "keep": "A's statistics kept",
}
BN_COLORS = {"recompute": "#2b8a3e", "interpolate": "#7048e8", "keep": "#c92a2a"}
BARRIER_COLOR = "#212529"
BN_NOTE = (
    "BatchNorm layers normalize with the running mean and variance stored with each model. Halfway "
    "between A and B the activations have other statistics than either endpoint, so *keeping* A's "
    "statistics (or *interpolating* A's and B's) mis-normalizes every layer and inflates the barrier: "
    "the bump is an artefact of stale statistics, not of the landscape. *Recompute* resets the "
    "statistics at every alpha with one pass over the train split (no augmentation, no randomness), "
    "which is what a model at that point would really use (Frankle et al. 2020; Jordan et al. 2023)."
)


# -- endpoints --------------------------------------------------------------------------------
def _checkpoint_choices(checkpoints) -> dict[str, dict]:
    return {
        f"checkpoint: {ckpt.name}": {
            "theta": ckpt.theta,
            "buffers": ckpt.buffers,
            "code": f"ws.checkpoint({ckpt.name!r}).theta, ws.checkpoint({ckpt.name!r}).buffers",
        }
        for ckpt in checkpoints
    }


def endpoint_choices(ws) -> dict[str, dict]:
    """Every point that can be an end of the path: ``{label: {theta, buffers, code}}``."""
    a_name, b_name = ws.labels
    choices = {
        f"{a_name} (final model A)": {
            "theta": ws.problem.theta0,
            "buffers": ws.problem.buffers,
            "code": "ws.problem.theta0, ws.problem.buffers",
        }
    }
    choices.update(_checkpoint_choices(ws.checkpoints))
    if ws.compare is not None and same_space(ws.problem, ws.compare):
        choices[f"{b_name} (final model B)"] = {
            "theta": ws.compare.theta0,
            "buffers": ws.compare.buffers,
            "code": "ws.compare.theta0, ws.compare.buffers",
        }
        choices.update(_checkpoint_choices(ws.compare_checkpoints))
    return choices


def default_pair(labels: list[str], ws) -> tuple[int, int]:
    """Positions in ``labels`` of the default ends, ``defaults.path_ends`` (as ``landscape interpolate``)."""

    def position(end: str) -> int:
        if end in ("A", "B"):
            marker = f"(final model {end})"
            return next((i for i, name in enumerate(labels) if name.endswith(marker)), 0)
        wanted = f"checkpoint: {end.split(':', 1)[1]}"
        return labels.index(wanted) if wanted in labels else 0

    start, end = path_ends(ws)
    return position(start), position(end)


# -- charts -----------------------------------------------------------------------------------
def path_frame(path, metric: str, splits: list[str]) -> pd.DataFrame:
    rows = []
    for split in splits:
        q = f"{split}_{metric}"
        if q in path.values:
            rows += [{"alpha": a, "value": v, "split": split} for a, v in zip(path.alphas, path.values[q])]
    return pd.DataFrame(rows)


def split_color(splits: list[str]) -> alt.Color:
    domain = list(splits)
    return alt.Color(
        "split:N",
        title="data split",
        scale=alt.Scale(domain=domain, range=[SPLIT_COLORS.get(s, "#495057") for s in domain]),
    )


def endpoint_rules() -> alt.Chart:
    marks = pd.DataFrame({"alpha": [0.0, 1.0], "end": ["A (alpha = 0)", "B (alpha = 1)"]})
    rules = alt.Chart(marks).mark_rule(color=BASE_COLOR, strokeDash=[4, 3]).encode(x="alpha:Q", tooltip=["end:N"])
    text = (
        alt.Chart(marks.assign(label=["A", "B"]))
        .mark_text(color=BASE_COLOR, dy=-6, fontWeight="bold", baseline="bottom")
        .encode(x="alpha:Q", y=alt.value(0), text="label:N")
    )
    return rules + text


def loss_chart(path, splits: list[str], log: bool, title: str) -> alt.LayerChart:
    """Loss along alpha per split, each split's straight chord (dashed) and its barrier (a black bar)."""
    frame = path_frame(path, "loss", splits)
    color = split_color(splits)
    y_scale = alt.Scale(type="log") if log else alt.Scale(zero=False)
    x = alt.X("alpha:Q", title="alpha (0 = A, 1 = B; theta = (1 - alpha) theta_A + alpha theta_B)")
    y = alt.Y("value:Q", title="loss (mean over the split)", scale=y_scale)
    layers = [
        alt.Chart(frame)
        .mark_line(point=len(path.alphas) <= 60)
        .encode(
            x=x,
            y=y,
            color=color,
            tooltip=[alt.Tooltip("alpha:Q", format=".3f"), alt.Tooltip("value:Q", title="loss", format=".4g"), "split"],
        )
    ]
    chords, bars = [], []
    for split in splits:
        info = path.barrier.get(f"{split}_loss")
        if not info:
            continue
        chords += [
            {"alpha": 0.0, "value": info["loss_a"], "split": split},
            {"alpha": 1.0, "value": info["loss_b"], "split": split},
        ]
        if info["height"] is not None:
            a = info["alpha"]
            chord = (1 - a) * info["loss_a"] + a * info["loss_b"]
            bars.append(
                {
                    "alpha": a,
                    "value": chord,
                    "top": chord + info["height"],
                    "split": split,
                    "label": f"{split} barrier {info['height']:.3g}",
                }
            )
    if chords:
        layers.append(
            alt.Chart(pd.DataFrame(chords))
            .mark_line(strokeDash=[6, 4], strokeWidth=1.5)
            .encode(x="alpha:Q", y=alt.Y("value:Q", scale=y_scale), color=color, detail="split:N")
        )
    if bars:
        bar_frame = pd.DataFrame(bars)
        layers.append(
            alt.Chart(bar_frame)
            .mark_rule(color=BARRIER_COLOR, strokeWidth=2.5)
            .encode(
                x="alpha:Q",
                y=alt.Y("value:Q", scale=y_scale),
                y2="top:Q",
                tooltip=[alt.Tooltip("label:N", title="barrier"), alt.Tooltip("alpha:Q", format=".3f")],
            )
        )
        for i, row in enumerate(bars):  # alternate sides so two splits' labels do not collide
            layers.append(
                alt.Chart(pd.DataFrame([row]))
                .mark_text(
                    align="left" if i % 2 == 0 else "right",
                    dx=6 if i % 2 == 0 else -6,
                    dy=-6,
                    color=BARRIER_COLOR,
                    fontWeight="bold",
                )
                .encode(x="alpha:Q", y=alt.Y("top:Q", scale=y_scale), text="label:N")
            )
    layers.append(endpoint_rules())
    return alt.layer(*layers).properties(title=title, width="container", height=340)


def accuracy_chart(path, splits: list[str]) -> alt.LayerChart | None:
    frame = path_frame(path, "accuracy", splits)
    if frame.empty:
        return None
    line = (
        alt.Chart(frame)
        .mark_line(point=len(path.alphas) <= 60)
        .encode(
            x=alt.X("alpha:Q", title="alpha (0 = A, 1 = B)"),
            y=alt.Y(
                "value:Q",
                title="accuracy (% of samples correct)",
                axis=alt.Axis(format="%"),
                scale=alt.Scale(zero=False),
            ),
            color=split_color(splits),
            tooltip=[alt.Tooltip("alpha:Q", format=".3f"), alt.Tooltip("value:Q", format=".1%"), "split"],
        )
    )
    return alt.layer(line, endpoint_rules()).properties(title="Accuracy along the path", width="container", height=300)


def bn_chart(paths: dict, split: str) -> alt.LayerChart:
    q = f"{split}_loss"
    rows = [
        {"alpha": a, "value": v, "BatchNorm statistics": mode}
        for mode, path in paths.items()
        for a, v in zip(path.alphas, path.values[q])
    ]
    modes = list(paths)
    line = (
        alt.Chart(pd.DataFrame(rows))
        .mark_line(point=True)
        .encode(
            x=alt.X("alpha:Q", title="alpha (0 = A, 1 = B)"),
            y=alt.Y("value:Q", title=f"{split} loss (mean over the split)", scale=alt.Scale(zero=False)),
            color=alt.Color(
                "BatchNorm statistics:N",
                scale=alt.Scale(domain=modes, range=[BN_COLORS[m] for m in modes]),
            ),
            tooltip=[
                alt.Tooltip("alpha:Q", format=".3f"),
                alt.Tooltip("value:Q", format=".4g"),
                "BatchNorm statistics",
            ],
        )
    )
    return alt.layer(line, endpoint_rules()).properties(
        title=f"{split} loss along the path under each BatchNorm option", width="container", height=320
    )


# -- words ------------------------------------------------------------------------------------
def verdict(height: float, loss_a: float, loss_b: float) -> str:
    """Words for a barrier: judged against the endpoint losses, with an absolute floor for tiny losses."""
    scale = 0.5 * (abs(loss_a) + abs(loss_b))
    if height <= max(0.05 * scale, 0.005):
        return "essentially no barrier: the two models are **linearly mode connected** on this data"
    if height <= max(0.5 * scale, 0.05):
        return "a **small barrier**: the straight line stays low, with a mild bump"
    return (
        "a **clear barrier**: the straight line climbs out of the low-loss region, so the two models sit in "
        "different basins as seen along this line (permuted hidden units are a common cause)"
    )


def readout(path, splits: list[str], name_a: str, name_b: str) -> list[str]:
    lines = []
    for split in splits:
        info = path.barrier.get(f"{split}_loss")
        if not info:
            continue
        if info["height"] is None:
            lines.append(
                f"**{split}**: the loss is not finite somewhere on the path (diverged), so no barrier is given."
            )
            continue
        peak = info["height"] + (1 - info["alpha"]) * info["loss_a"] + info["alpha"] * info["loss_b"]
        text = (
            f"**{split}**: loss {info['loss_a']:.4g} at A and {info['loss_b']:.4g} at B; along the straight line it "
            f"rises to {peak:.4g} at alpha = {info['alpha']:.2f}, **{info['height']:.4g} above the chord** "
            f"between the endpoint losses: {verdict(info['height'], info['loss_a'], info['loss_b'])}."
        )
        acc = path.values.get(f"{split}_accuracy")
        if acc is not None and np.isfinite(acc).any():
            inside = (path.alphas >= 0) & (path.alphas <= 1)
            k = int(np.nanargmin(np.where(inside, acc, np.nan)))
            ends = [acc[i] for i in (np.flatnonzero(path.alphas == 0.0), np.flatnonzero(path.alphas == 1.0)) if len(i)]
            ends = [float(e[0]) for e in ends]
            drop = f" ({100 * (min(ends) - acc[k]):.1f} points below the weaker end)" if ends else ""
            text += f" Accuracy is lowest at alpha = {path.alphas[k]:.2f}: {acc[k]:.1%}{drop}."
        error = path.barrier.get(f"{split}_error")
        if error and error["height"] is not None:
            text += (
                f" Error barrier (Frankle et al. 2020, the highest error on the path minus the mean end error): "
                f"**{100 * error['height']:.1f} points** at alpha = {error['alpha']:.2f}."
            )
        lines.append(text)
    if not lines:
        lines.append("The span does not contain both endpoints (alpha = 0 and 1), so no barrier is defined.")
    return lines


def bn_readout(paths: dict, split: str) -> str:
    """How far each BatchNorm option moves the barrier and the ends from the recomputed path."""
    q = f"{split}_loss"
    if "recompute" not in paths:
        return ""
    ref = paths["recompute"].barrier.get(q) or {}
    if ref.get("height") is None:
        return "The recomputed path is not finite everywhere, so the options cannot be compared."
    parts = [f"With recomputed statistics the {split} barrier is **{ref['height']:.4g}**."]
    for mode in ("interpolate", "keep"):
        if mode not in paths:
            continue
        info = paths[mode].barrier.get(q) or {}
        if info.get("height") is None:
            parts.append(f"With {BN_SHORT[mode]} the path diverges somewhere (no finite barrier).")
            continue
        change = (info["height"] - ref["height"]) / max(abs(ref["height"]), 1e-12)
        text = f"With {BN_SHORT[mode]} it is **{info['height']:.4g}** ({change:+.0%})"
        stored = paths[mode].endpoint_values.get(q)
        if (
            stored is not None
            and np.isfinite(stored[1])
            and abs(info["loss_b"] - stored[1]) > 0.05 * abs(stored[1]) + 1e-3
        ):
            text += (
                f", and B itself scores {info['loss_b']:.4g} instead of its own {stored[1]:.4g}: the chord is drawn "
                "to a wrong end, so even the barrier's baseline is off"
            )
        parts.append(text + ".")
    parts.append("Only the recomputed path shows the landscape itself rather than stale statistics.")
    return " ".join(parts)


def barrier_table(path, splits: list[str]) -> pd.DataFrame:
    rows = []
    for split in splits:
        info = path.barrier.get(f"{split}_loss")
        if not info:
            continue
        error = path.barrier.get(f"{split}_error") or {}
        rows.append(
            {
                "split": split,
                "loss at A": info["loss_a"],
                "loss at B": info["loss_b"],
                "loss barrier (Entezari et al. 2022)": info["height"],
                "at alpha": info["alpha"],
                "error barrier (Frankle et al. 2020)": error.get("height"),
                "A's stored statistics": path.endpoint_values.get(f"{split}_loss", [np.nan, np.nan])[0],
                "B's stored statistics": path.endpoint_values.get(f"{split}_loss", [np.nan, np.nan])[1],
            }
        )
    return pd.DataFrame(rows)


def snippet(source: dict, end_a: dict, end_b: dict, steps: int, span, bn: str, splits) -> str:
    lines = ["from landscape_core import interpolation", *problem_code(source)]
    lines += [
        f"theta_a, buffers_a = {end_a['code']}",
        f"theta_b, buffers_b = {end_b['code']}",
        f"path = interpolation.linear(problem, theta_a, theta_b, steps={steps}, span={tuple(span)}, bn={bn!r},",
        f"                            buffers_a=buffers_a, buffers_b=buffers_b, splits={list(splits)})",
        "print(path.barrier)",
    ]
    return "\n".join(lines) + "\n"


# -- page -------------------------------------------------------------------------------------
st.title("Interpolation: the loss on the straight line between two models")
st.caption(
    "theta(alpha) = (1 - alpha) theta_A + alpha theta_B. The **loss barrier** (Entezari et al. 2022) is the largest "
    "rise of the loss above the straight chord between the endpoint losses, over alpha in [0, 1]; the **error "
    "barrier** (Frankle et al. 2020) is the highest error (1 - accuracy) on the path minus the mean of the two end "
    "errors. About 0 means the two models are linearly mode connected."
)

ws = ui.workspace()
problem = ui.problem_for_page(ws, "A")
splits = ui.chosen_splits(problem)
choices = endpoint_choices(ws)
names = list(choices)
bn_model = has_batchnorm(problem)

if len(names) < 2:
    st.info(
        "This workspace has a single model and no checkpoints, so there is no second point to interpolate to. "
        "Pick a demo with checkpoints (e.g. digits-mlp) or load checkpoints on the Your model page."
    )
    st.stop()

first, second = default_pair(names, ws)
ui.keep_settings("interp", per_workspace={"interp_a": names[first], "interp_b": names[second]})
with st.form("interp_form"):
    left, right = st.columns(2)
    name_a = left.selectbox("Start (alpha = 0)", names, index=first, key="interp_a")
    name_b = right.selectbox("End (alpha = 1)", names, index=second, key="interp_b")
    c1, c2, c3 = st.columns([2, 2, 3])
    steps = c1.slider("Points along the path", 5, 101, INTERPOLATION.steps, step=2, key="interp_steps")
    span_label = c2.selectbox(
        "alpha range", list(SPANS), index=list(SPANS.values()).index(INTERPOLATION.span), key="interp_span"
    )
    if bn_model:
        bn = c3.radio(
            "BatchNorm statistics along the path",
            BN_MODES,
            index=BN_MODES.index(INTERPOLATION.bn),
            format_func=lambda m: BN_LABELS[m],
            key="interp_bn",
            help=BN_NOTE,
        )
        compare_bn = c3.checkbox(
            "Also draw the other two BatchNorm options", value=INTERPOLATION.all_bn_modes, key="interp_bn_all"
        )
    else:
        bn, compare_bn = INTERPOLATION.bn, False
        c3.caption("This model has no BatchNorm layers, so there are no running statistics to set along the path.")
    log_y = st.checkbox("Logarithmic loss axis", value=False, key="interp_log")
    st.form_submit_button(
        "Run", type="primary", icon=":material/play_arrow:", on_click=ui.save_settings, args=("interp",)
    )

if name_a == name_b:
    st.error("Start and end are the same model: the path would have zero length. Pick two different models.")
    st.stop()

end_a, end_b = choices[name_a], choices[name_b]
span = SPANS[span_label]
modes = [bn] + ([m for m in BN_MODES if m != bn] if compare_bn else [])
settings = {
    "source": ui.source("A"),
    "a": digest(end_a["theta"]),
    "b": digest(end_b["theta"]),
    "names": [name_a, name_b],
    "steps": steps,
    "span": span,
    "modes": modes,
    "splits": splits,
}


def compute(progress, cancel) -> dict:
    paths = {}
    for i, mode in enumerate(modes):
        paths[mode] = interpolation.linear(
            problem,
            end_a["theta"],
            end_b["theta"],
            steps=steps,
            span=span,
            bn=mode,
            buffers_a=end_a["buffers"],
            buffers_b=end_b["buffers"],
            splits=splits,
            cancel=cancel,
            progress=lambda done, total, i=i: progress(i * total + done, len(modes) * total),
        )
    return paths


paths = ui.run_job(jobs.job_key("interpolation", settings), compute, "Interpolation")
if paths is None:
    st.stop()
path = paths[bn]

st.subheader(f"{ui.plain(name_a)}  to  {ui.plain(name_b)}")
chart = loss_chart(path, splits, log_y, "Loss along the path; dashed: straight chord between the ends; bar: barrier")
st.altair_chart(chart, width="stretch")
with ui.section("The barrier readout"):
    for line in readout(path, splits, name_a, name_b):
        st.markdown(line)
acc = accuracy_chart(path, splits)
if acc is not None:
    st.altair_chart(acc, width="stretch")

with ui.section("The barrier table"):
    table = barrier_table(path, splits)
    if not table.empty:
        st.markdown(
            "**Barriers per split** (loss barrier in loss units, error barrier as a fraction of samples; the last "
            "two columns: each end evaluated with its own stored statistics)"
        )
        st.dataframe(ui.readable(table), hide_index=True, width="stretch")

if bn_model:
    st.subheader("BatchNorm along the path")
    st.markdown(BN_NOTE)
    if len(paths) > 1:
        split = "train" if "train" in splits else splits[0]
        st.altair_chart(bn_chart(paths, split), width="stretch")
        rows = []
        for mode, p in paths.items():
            info = p.barrier.get(f"{split}_loss") or {}
            rows.append({"BatchNorm statistics": BN_LABELS[mode], f"{split} barrier": info.get("height")})
        st.dataframe(ui.readable(pd.DataFrame(rows)), hide_index=True, width="stretch")
        with ui.section("The BatchNorm readout"):
            st.markdown(bn_readout(paths, split))
    else:
        st.caption("Tick 'Also draw the other two BatchNorm options' to see how much the choice changes the path.")

with st.expander("How this was computed"):
    st.json(path.settings, expanded=False)
source = ui.source("A")
ui.downloads(
    path,
    chart=chart,
    name=f"interpolation_{bn}",
    snippet=lambda: snippet(source, end_a, end_b, steps, span, bn, splits),
)
gradient_sections.path_gradient(problem, end_a, end_b, paths, settings)
