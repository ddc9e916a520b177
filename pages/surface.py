"""Surface page: 1D lines and 2D planes of the loss around the trained model."""

from __future__ import annotations

import numpy as np
import pandas as pd
import streamlit as st

from dashboard_ui import selections, ui
from dashboard_ui import topology as topology_sections
from dashboard_ui.links import Choice, Flag, Many, Number
from landscape_core import directions, gradient_norm, jobs, snippet, surface
from landscape_core import preview as preview_mod
from landscape_core.defaults import SURFACE
from landscape_core.estimate import describe_seconds
from landscape_core.results import Surface

COARSE_STEPS = SURFACE.coarse_steps
STEP_CHOICES = [11, 21, 31, 41, 51, 75, 101]
NORMS = ["filter", "layer", "none"]
HESSIAN_LENGTHS = {
    "unit": "unit length (alpha in parameter units)",
    "random": "as long as the random directions (same seed and normalization)",
}

st.title("Surface: the loss around the trained model")
st.caption(
    "Values of the loss (and accuracy) at theta0 + alpha d1 + beta d2, along directions in parameter space. "
    "alpha and beta are measured in units of the normalized directions (1.0 = one filter-norm of the weights)."
)

ws = ui.workspace()
problem = ui.problem_for_page(ws)
splits = ui.chosen_splits(problem)


def _imports(*names: str) -> bool:
    try:
        for name in names:
            __import__(name)
    except Exception:
        return False
    return True


checkpoints = list(ws.checkpoints)
DIRECTION_KINDS = {"random": "Random (Gaussian, normalized)"}
if _imports("landscape_core.hessian"):
    DIRECTION_KINDS["hessian"] = "Hessian: the largest eigenvectors (sharpest directions)"
    DIRECTION_KINDS["hessian-both"] = "Hessian: largest and smallest eigenvector (saddle check)"
if len(checkpoints) >= 3 and _imports("landscape_core.trajectory", "landscape_core.trajectory_plane"):
    DIRECTION_KINDS["pca"] = "PCA of the training trajectory (2D)"
if len(checkpoints) >= 3 and _imports("landscape_core.checkpoint_plane"):
    DIRECTION_KINDS["through"] = "Plane through three checkpoints (2D)"
