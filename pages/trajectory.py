"""Trajectory page: the checkpoints of one training run in 2D, and the loss under the path.

UI only: the views come from ``landscape_core.trajectory`` (PCA, UMAP, autoencoder, each with
its trustworthiness), the PCA-plane surface and the per-checkpoint projection gap from
``landscape_core.trajectory_plane``.
"""

from __future__ import annotations

import importlib.util

import altair as alt
import numpy as np
import pandas as pd
import streamlit as st

from dashboard_ui import links, selections, theme, ui
from dashboard_ui.links import Choice, Flag, Number
from landscape_core import jobs, trajectory, trajectory_plane
from landscape_core import preview as preview_mod
from landscape_core.defaults import TRAJECTORY
from landscape_core.snippet import problem_code

VIEW_LABELS = {"pca": "PCA", "umap": "UMAP", "autoencoder": "Autoencoder"}
PCA_CHOICES = {  # label: (variant, ignored kinds), see landscape_core.trajectory.pca
    "Li et al. 2018: centred, biases and normalization parameters removed": ("li2018", ("bias", "norm")),
    "uncentred, every parameter": ("uncentred", ()),
}
REFERENCES = ["final", "first", "mean"]
PLANE_STEPS = [11, 15, 21, 31, 41, 51]
HAS_UMAP = importlib.util.find_spec("umap") is not None
EPOCH_SCHEME = "oranges"
PATH_COLOR = "#e8590c"


# -- data for charts --------------------------------------------------------------------------
def epochs_of(traj) -> list[float]:
    """Step of each checkpoint for colouring (its index when the step is unknown)."""
    return [float(i if s is None else s) for i, s in enumerate(traj.steps)]


def axis_titles(traj) -> tuple[str, str]:
    if traj.method == "pca":
        evr = traj.explained_variance_ratio
        return (
            f"PC1 ({evr[0]:.1%} of the squared distance), parameter units",
            f"PC2 ({evr[1]:.1%}), parameter units",
        )
    name = VIEW_LABELS[traj.method]
    return f"{name} 1 (arbitrary units)", f"{name} 2 (arbitrary units)"


def view_frame(traj, gap=None) -> pd.DataFrame:
    """One row per checkpoint: its coordinates in the view, name, epoch; with ``gap`` (a
    ``ProjectionGap`` of the same checkpoints) also its true values and the loss's projection gap."""
    frame = pd.DataFrame(
        {
            "x": traj.coords[:, 0],
            "y": traj.coords[:, 1],
            "checkpoint": traj.names,
            "epoch": epochs_of(traj),
            "order": np.arange(len(traj.names)),
        }
    )
    if gap is not None and list(gap.names) == list(traj.names):
        for q, values in gap.true_values.items():
            frame[ui.quantity_label(q)] = np.asarray(values, dtype=np.float64)
        for q, values in gap.gap.items():
            if q.endswith("_loss"):
                frame[f"projection gap of the {ui.quantity_label(q)}"] = np.asarray(values, dtype=np.float64)
    return frame


def path_layers(
    frame: pd.DataFrame, x: str, y: str, x_title=None, y_title=None, scale_x=None, scale_y=None, select=None
):
    """The trajectory as a line in training order and points coloured by epoch (start and end labelled).

    Each point's tooltip holds every column of ``frame`` past the coordinates (values, gaps);
    ``select``: a selection param (``selections.checkpoint_param``) put on the points."""
    x_enc = alt.X(f"{x}:Q", title=x_title, scale=scale_x or alt.Scale(zero=False))
    y_enc = alt.Y(f"{y}:Q", title=y_title, scale=scale_y or alt.Scale(zero=False))
    line = (
        alt.Chart(frame)
        .mark_line(color=theme.muted(), strokeWidth=1.5, opacity=0.8)
        .encode(x=x_enc, y=y_enc, order="order:Q")
    )
    points = (
        alt.Chart(frame)
        .mark_circle(size=90, stroke=theme.ink(), strokeWidth=0.8, opacity=1)
        .encode(
            x=x_enc,
            y=y_enc,
            color=alt.Color("epoch:Q", title="epoch / step", scale=alt.Scale(scheme=EPOCH_SCHEME)),
            tooltip=[
                "checkpoint:N",
                alt.Tooltip("epoch:Q", title="epoch / step"),
                *[
                    alt.Tooltip(field=c, type="quantitative", format=".4g")
                    for c in frame.columns
                    if c not in (x, y, "checkpoint", "epoch", "order")
                ],
            ],
        )
    )
    if select is not None:
        points = points.add_params(select)
    ends = frame.iloc[[0, -1]].assign(label=["start", "end"])
    text = (
        alt.Chart(ends)
        .mark_text(dx=8, dy=-8, align="left", fontWeight="bold", color=theme.ink())
        .encode(x=x_enc, y=y_enc, text="label:N")
    )
    return [line, points, text]


def view_chart(traj, gap=None, select=None) -> alt.LayerChart:
    """The checkpoints in one 2D view; ``gap`` adds their values to the tooltips; ``select``: a click
    selection on the points (the chart then draws as SVG: one element per checkpoint)."""
    x_title, y_title = axis_titles(traj)
    title = f"{VIEW_LABELS[traj.method]} view (trustworthiness {traj.trustworthiness:.3f})"
    layers = path_layers(view_frame(traj, gap), "x", "y", x_title, y_title, select=select)
    chart = alt.layer(*layers).properties(title=title, width="container", height=330)
    return chart if select is None else chart.properties(usermeta=selections.SVG)


def plane_chart(plane, traj, quantity: str, log: bool):
    """The shared heatmap with the checkpoints joined in training order; start and end labelled."""
    points = {name: (float(x), float(y)) for name, (x, y) in zip(traj.names, traj.coords)}
    heat = ui.heatmap(
        plane,
        quantity,
        log=log,
        title=[
            f"{ui.quantity_label(quantity)} on the PCA plane through the final checkpoint,",
            "with the training path",
        ],
        points=points,
        path=True,
        side=ui.PLANE_SIDE,
    )
    ends = pd.DataFrame({"a0": traj.coords[[0, -1], 0], "b0": traj.coords[[0, -1], 1], "label": ["start", "end"]})
    labels = (
        alt.Chart(ends)
        .mark_text(dx=9, dy=-9, align="left", color="white", fontWeight="bold", fontSize=13)
        .encode(x="a0:Q", y="b0:Q", text="label:N")
    )
    return heat + labels


def gap_frame(gap, traj, quantity: str) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "checkpoint": gap.names,
            "epoch": epochs_of(traj),
            "distance from the plane": gap.residual_norms,
            f"true {ui.quantity_label(quantity)}": gap.true_values[quantity],
            f"{ui.quantity_label(quantity)} at the projection": gap.projected_values[quantity],
            "gap (projection - true)": gap.gap[quantity],
        }
    )


def gap_chart(gap, traj, quantity: str) -> alt.LayerChart:
    label = ui.quantity_label(quantity)
    epochs = epochs_of(traj)
    true_name, plane_name = "true value", "value on the plane"
    rows = [{"epoch": e, "value": v, "which": true_name} for e, v in zip(epochs, gap.true_values[quantity])]
    rows += [{"epoch": e, "value": v, "which": plane_name} for e, v in zip(epochs, gap.projected_values[quantity])]
    frame = pd.DataFrame(rows)
    domain = [true_name, plane_name]
    return (
        alt.Chart(frame)
        .mark_line(point=True)
        .encode(
            x=alt.X("epoch:Q", title="epoch / step"),
            y=alt.Y(
                "value:Q", title=label, scale=alt.Scale(zero=False, type="symlog" if "loss" in quantity else "linear")
            ),
            color=alt.Color("which:N", title=None, scale=alt.Scale(domain=domain, range=["#3b5bdb", PATH_COLOR])),
            tooltip=[alt.Tooltip("epoch:Q"), alt.Tooltip("value:Q", format=".4g"), "which:N"],
        )
        .properties(
            title="Each checkpoint's true value vs the value the PCA picture shows under it",
            width="container",
            height=300,
        )
    )


# -- words ------------------------------------------------------------------------------------
def trust_words(t: float) -> str:
    if t >= 0.95:
        return "neighbours in the picture are neighbours in parameter space"
    if t >= 0.85:
        return "mostly faithful neighbourhoods"
    return "some points that look close are far apart in parameter space: read distances with care"