names = [c.name for c in checkpoints]
CHECKPOINT_DEFAULTS = {
    f"surface_ckpt_{letter}": names[i] if names else None for letter, i in zip("ABC", (0, len(names) // 2, -1))
}
LINK = {  # the settings a link carries, checked against the widgets' options
    "surface_shape": Choice(["2D plane", "1D lines"]),
    "surface_kind": Choice(list(DIRECTION_KINDS)),
    "surface_norm": Choice(NORMS),
    "surface_ignore": Many(["bias", "norm"]),
    "surface_seed": Number(0, 10_000),
    "surface_span": Number(0.1, 3.0, integer=False),
    "surface_steps": Choice(STEP_CHOICES),
    "surface_lines": Number(1, 10),
    "surface_hessian_length": Choice(list(HESSIAN_LENGTHS)),
    **{f"surface_ckpt_{letter}": Choice(names) for letter in "ABC"},
    "surface_quantity": Choice(["loss", *problem.metrics]),
    "surface_log": Flag(),
}
ui.keep_settings(
    "surface",
    per_workspace={"surface_kind": "random", "surface_quantity": "loss", **CHECKPOINT_DEFAULTS},
    link=LINK,
)


def direction_lengths(norms, problem) -> str:
    """One sentence with the length of each direction and of the weights, in parameter units."""
    if not norms:
        return ""
    theta = float(problem.theta0.double().norm())
    shown = ", ".join(f"||d{i + 1}|| = {n:.3g}" for i, n in enumerate(norms))
    return (
        f"Direction lengths: {shown} (parameter units; the weights have ||theta0|| = {theta:.3g}). A step of "
        "alpha = 1 moves the weights by ||d1||, so planes and lines compare only at equal lengths times span."
    )


with st.form("surface-settings"):
    c1, c2, c3 = st.columns(3)
    shape = c1.radio("View", ["2D plane", "1D lines"], horizontal=True, key="surface_shape")
    kind = c1.selectbox("Directions", list(DIRECTION_KINDS), format_func=DIRECTION_KINDS.get, key="surface_kind")
    norm = c2.selectbox(
        "Normalization (random)",
        NORMS,
        index=NORMS.index(SURFACE.norm),
        key="surface_norm",
        help="filter: each filter/row of the direction gets the norm of the same filter of the weights (Li et al. 2018).",
    )
    ignore = c2.multiselect(
        "Ignore (set to zero)",
        ["bias", "norm"],
        default=list(SURFACE.ignore),
        key="surface_ignore",
        help="Biases and normalization-layer parameters are left untouched by default.",
    )
    seed = c2.number_input("Seed", 0, 10_000, SURFACE.seed, key="surface_seed")
    span = c3.slider("Span: alpha (and beta) from -span to +span", 0.1, 3.0, SURFACE.span, 0.1, key="surface_span")
    steps = c3.select_slider("Steps per axis", STEP_CHOICES, value=SURFACE.steps, key="surface_steps")
    n_lines = c3.slider("Random 1D lines to overlay", 1, 10, SURFACE.lines, key="surface_lines")
    hessian_length = "unit"
    if any(k.startswith("hessian") for k in DIRECTION_KINDS):
        hessian_length = c1.selectbox(
            "Length of the Hessian directions",
            list(HESSIAN_LENGTHS),
            format_func=HESSIAN_LENGTHS.get,
            key="surface_hessian_length",
            help="Eigenvectors have length 1; a filter-normalized random direction is about as long as the weights. "
            "Scale them to the random directions' lengths to compare the two planes at the same span.",
        )
    if "through" in DIRECTION_KINDS:
        picks = st.columns(3)
        through = [
            col.selectbox(
                f"Checkpoint {letter} (three-checkpoint plane)",
                names,
                index=names.index(CHECKPOINT_DEFAULTS[f"surface_ckpt_{letter}"]),
                key=f"surface_ckpt_{letter}",
            )
            for col, letter in zip(picks, "ABC")
        ]
    c4, c5, c6, c7 = st.columns(4)
    quantity = c4.selectbox("Quantity", ["loss", *problem.metrics], key="surface_quantity")
    log = c5.checkbox("Log colour / y scale", key="surface_log")
    offset_help = (
        "The plane's centre is theta0 + alpha0 d1 + beta0 d2 (random and Hessian planes); alpha and beta are "
        "then measured from that centre. Click a cell of the heatmap and 'Re-centre the plane here' to set it."
    )
    offset = (
        c6.number_input(
            "Centre: alpha0", -100.0, 100.0, 0.0, 0.05, format="%.4g", key="surface_offset_alpha", help=offset_help
        ),
        c7.number_input(
            "Centre: beta0", -100.0, 100.0, 0.0, 0.05, format="%.4g", key="surface_offset_beta", help=offset_help
        ),
    )
    st.form_submit_button("Run", type="primary", on_click=ui.save_settings, args=("surface",))


def _directions(count: int):
    """The directions for this page's settings: ``(count, P)`` tensor, registered."""
    if kind.startswith("hessian"):
        from landscape_core import hessian

        # "both" with k = 1 gives [largest, smallest]; 1D lines need `count` largest ones
        k, which = (1, "both") if kind == "hessian-both" and count == 2 else (count, "largest")
        spectrum = hessian.top_eigenvalues(problem, k=k, which=which, seed=int(seed))
        basis = spectrum.vectors.to(problem.device, problem.dtype)
        info = {"kind": "hessian", "k": k, "which": which, "seed": int(seed)}
        if hessian_length == "random":  # each eigenvector as long as the random direction it is compared with
            random = directions.random(problem, count=count, norm=norm, ignore=tuple(ignore), seed=int(seed))
            basis = basis * random.norm(dim=1, keepdim=True).to(basis.dtype)
            info |= {"length": "random", "norm": norm}
        return directions.register(basis, info)
    return directions.random(problem, count=count, norm=norm, ignore=tuple(ignore), seed=int(seed))


offset = (float(offset[0]), float(offset[1]))
recentred = offset != (0.0, 0.0) and kind not in ("pca", "through")


def _center(d):
    """The plane's centre theta0 + alpha0 d1 + beta0 d2 (``None``: theta0 itself)."""
    if not recentred:
        return None
    return problem.theta0 + offset[0] * d[0] + offset[1] * d[1]


def plane_readout(result, q0: str) -> str:
    """Words for the plane: the value at the base point, the range, diverged points, Hessian eigenvalues."""
    values = result.values[q0]
    finite = values[np.isfinite(values)]
    bad = int((~np.isfinite(values)).sum())
    if not finite.size:
        return f"**{ui.quantity_label(q0)}** is not finite anywhere on this plane: every point diverged (grey)."
    where = f"at the centre (alpha0, beta0) = ({offset[0]:.4g}, {offset[1]:.4g})" if recentred else "at the base point"
    at_base = f"{where}: {result.center_value(q0):.4g}; " if kind not in ("pca", "through") else ""
    readout = (
        f"**{ui.quantity_label(q0)}** {at_base}over the plane it ranges from {finite.min():.4g} to {finite.max():.4g}."
    )
    if bad:
        readout += f" **{bad} points diverged** (NaN/inf) and are drawn grey."
    if kind.startswith("hessian"):
        info = result.settings["directions"][0]
        from landscape_core import hessian

        spectrum = hessian.top_eigenvalues(problem, k=info["k"], which=info["which"], seed=info["seed"])  # cached
        readout += (
            " Eigenvalues of the two directions: "
            + ", ".join(f"{v:.4g} (residual {r:.1g})" for v, r in zip(spectrum.values, spectrum.residuals))
            + "."
        )
    return readout


base_settings = {
    "workspace": ui.source(),
    "problem": problem.model_hash(),
    "kind": kind,
    "norm": norm,
    "ignore": sorted(ignore),
    "seed": int(seed),
    "span": span,
    "splits": splits,
}
if kind.startswith("hessian"):
    base_settings["hessian_length"] = hessian_length
if recentred:
    base_settings["offset"] = list(offset)

if kind.startswith("hessian"):
    st.info(
        "Hessian directions are eigenvectors (Lanczos on exact Hessian-vector products) of length 1, so alpha is in "
        "parameter units, unless scaled to the random directions' lengths to compare the two planes at one span. "
        "A random slice sees only the average curvature (trace / P). A negative smallest eigenvalue means the base "
        "point is a saddle, which a random slice would hide."
    )

if kind in ("pca", "through"):
    if shape != "2D plane":
        st.info("PCA and three-checkpoint directions are planes; showing the 2D view.")
    shape = "2D plane"
    base_settings["checkpoints"] = through if kind == "through" else names
    base_settings.pop("span")


def gradient_norm_map(result, split: str) -> None:
    """||grad L|| on the very grid of ``result`` (same directions, span and steps); run on request."""
    st.subheader("Where gradients turn erratic: the gradient norm on this plane")
    st.caption(
        f"||grad L_{split}(theta)||, the exact gradient of the full-split loss, at every grid point (one forward and "
        "one backward pass each). Rings and spikes mark where a gradient step is unreliable."
    )
    steps_ = len(result.alphas)

    def run(progress, cancel):
        d = _directions(2)
        return gradient_norm.plane(
            problem,
            d[0],
            d[1],
            span=(-span, span),
            steps=steps_,
            center=_center(d),
            split=split,
            progress=progress,
            cancel=cancel,
        )

    key = jobs.job_key("surface-grad-norm", {**base_settings, "steps": steps_, "split": split})
    grads = ui.run_job(key, run, f"gradient norm on the {steps_}x{steps_} plane", auto=False)
    if grads is not None:
        q = f"{split}_grad_norm"
        chart = ui.heatmap(grads, q, log=True, side=ui.PLANE_SIDE, title=recentred_title(q) if recentred else None)
        st.altair_chart(chart, width="content")
        values = grads.values[q]
        st.markdown(
            f"Gradient norm at the base point **{grads.center_value(q):.3g}**; over the plane from "
            f"{np.nanmin(values):.3g} to {np.nanmax(values):.3g} (median {np.nanmedian(values):.3g})."
        )
        ui.downloads(grads, chart=chart, name=f"plane_{q}")


def recentred_title(q: str) -> list[str]:
    """The heatmap title of a re-centred plane: what is drawn, and the centre it is drawn around."""
    return [
        f"{ui.quantity_label(q)} on the plane centre + alpha d1 + beta d2",
        "centre theta0 + alpha0 d1 + beta0 d2,",
        f"(alpha0, beta0) = ({offset[0]:.4g}, {offset[1]:.4g})",
    ]


def _recentre(alpha: float, beta: float) -> None:
    """Button callback: the clicked point (alpha, beta of the plane shown) becomes the plane's centre."""
    st.session_state["surface_offset_alpha"] = offset[0] + alpha
    st.session_state["surface_offset_beta"] = offset[1] + beta
    ui.save_settings("surface")


def slices_through_click(result, quantities: list[str], events) -> None:
    """The alpha- and beta-slice through the clicked cell, read from the grid (nothing is evaluated)."""
    click = next((c for c in (selections.clicked(e, selections.CELL) for e in events) if c), None)
    i = selections.nearest(result.alphas, click.get("alpha")) if click else None
    j = selections.nearest(result.betas, click.get("beta")) if click else None
    if i is None or j is None:
        st.caption("Click a cell of the map to draw the 1D slices through it (double click clears).")
        return
    a, b = float(result.alphas[i]), float(result.betas[j])
    st.subheader(f"Slices through (alpha, beta) = ({a:.4g}, {b:.4g})")
    values = ", ".join(f"{ui.quantity_label(q)} {result.values[q][i, j]:.6g}" for q in result.values)
    st.markdown(f"At this point: {values}.")
    frame = selections.plane_slices(result, quantities, i, j)
    left, right = st.columns(2)
    left.altair_chart(
        selections.slice_chart(frame, "alpha", a, f"along alpha at beta = {b:.4g}", log=log), width="stretch"
    )
    right.altair_chart(
        selections.slice_chart(frame, "beta", b, f"along beta at alpha = {a:.4g}", log=log), width="stretch"
    )
    if kind in ("pca", "through"):
        st.caption("Re-centring is for random and Hessian planes; this plane is fixed by the checkpoints.")
    else:
        new = (offset[0] + a, offset[1] + b)
        st.button(
            "Re-centre the plane here",
            icon=":material/center_focus_strong:",
            on_click=_recentre,
            args=(a, b),
            key="recentre:surface",
            help=f"Centre the plane at theta0 + {new[0]:.4g} d1 + {new[1]:.4g} d2, same directions and span.",
        )


def _cached_plane(steps_):
    """The random plane of these settings if the cache holds all of it, else ``None`` (nothing is evaluated)."""
    d = _directions(2)
    return surface.cached_plane(problem, d[0], d[1], span=(-span, span), steps=steps_, center=_center(d), splits=splits)


# the estimate and the preview are for a plane still to compute: a cached one opens without them
finished = _cached_plane(steps) if shape == "2D plane" and kind == "random" else None
cost = ui.estimate(problem, splits) if finished is None else None
if cost is not None:
    per_line = max(steps, SURFACE.min_line_steps)
    choices = [
        (s_, s_ * s_ if shape == "2D plane" else n_lines * max(s_, SURFACE.min_line_steps)) for s_ in STEP_CHOICES
    ]
    this_run = steps * steps if shape == "2D plane" else n_lines * per_line
    st.caption(
        f"Estimated time on this machine: {describe_seconds(cost.seconds(this_run))} for these settings "
        f"({cost.samples:,} samples, measured on this model: {1e3 * cost.seconds(1):.3g} ms per point"
        + (", plus the Hessian's eigenvectors" if kind.startswith("hessian") else "")
        + "). Before you change Steps and Run: "
        + ", ".join(f"{s_} steps {describe_seconds(cost.seconds(n_))}" for s_, n_ in choices)
        + "."
    )

points = None
preview = None
if shape == "2D plane" and kind == "random" and finished is None and not recentred:  # a preview is around theta0

    def preview_job(progress, cancel):
        d = _directions(2)
        return preview_mod.preview_plane(
            problem, d[0], d[1], span=(-span, span), splits=splits, cost=cost, progress=progress, cancel=cancel
        )

    preview = ui.run_job(
        jobs.job_key("surface-preview", base_settings),
        preview_job,
        "preview on a data subset",
        # what the job does before it counts points: without the page's estimate it measures its own
        starting="measuring the cost per point" if cost is None else "making the directions and choosing the subset",
    )
if shape == "2D plane" and (preview is not None or kind != "random" or finished is not None or recentred):

    def plane_job(steps_):
        def run(progress, cancel):
            if kind == "pca":
                from landscape_core import trajectory, trajectory_plane

                traj = trajectory.pca(checkpoints, space=problem)  # Li et al. 2018
                return trajectory_plane.pca_plane(
                    problem, traj, steps=steps_, splits=splits, progress=progress, cancel=cancel
                )
            from landscape_core import checkpoint_plane

            thetas = [ws.checkpoint(n).theta for n in through]
            result, _ = checkpoint_plane.plane_through(
                problem, *thetas, steps=steps_, names=tuple(through), splits=splits, progress=progress, cancel=cancel
            )
            return result

        return run

    def refine_job(progress, cancel):
        """The exact grid coarse to fine, each pass published as it arrives; the preview's cells are
        reused where they lie on the grid and were computed on the same data."""
        d = _directions(2)
        known = preview_mod.reusable(preview, problem, splits)
        return preview_mod.refine_plane(
            problem,
            d[0],
            d[1],
            span=(-span, span),
            steps=steps,
            center=_center(d),
            splits=splits,
            on_level=jobs.publish,
            known=known,
            progress=progress,
            cancel=cancel,
            use_cache=True,
        )

    result = None
    exact = False  # a preview or a grid still filling in is drawn, not offered for download or analysis
    if kind in ("pca", "through"):
        coarse = ui.run_job(
            jobs.job_key("surface-plane", {**base_settings, "steps": COARSE_STEPS}),
            plane_job(COARSE_STEPS),
            f"coarse {COARSE_STEPS}x{COARSE_STEPS} plane",
        )
        if coarse is not None:
            result, exact = coarse, True
            if steps != COARSE_STEPS:
                fine = ui.run_job(
                    jobs.job_key("surface-plane", {**base_settings, "steps": steps}),
                    plane_job(steps),
                    f"{steps}x{steps} plane",
                )
                if fine is not None:
                    result = fine
                else:
                    st.caption(
                        f"Showing the coarse {COARSE_STEPS}x{COARSE_STEPS} pass; the {steps}x{steps} grid is not "
                        "finished."
                    )
    else:
        plane_key = jobs.job_key("surface-plane", {**base_settings, "steps": steps})
        result = finished if finished is not None else ui.run_job(plane_key, refine_job, f"{steps}x{steps} plane")
        exact = result is not None
        filling = ui.partial_result(plane_key) if result is None else None
        if filling is not None:
            result = preview_mod.fill_pending(filling)
            st.caption(ui.filling_caption(filling))
    if result is None and preview is not None:
        result = preview
        st.caption(ui.preview_caption(preview, problem))
    if result is not None and kind == "pca":
        info = result.settings.get("trajectory", {})
        points = dict(zip(info.get("names", []), info.get("coords", [])))
        ratio = info.get("explained_variance_ratio", [])
        st.caption(
            "Plane of the first two principal directions of the checkpoints (Li et al. 2018), centred on the final "
            f"model; explained variance {', '.join(f'{100 * r:.1f}%' for r in ratio)}. The white path joins the "
            "checkpoints in training order."
        )
    elif result is not None and kind == "through":
        points = {n: tuple(xy) for n, xy in result.settings.get("points", {}).items()}
        st.caption("Orthonormal plane through the three checkpoints (Garipov et al. 2018): equal scale on both axes.")
    if result is not None:
        quantities = [f"{s}_{quantity}" for s in splits]
        domain = ui.value_domain([result], quantities, log)  # train and val on one colour scale
        heat_tab, three_tab = st.tabs(["Heatmap with contours", "3D surface"])
        charts, events = [], []
        side = ui.PLANE_SIDE if len(quantities) == 1 else ui.PLANE_SIDE_PAIR
        if recentred and points is None and -span <= -offset[0] <= span and -span <= -offset[1] <= span:
            points = {"theta0": (-offset[0], -offset[1])}  # the trained model on a re-centred plane
        # a click belongs to the plane it was made on: another plane (re-centred there, say) starts unclicked
        plane_id = jobs.job_key("surface-click", base_settings).split(":")[1][:12]
        with heat_tab:
            cols = st.columns(len(quantities))
            for col, q in zip(cols, quantities):
                chart = ui.heatmap(
                    result,
                    q,
                    log=log,
                    shared_domain=domain,
                    points=points,
                    path=kind == "pca",
                    side=side,
                    extra=result.values,  # every quantity of the plane in each cell's tooltip
                    title=recentred_title(q) if recentred else None,
                )
                charts.append(chart)  # as exported: a picture, no click
                # fixed size: equal scale on both axes; a click on a cell draws the slices through it
                clickable = chart.add_params(selections.cell_param()).properties(usermeta=selections.SVG)
                events.append(
                    col.altair_chart(clickable, width="content", on_select="rerun", key=f"cell:{q}:{plane_id}")
                )
            slices_through_click(result, quantities, events)
        with three_tab:
            cols = st.columns(len(quantities))
            for col, q in zip(cols, quantities):
                col.plotly_chart(ui.surface_3d(result, q, log=log, shared_domain=domain), key=f"surface3d:{q}")
        q0 = quantities[0]
        with ui.section("The readout"):
            st.markdown(plane_readout(result, q0))
            st.caption(direction_lengths(result.settings.get("direction_norms", []), problem))
        if exact:  # a preview or a grid filling in is not offered for download or analysis: the exact grid follows
            source = ui.source()
            export = charts[0] if len(charts) == 1 else ui.row_of(*charts)  # every map of the view in one file
            ui.downloads(result, chart=export, name=f"plane_{q0}", snippet=lambda: snippet.surface_code(result, source))
            topology_sections.basins(result, q0, log=log, domain=domain, key="surface_topology")
            if kind not in ("pca", "through"):
                gradient_norm_map(result, splits[0])
elif shape != "2D plane":
    lines_steps = max(steps, SURFACE.min_line_steps)

    def lines_job(progress, cancel):
        d = _directions(n_lines)
        out = []
        for i in range(n_lines):
            part = surface.line(
                problem,
                d[i],
                span=(-span, span),
                steps=lines_steps,
                splits=splits,
                progress=lambda done, total, i=i: progress(i * lines_steps + done, n_lines * lines_steps),
                cancel=cancel,
            )
            out.append(part)
        values = {f"{q}@line{i + 1}": line.values[q] for i, line in enumerate(out) for q in line.values}
        return Surface(
            alphas=out[0].alphas, values=values, settings={"kind": "lines", "lines": [s.settings for s in out]}
        )

    result = ui.run_job(
        jobs.job_key("surface-lines", {**base_settings, "steps": lines_steps, "count": n_lines}),
        lines_job,
        f"{n_lines} random 1D lines",
    )
    if result is not None:
        rows = []
        for key, v in result.values.items():
            q, _, line = key.partition("@")
            split, _, name = q.partition("_")
            if name == quantity and split in splits:
                rows += [{"alpha": a, "value": x, "split": split, "line": line} for a, x in zip(result.alphas, v)]
        data = pd.DataFrame(rows)
        spread = data.groupby(["split", "alpha"])["value"].agg(["min", "max", "mean"]).reset_index()
        merged = data.merge(spread, on=["split", "alpha"])
        chart = ui.line_chart(
            merged,
            "alpha",
            "value",
            color="split",
            detail="line",
            band=("min", "max"),
            title=f"{quantity} along {n_lines} random directions (shaded: spread between lines)",
            x_title="alpha (along a normalized direction)",
            y_title=quantity,
            log_y=log,
        )
        st.altair_chart(chart, width="stretch")
        with ui.section("The readout"):
            for split in splits:
                ends = data[(data.split == split) & (data.alpha.abs() == data.alpha.abs().max())]
                center = data[(data.split == split) & (data.alpha == 0)]["value"]
                if len(center) and len(ends):
                    st.markdown(
                        f"**{split}**: {quantity} {center.mean():.4g} at the base point; at alpha = +/-{span:g} it is "
                        f"{ends.value.min():.4g} to {ends.value.max():.4g} across the {n_lines} lines. A wide spread "
                        "means one slice alone would misrepresent the landscape."
                    )
            norms = [line["direction_norms"][0] for line in result.settings.get("lines", [])]
            st.caption(direction_lengths(norms, problem))
        source = ui.source()
        ui.downloads(
            result, chart=chart, name=f"lines_{quantity}", snippet=lambda: snippet.surface_code(result, source)
        )