def views_readout(views: dict) -> list[str]:
    lines = []
    pca = views["pca"]
    evr = pca.explained_variance_ratio
    seen = "variance around their mean" if pca.settings.get("variant") == "li2018" else "squared distance"
    lines.append(
        f"**PCA** ({pca.settings.get('definition', 'PCA').split(':')[0]}) keeps {evr.sum():.1%} of the {seen} of the "
        f"checkpoints' differences from the {pca.settings['reference']} checkpoint in two directions "
        f"({evr[0]:.1%} + {evr[1]:.1%}); trustworthiness {pca.trustworthiness:.3f}: "
        f"{trust_words(pca.trustworthiness)}."
        + (
            " The path is close to a plane, so the contour below shows the terrain it crossed."
            if evr.sum() >= 0.8
            else " Much of the motion is outside the plane, so the contour below is only a shadow of the path."
        )
    )
    for method in ("umap", "autoencoder"):
        traj = views.get(method)
        if traj is None:
            continue
        extra = ""
        if traj.reconstruction_error is not None:
            extra = f", reconstruction error {traj.reconstruction_error:.1%}"
        lines.append(
            f"**{VIEW_LABELS[method]}**: trustworthiness {traj.trustworthiness:.3f}{extra}: {trust_words(traj.trustworthiness)}."
        )
    return lines


def gap_readout(gap, traj, quantity: str) -> str:
    label = ui.quantity_label(quantity)
    g = np.abs(np.asarray(gap.gap[quantity], dtype=np.float64))
    true = np.asarray(gap.true_values[quantity], dtype=np.float64)
    if not np.isfinite(g).any():
        return f"The {label} at the projections is not finite (diverged), so the gap cannot be judged."
    worst = int(np.nanargmax(g))
    faithful = [n for n, v, t in zip(gap.names, g, true) if v <= 0.05 * abs(t) + 1e-3]
    text = (
        f"The largest gap is **{g[worst]:.3g}** at **{ui.plain(gap.names[worst])}** (true {label} {true[worst]:.4g}, "
        f"{gap.residual_norms[worst]:.3g} away from the plane). "
    )
    if len(faithful) == len(g):
        text += "Every checkpoint's true value is within 5% of what the plane shows under it: the picture is faithful."
    elif faithful:
        text += (
            f"{len(faithful)} of {len(g)} checkpoints are within 5% of the plane's value (the last: {ui.plain(faithful[-1])}); "
            "where the gap is large, the contour under the path is not the loss the model had."
        )
    else:
        text += (
            "No checkpoint is within 5% of the plane's value: the contour is a projection, not the path's real loss."
        )
    return text


def snippet(source: dict, which_ckpts: str, s: dict, splits) -> str:
    lines = ["from landscape_core import trajectory, trajectory_plane", *problem_code(source)]
    lines += [
        f"checkpoints = ws.{which_ckpts}",
        f"pca = trajectory.pca(checkpoints, reference={s['reference']!r}, variant={s['variant']!r}, "
        f"ignore={tuple(s['ignore'])!r}, space=problem)",
    ]
    if s["umap"]:
        lines.append(f"umap = trajectory.umap(checkpoints, n_neighbors={s['n_neighbors']}, seed={s['seed']})")
    if s["autoencoder"]:
        lines.append(f"ae = trajectory.autoencoder(checkpoints, dim=2, seed={s['seed']})")
    lines += [
        f"plane = trajectory_plane.pca_plane(problem, pca, steps={s['steps']}, margin={s['margin']}, splits={list(splits)})",
        f"gap = trajectory_plane.projection_gap(problem, pca, checkpoints, splits={list(splits)})",
        "print(pca.explained_variance_ratio, pca.trustworthiness, gap.gap)",
    ]
    return "\n".join(lines) + "\n"


# -- a clicked checkpoint ---------------------------------------------------------------------
def surface_settings(names: list[str], name: str) -> dict:
    """The Surface page's three-checkpoint plane through ``name``: first, it, final (distinct)."""
    i = names.index(name)
    if i == 0:
        picks = (name, names[len(names) // 2], names[-1])
    elif i == len(names) - 1:
        picks = (names[0], names[len(names) // 2], name)
    else:
        picks = (names[0], name, names[-1])
    return {"surface_kind": "through", **{f"surface_ckpt_{k}": p for k, p in zip("ABC", picks)}}


def checkpoint_readout(gap, traj, events) -> None:
    """A clicked checkpoint's values (true, under it on the PCA plane, gap), and buttons that open it
    on the Surface (the plane through it) and Sharpness pages."""
    click = next((c for c in (selections.clicked(e, selections.CHECKPOINT) for e in events) if c), None)
    name = click.get("checkpoint") if click else None
    if name not in gap.names:
        st.caption("Click a checkpoint in a view to see its loss, accuracy and projection gap.")
        return
    k = list(gap.names).index(name)
    epoch = epochs_of(traj)[k]
    st.markdown(
        f"**Checkpoint {ui.plain(name)}** (epoch / step {epoch:g}): {gap.residual_norms[k]:.4g} away from the PCA "
        "plane (parameter units)."
    )
    table = pd.DataFrame(
        [
            {
                "quantity": ui.quantity_label(q),
                "true value": f"{gap.true_values[q][k]:.6g}",
                "on the PCA plane under it": f"{gap.projected_values[q][k]:.6g}",
                "projection gap (plane - true)": f"{gap.gap[q][k]:.3g}",
            }
            for q in gap.true_values
        ]
    ).set_index("quantity")
    st.table(table)  # a few rows, printed in full
    left, right = st.columns(2)
    names = [c.name for c in ws.checkpoints]
    wid = ui.workspace_id()
    if which == "A" and name in names:
        if left.button(
            "Open on Surface",
            icon=":material/landscape:",
            key="open:surface",
            help="The Surface page's plane through three checkpoints, this one among them.",
        ):
            selections.open_page(
                "surface.py", "surface", {"surface_shape": "2D plane"}, surface_settings(names, name), wid
            )
    else:
        left.caption("Surface draws planes through model A's checkpoints only.")
    if right.button(
        "Open on Sharpness",
        icon=":material/speed:",
        key="open:sharpness",
        help="The Sharpness & Hessian page with this checkpoint as the model to analyse.",
    ):
        selections.open_page("sharpness.py", "sharp", {}, {"sharp_point": f"checkpoint: {name}"}, wid)


def link(ws, runs: dict) -> dict:
    """The settings a link carries, with what each widget accepts (``ui.keep_settings(link=)``).

    The quantity's choices are those the link's run (model A or B) has on the sidebar's splits."""
    which, _ = runs[links.peek("traj_run", Choice(list(runs)), next(iter(runs)))]
    problem = ws.problem if which == "A" else ws.compare
    splits = ui.chosen_splits(problem)
    return {
        "traj_run": Choice(list(runs)),
        "traj_reference": Choice(REFERENCES),
        "traj_pca": Choice(list(PCA_CHOICES)),
        "traj_umap": Flag() if HAS_UMAP else Choice([False]),  # the box is disabled without UMAP
        "traj_neighbors": Number(2, 15),
        "traj_ae": Flag(),
        "traj_seed": Number(0, 10_000),
        "traj_steps": Choice(PLANE_STEPS),
        "traj_margin": Number(0.0, 1.0, integer=False),
        "traj_log": Flag(),
        "traj_quantity": Choice([f"{sp}_{q}" for sp in splits for q in ("loss", *problem.metrics)]),
    }


# -- page -------------------------------------------------------------------------------------
st.title("Trajectory: where training went, and the loss under the path")
st.caption(
    "Each checkpoint is a point in parameter space. PCA of theta_i - theta_final (by default Li et al. 2018's: "
    "centred, biases and normalization parameters removed) gives the plane of the path's main motion; UMAP and a "
    "small autoencoder give non-linear views. Trustworthiness (1 = perfect) "
    "says how far each 2D picture keeps true neighbours together."
)

ws = ui.workspace()
runs = {}
if len(ws.checkpoints) >= 3:
    runs[f"{ws.labels[0]} (model A, {len(ws.checkpoints)} checkpoints)"] = ("A", "checkpoints")
if ws.compare is not None and len(ws.compare_checkpoints) >= 3:
    runs[f"{ws.labels[1]} (model B, {len(ws.compare_checkpoints)} checkpoints)"] = ("B", "compare_checkpoints")
if not runs:
    st.info(
        "A trajectory needs at least 3 checkpoints of one run; this workspace has "
        f"{len(ws.checkpoints)}. Pick a demo with checkpoints (e.g. digits-mlp) or load a folder of checkpoints "
        "on the Your model page."
    )
    st.stop()

ui.keep_settings(
    "traj",
    per_workspace={"traj_run": next(iter(runs)), "traj_quantity": ui.WIDGET_DEFAULT},
    link=link(ws, runs),
)

with st.form("traj_form"):
    c1, c2, c3 = st.columns(3)
    run_name = c1.selectbox("Training run", list(runs), key="traj_run")
    reference = c1.selectbox(
        "PCA reference point",
        REFERENCES,
        index=REFERENCES.index(TRAJECTORY.reference),
        key="traj_reference",
        help="PCA is taken of theta_i minus this point; 'final' (Li et al.) puts the trained model at the origin.",
    )
    pca_label = c1.selectbox(
        "PCA",
        list(PCA_CHOICES),
        key="traj_pca",
        help="Li et al. 2018 centre the differences before the PCA and leave biases and normalization parameters out; "
        "the uncentred PCA fits the plane through the reference point over every parameter.",
    )
    use_umap = c2.checkbox(
        "UMAP view",
        value=TRAJECTORY.umap and HAS_UMAP,
        disabled=not HAS_UMAP,
        key="traj_umap",
        help=None if HAS_UMAP else "UMAP is not installed here: pip install 'landscape-dashboard[umap]'.",
    )
    n_neighbors = c2.slider("UMAP neighbours", 2, 15, TRAJECTORY.umap_neighbors, key="traj_neighbors")
    use_ae = c2.checkbox("Autoencoder view", value=TRAJECTORY.autoencoder, key="traj_ae")
    seed = c2.number_input("Seed (UMAP, autoencoder)", 0, 10_000, TRAJECTORY.seed, key="traj_seed")
    steps = c3.select_slider("Plane: steps per axis", PLANE_STEPS, value=TRAJECTORY.plane_steps, key="traj_steps")
    margin = c3.slider("Plane: margin around the path", 0.0, 1.0, TRAJECTORY.margin, 0.05, key="traj_margin")
    log = c3.checkbox("Log colour scale", value=True, key="traj_log")
    st.form_submit_button(
        "Run", type="primary", icon=":material/play_arrow:", on_click=ui.save_settings, args=("traj",)
    )

which, attribute = runs[run_name]
checkpoints = getattr(ws, attribute)
problem = ui.problem_for_page(ws, which)
splits = ui.chosen_splits(problem)
n = len(checkpoints)
if use_umap and n_neighbors >= n:
    if n_neighbors != TRAJECTORY.umap_neighbors:  # the default is capped quietly, as landscape demo does
        st.warning(f"UMAP needs fewer neighbours than checkpoints ({n}); using {n - 1}.")
    n_neighbors = n - 1
variant, ignored = PCA_CHOICES[pca_label]
s = {
    "reference": reference,
    "variant": variant,
    "ignore": list(ignored),
    "umap": bool(use_umap),
    "n_neighbors": int(n_neighbors),
    "autoencoder": bool(use_ae),
    "seed": int(seed),
    "steps": int(steps),
    "margin": float(margin),
}
base_key = {"source": ui.source(which), "run": attribute, "n": n, "splits": splits}


def compute_views(progress, cancel) -> dict:
    total = 2 + s["umap"] + s["autoencoder"]
    progress(0, total)
    views = {
        "pca": trajectory.pca(
            checkpoints, reference=s["reference"], variant=s["variant"], ignore=tuple(s["ignore"]), space=problem
        )
    }
    progress(1, total)
    if s["umap"] and not cancel.is_set():
        views["umap"] = trajectory.umap(checkpoints, n_neighbors=s["n_neighbors"], seed=s["seed"])
        progress(2, total)
    if s["autoencoder"] and not cancel.is_set():
        views["autoencoder"] = trajectory.autoencoder(checkpoints, dim=2, seed=s["seed"])
    progress(total - 1, total)
    views["gap"] = trajectory_plane.projection_gap(problem, views["pca"], checkpoints, splits=splits, cancel=cancel)
    progress(total, total)
    return views


views = ui.run_job(
    jobs.job_key(
        "trajectory-views",
        {
            **base_key,
            **{k: s[k] for k in ("reference", "variant", "ignore", "umap", "n_neighbors", "autoencoder", "seed")},
        },
    ),
    compute_views,
    "Trajectory views",
    unit="views",
)
if views is None:
    st.stop()
pca = views["pca"]

st.subheader("The checkpoints in two dimensions")
summary = pd.DataFrame(
    [
        {
            "view": VIEW_LABELS[m],
            "trustworthiness": views[m].trustworthiness,
            "reconstruction error": views[m].reconstruction_error,
            "explained variance (2 components)": float(views[m].explained_variance_ratio.sum())
            if views[m].explained_variance_ratio is not None
            else None,
        }
        for m in ("pca", "umap", "autoencoder")
        if m in views
    ]
)
st.dataframe(ui.readable(summary), hide_index=True, width="stretch")
shown = [m for m in ("pca", "umap", "autoencoder") if m in views]
cols = st.columns(len(shown))
view_charts, view_events = {}, []
for col, method in zip(cols, shown):
    view_charts[method] = view_chart(views[method], views["gap"], select=selections.checkpoint_param())
    view_events.append(col.altair_chart(view_charts[method], width="stretch", on_select="rerun", key=f"pick:{method}"))
checkpoint_readout(views["gap"], pca, view_events)
with ui.section("The readout of the views"):
    for line in views_readout(views):
        st.markdown(line)

st.subheader("The loss on the PCA plane, with the path")


plane_settings = {**base_key, **{k: s[k] for k in ("reference", "variant", "ignore", "steps", "margin")}}
# a cached plane opens at once: no estimate, no preview, nothing evaluated
plane = trajectory_plane.cached_pca_plane(problem, pca, steps=s["steps"], margin=s["margin"], splits=splits)
preview = filling = None
if plane is None:
    cost = ui.estimate(problem, splits)

    def compute_preview(progress, cancel):
        return trajectory_plane.pca_preview(problem, pca, margin=s["margin"], splits=splits, cost=cost)

    preview = ui.run_job(
        jobs.job_key("trajectory-preview", {k: v for k, v in plane_settings.items() if k != "steps"}),
        compute_preview,
        "preview of the PCA plane on a data subset",
    )

    def compute_plane(progress, cancel):
        known = preview_mod.reusable(preview, problem, splits)
        return trajectory_plane.pca_plane(
            problem,
            pca,
            steps=s["steps"],
            margin=s["margin"],
            splits=splits,
            progress=progress,
            cancel=cancel,
            on_level=jobs.publish,
            known=known,
        )

    if preview is not None:
        plane_key = jobs.job_key("trajectory-plane", plane_settings)
        plane = ui.run_job(plane_key, compute_plane, f"PCA plane {s['steps']}x{s['steps']}")
        filling = ui.partial_result(plane_key) if plane is None else None
quantities = [f"{sp}_loss" for sp in splits] + [f"{sp}_{m}" for sp in splits for m in problem.metrics]
quantities = [q for q in quantities if q in views["gap"].true_values]
quantity = st.selectbox(
    "Quantity on the plane and in the gap table",
    quantities,
    format_func=ui.quantity_label,
    key="traj_quantity",
    on_change=ui.save_settings,
    args=("traj",),
)
plane_view = None
shown = plane if plane is not None else preview_mod.fill_pending(filling) if filling is not None else preview
if shown is not None:
    plane_view = plane_chart(shown, pca, quantity, log)
    st.altair_chart(plane_view, width="content")  # fixed size: equal scale on both axes
    if plane is None:
        st.caption(ui.filling_caption(filling) if filling is not None else ui.preview_caption(preview, problem))
    st.caption(
        "The origin is the PCA reference point; the dots are the checkpoints at their PCA coordinates, joined in "
        "training order. Axes in parameter units along the orthonormal PCA directions (equal scale)."
    )

st.subheader("How faithful is the picture? True loss vs the loss under each checkpoint")
gap = views["gap"]
gap_view = gap_chart(gap, pca, quantity)
st.altair_chart(gap_view, width="stretch")
with ui.section("The projection-gap readout"):
    st.markdown(gap_readout(gap, pca, quantity))
    st.dataframe(ui.readable(gap_frame(gap, pca, quantity)), hide_index=True, width="stretch")

source = ui.source(which)
with st.expander("Downloads: PCA view and the projection gap"):
    ui.downloads(
        pca, chart=view_charts["pca"], name="trajectory_pca", snippet=lambda: snippet(source, attribute, s, splits)
    )
    ui.downloads(gap, chart=gap_view, name="projection_gap")
for method in ("umap", "autoencoder"):
    if method in views:
        with st.expander(f"Downloads: {VIEW_LABELS[method]} view"):
            ui.downloads(views[method], chart=view_charts[method], name=f"trajectory_{method}")
if plane is not None:
    with st.expander("Downloads: the PCA-plane surface"):
        ui.downloads(plane, chart=plane_view, name="trajectory_plane")
