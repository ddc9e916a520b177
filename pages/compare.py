"""Compare page: two models on identical directions, span, data and one colour scale."""

from __future__ import annotations

import numpy as np
import pandas as pd
import streamlit as st

from dashboard_ui import selections, ui
from dashboard_ui import topology as topology_sections
from dashboard_ui.links import Choice, Flag, Number
from landscape_core import directions, jobs, snippet, surface, verdict
from landscape_core import preview as preview_mod
from landscape_core.comparison import metrics as compare_metrics  # the report's table is the page's
from landscape_core.defaults import COMPARE
from landscape_core.first_screen import compare_splits
from landscape_core.results import Surface

st.title("Compare: two models on the same slices")
st.caption(
    "Both models are cut along directions drawn from the same seed, each normalized to its own weights "
    "(Li et al. 2018), over the same span and data, and drawn on one shared colour scale."
)

ws = ui.workspace()
if ws.compare is None:
    st.info(
        f"Workspace **{ui.plain(ws.name)}** has a single model. Pick **digits-mlp** (small vs large batch) or "
        "**digits-seeds** (two seeds) in the sidebar to compare two models."
    )
    st.stop()

label_a, label_b = ws.labels
problem_a = ui.problem_for_page(ws, "A")
problem_b = ui.problem_for_page(ws, "B")
splits = [s for s in ui.chosen_splits(problem_a) if s in compare_splits(problem_a, problem_b)] or ["train"]
same_space = problem_a.space.size == problem_b.space.size

try:
    from landscape_core import hessian
except Exception:  # the curvature engine is optional for this page
    hessian = None
try:
    from landscape_core import sharpness
except Exception:
    sharpness = None
SIGMA, SAMPLES = COMPARE.average_sigma, COMPARE.average_samples  # adaptive average sharpness
NORMS = ["filter", "layer"]
STEPS = [11, 21, 31, 41, 51]
IGNORE = tuple(COMPARE.ignore)
LINK = {  # the settings a link carries, checked against the widgets' options
    "compare_split": Choice(splits),
    "compare_quantity": Choice(["loss", *problem_a.metrics]),
    "compare_norm": Choice(NORMS),
    "compare_seed": Number(0, 10_000),
    "compare_span": Number(0.1, 3.0, integer=False),
    "compare_steps": Choice(STEPS),
    "compare_lines": Number(2, 10),
    "compare_hessian": Flag() if hessian is not None else Choice([False]),  # the box is disabled without it
    "compare_log": Flag(),
    "compare_topology_threshold": Number(0.0, 20.0, integer=False),  # basins counted under the maps, in %
}
ui.keep_settings("compare", per_workspace={"compare_split": splits[0], "compare_quantity": "loss"}, link=LINK)

with st.form("compare-settings"):
    c1, c2, c3 = st.columns(3)
    split = c1.selectbox("Split shown in the maps", splits, key="compare_split")
    quantity = c1.selectbox("Quantity", ["loss", *problem_a.metrics], key="compare_quantity")
    norm = c2.selectbox("Normalization", NORMS, index=NORMS.index(COMPARE.norm), key="compare_norm")
    seed = c2.number_input("Seed (same for both)", 0, 10_000, COMPARE.seed, key="compare_seed")
    span = c3.slider("Span: -span to +span", 0.1, 3.0, COMPARE.span, 0.1, key="compare_span")
    steps = c3.select_slider("Steps per axis", STEPS, value=COMPARE.steps, key="compare_steps")
    c4, c5, c6 = st.columns(3)
    n_lines = c4.slider("Random 1D lines for the slice-rise metric", 2, 10, COMPARE.lines, key="compare_lines")
    want_hessian = c5.checkbox(
        "lambda_max (top Hessian eigenvalue)",
        value=hessian is not None and COMPARE.hessian,
        disabled=hessian is None,
        key="compare_hessian",
        help="Lanczos on exact Hessian-vector products; its residual is shown in the table.",
    )
    log = c6.checkbox("Log colour scale", key="compare_log")
    st.form_submit_button("Run", type="primary", on_click=ui.save_settings, args=("compare",))

q = f"{split}_{quantity}"
common = {"norm": norm, "ignore": list(IGNORE), "seed": int(seed), "span": span, "splits": splits}


def plane_directions(problem):
    return directions.random(problem, count=2, norm=norm, ignore=IGNORE, seed=int(seed))


def cached_plane(problem):
    """The plane of this model if the cache holds all of it, else ``None`` (nothing is evaluated)."""
    d = plane_directions(problem)
    return surface.cached_plane(problem, d[0], d[1], span=(-span, span), steps=steps, splits=splits)


def preview_job(problem, cost):
    def run(progress, cancel):
        d = plane_directions(problem)
        return preview_mod.preview_plane(problem, d[0], d[1], span=(-span, span), splits=splits, cost=cost)

    return run


def plane_job(problem, preview):
    """The exact grid coarse to fine, each pass published as it arrives (``ui.partial_result``)."""

    def run(progress, cancel):
        d = plane_directions(problem)
        known = preview_mod.reusable(preview, problem, splits)
        return preview_mod.refine_plane(
            problem,
            d[0],
            d[1],
            span=(-span, span),
            steps=steps,
            splits=splits,
            on_level=jobs.publish,
            known=known,
            progress=progress,
            cancel=cancel,
            use_cache=True,
        )

    return run


def lines_job(problem):
    def run(progress, cancel):
        d = directions.random(problem, count=n_lines, norm=norm, ignore=IGNORE, seed=int(seed) + 1)
        out = []
        for i in range(n_lines):
            out.append(
                surface.line(
                    problem,
                    d[i],
                    span=(-span, span),
                    steps=COMPARE.line_steps,
                    splits=splits,
                    progress=lambda done, total, i=i: progress(i * total + done, n_lines * total),
                    cancel=cancel,
                )
            )
        values = {f"{k}@line{i + 1}": line.values[k] for i, line in enumerate(out) for k in line.values}
        return Surface(
            alphas=out[0].alphas, values=values, settings={"kind": "lines", "lines": [s.settings for s in out]}
        )

    return run


def hessian_job(problem):
    def run(progress, cancel):
        return hessian.top_eigenvalues(problem, k=1, which="largest", seed=int(seed), progress=progress, cancel=cancel)

    return run


def sharpness_job(problem):
    def run(progress, cancel):
        return sharpness.average(
            problem, sigma=SIGMA, samples=SAMPLES, adaptive=True, seed=int(seed), progress=progress, cancel=cancel
        )

    return run


def key(kind: str, which: str, problem, **extra) -> str:
    return jobs.job_key(kind, {**common, **extra, "model": problem.model_hash(), "source": ui.source(which)})


# -- the two planes ------------------------------------------------------------------------
# cached planes open at once (no preview, nothing evaluated); else a labelled preview of each model
# on a data subset first, then the exact grids one after the other, each drawn as it fills in
models = {"A": (problem_a, label_a), "B": (problem_b, label_b)}
planes = {which: cached_plane(problem) for which, (problem, _) in models.items()}
previews, fillings = {}, {}
for which, (problem, label) in models.items():
    if planes[which] is None:
        previews[which] = ui.run_job(
            key("compare-preview", which, problem),
            preview_job(problem, ui.estimate(problem, splits)),
            f"{label}: preview on a data subset",
        )
if all(p is not None for p in previews.values()):
    for which, (problem, label) in models.items():
        if planes[which] is None:
            plane_key = key("compare-plane", which, problem, steps=steps)
            planes[which] = ui.run_job(plane_key, plane_job(problem, previews.get(which)), f"{label}: plane")
            if planes[which] is None:
                fillings[which] = ui.partial_result(plane_key)
                break  # B's grid after A's
plane_a, plane_b = planes["A"], planes["B"]

# -- metrics: base values, slice rise, lambda_max --------------------------------------------
lines_a = ui.run_job(key("compare-lines", "A", problem_a, count=n_lines), lines_job(problem_a), f"{label_a}: 1D lines")
lines_b = ui.run_job(key("compare-lines", "B", problem_b, count=n_lines), lines_job(problem_b), f"{label_b}: 1D lines")
spectra = {}
if want_hessian and hessian is not None:
    for which, problem, label in (("A", problem_a, label_a), ("B", problem_b, label_b)):
        spectra[which] = ui.run_job(
            key("compare-hessian", which, problem), hessian_job(problem), f"{label}: lambda_max"
        )
averages = {}
if sharpness is not None:
    for which, problem, label in (("A", problem_a, label_a), ("B", problem_b, label_b)):
        averages[which] = ui.run_job(
            key("compare-average", which, problem, sigma=SIGMA, samples=SAMPLES),
            sharpness_job(problem),
            f"{label}: adaptive average sharpness",
        )


def linked_view(maps: list[tuple], readout: dict):
    """A, B and B - A as one view: a shared hover (the cell under the pointer outlined in all three,
    its tooltip carrying A, B and B - A) and a shared pan and zoom. ``maps``: ``(surface, quantity,
    heatmap keywords)`` per map; ``readout``: ``{name: grid}`` shown in every cell's tooltip."""
    panels = [ui.heatmap(s_, q_, extra=readout, hover="hover", **kw) for s_, q_, kw in maps]
    return selections.linked(panels)  # A and B on a row, B - A below


if plane_a is None or plane_b is None:  # the previews, or the grids filling in, until both are exact
    shown = {}
    for which in models:
        if planes[which] is not None:
            shown[which] = (planes[which], f"exact {steps}x{steps} grid")
        elif fillings.get(which) is not None:
            shown[which] = (preview_mod.fill_pending(fillings[which]), ui.filling_caption(fillings[which]))
        elif previews.get(which) is not None:
            shown[which] = (previews[which], ui.preview_caption(previews[which], models[which][0]))
    if shown:
        domain = ui.value_domain([picture for picture, _ in shown.values()], q, log)
        for col, (which, (picture, caption)) in zip(st.columns(2), shown.items()):
            title = f"{models[which][1]} ({which}): {ui.quantity_label(q)}"
            col.altair_chart(
                ui.heatmap(picture, q, log=log, shared_domain=domain, title=title, side=ui.PLANE_SIDE_PAIR),
                width="content",
            )
            col.caption(caption)
        st.caption("The difference B - A, the linked view and the downloads follow when both exact grids are done.")

if plane_a is not None and plane_b is not None:
    domain = ui.value_domain([plane_a, plane_b], q, log)
    side = ui.PLANE_SIDE_PAIR
    title_a, title_b = f"{label_a} (A): {ui.quantity_label(q)}", f"{label_b} (B): {ui.quantity_label(q)}"
    chart_a = ui.heatmap(plane_a, q, log=log, shared_domain=domain, title=title_a, side=side)
    chart_b = ui.heatmap(plane_b, q, log=log, shared_domain=domain, title=title_b, side=side)
    diff = plane_b.values[q] - plane_a.values[q]
    bound = float(np.nanmax(np.abs(diff[np.isfinite(diff)]))) if np.isfinite(diff).any() else 1.0
    diff_surface = Surface(
        alphas=plane_a.alphas,
        betas=plane_a.betas,
        values={"B - A": diff},  # the legend's title: short enough for half the page
        settings={"kind": "difference", "directions": plane_a.settings["directions"], "A": plane_a.settings},
    )
    diff_chart = ui.heatmap(
        diff_surface,
        "B - A",
        shared_domain=(-bound, bound),
        scheme="redblue-r",
        title=f"Difference B - A of {ui.quantity_label(q)} (red: B higher)",
        side=side,
    )
    diff_title = f"Difference B - A of {ui.quantity_label(q)} (red: B higher)"
    linked = linked_view(
        [
            (plane_a, q, {"log": log, "shared_domain": domain, "title": title_a, "side": side}),
            (plane_b, q, {"log": log, "shared_domain": domain, "title": title_b, "side": side}),
            (
                diff_surface,
                "B - A",
                {"shared_domain": (-bound, bound), "scheme": "redblue-r", "title": diff_title, "side": side},
            ),
        ],
        {"A": plane_a.values[q], "B": plane_b.values[q], "B - A": diff},
    )
    st.vega_lite_chart(linked, width="content", key="linked:compare")  # fixed size: equal scale on both axes
    st.caption(
        "One linked view: the pointer outlines the same cell in A, B and B - A, and its tooltip gives all three "
        "values; drag to pan and scroll to zoom all three together (double click: the whole plane)."
    )
    if lines_a is not None and lines_b is not None:
        rows = []
        for label, lines in ((label_a, lines_a), (label_b, lines_b)):
            for k, v in lines.values.items():
                if k.startswith(f"{q}@"):
                    rows += [{"alpha": a, "value": x, "model": label, "line": k} for a, x in zip(lines.alphas, v)]
        data = pd.DataFrame(rows)
        spread = data.groupby(["model", "alpha"])["value"].agg(["min", "max"]).reset_index()
        st.altair_chart(
            ui.line_chart(
                data.merge(spread, on=["model", "alpha"]),
                "alpha",
                "value",
                color="model",
                detail="line",
                band=("min", "max"),
                title=f"{ui.quantity_label(q)} along {n_lines} random 1D lines per model",
                x_title="alpha (along a filter-normalized direction)",
                y_title=ui.quantity_label(q),
                log_y=log,
            ),
            width="stretch",
        )
    st.caption(
        "Each map is one 2D projection through a very high-dimensional space; the same seed makes the two cuts "
        "comparable, not identical in meaning. The metrics below do not depend on one draw."
    )
    both = Surface(
        alphas=plane_a.alphas,
        betas=plane_a.betas,
        values={
            **{f"A_{k}": v for k, v in plane_a.values.items()},
            **{f"B_{k}": v for k, v in plane_b.values.items()},
        },
        settings={"kind": "compare", "labels": [label_a, label_b], "A": plane_a.settings, "B": plane_b.settings},
    )
    sources = ui.source("A"), ui.source("B")
    three = ui.row_of(chart_a, chart_b, diff_chart, independent_colors=True)  # A, B and B - A in one image
    ui.downloads(
        both, chart=three, name="compare_planes", snippet=lambda: snippet.compare_code(plane_a, plane_b, *sources)
    )


st.subheader("Metrics")
with ui.section("The metrics and the verdict"):
    metrics_a = compare_metrics(problem_a, splits, lines_a, spectra.get("A"), averages.get("A"))
    metrics_b = compare_metrics(problem_b, splits, lines_b, spectra.get("B"), averages.get("B"))
    rows = verdict.metric_table(metrics_a, metrics_b)
    table = pd.DataFrame(
        {
            "metric": [r["title"] for r in rows],
            f"A: {label_a}": [r["A"] for r in rows],
            f"B: {label_b}": [r["B"] for r in rows],
            "ratio B / A": [r["ratio"] for r in rows],
        }
    )
    st.dataframe(
        ui.readable(table, formats={"ratio B / A": "{:.2f}x"}),
        hide_index=True,
        column_config={"metric": st.column_config.TextColumn(width="large")},  # whole metric names
    )
    notes = []
    if lines_a is not None:
        notes.append(
            f"Slice rise: mean increase of the train loss from the base point to alpha = +/-{span:g}, averaged over "
            f"{n_lines} random filter-normalized lines (seed {int(seed) + 1})."
        )
    for which, label in (("A", label_a), ("B", label_b)):
        spectrum = spectra.get(which)
        if spectrum is not None:
            state = "converged" if spectrum.all_converged else "NOT converged"
            notes.append(f"lambda_max of {label}: residual {spectrum.residuals[0]:.2g} ({state}).")
    for which, label in (("A", label_a), ("B", label_b)):
        average = averages.get(which)
        if average is not None:
            notes.append(
                f"Adaptive average sharpness of {label}: {average.value:.3g} +/- {average.stderr:.2g} (standard error; "
                f"{SAMPLES} samples of Gaussian noise with sigma = {SIGMA:g} x |theta| per weight)."
            )
    if not same_space:
        notes.append(
            "The two models have different architectures: compare the size-free metrics (ratios), not raw maps."
        )
    for note in notes:
        st.caption(note)
    st.success(verdict.verdict(metrics_a, metrics_b, (label_a, label_b)))
    st.download_button(
        "Metrics CSV",
        table.to_csv(index=False),
        "compare_metrics.csv",
        "text/csv",
        key="dl:compare:metrics",
        on_click="ignore",
        icon=":material/table:",
    )
if plane_a is not None and plane_b is not None and lines_a is not None and lines_b is not None:

    def report_bytes() -> bytes:  # built on click, from the cached results: the same bytes as `landscape report`
        from dashboard_ui.report import report_html
        from landscape_core.comparison import CompareSettings, compare

        settings = CompareSettings(
            splits=tuple(splits),
            split=split,
            quantity=quantity,
            norm=norm,
            seed=int(seed),
            span=float(span),
            steps=int(steps),
            lines=int(n_lines),
            hessian=bool(want_hessian and hessian is not None),
            log=bool(log),
        )
        return report_html(compare(problem_a, problem_b, (label_a, label_b), settings), ws.name).encode("utf-8")

    st.download_button(
        "Download report",
        report_bytes,
        "compare_report.html",
        "text/html",
        key="dl:compare:report",
        on_click="ignore",
        icon=":material/description:",
        help="One HTML file that opens offline in any browser: the verdict, every chart, the table, the settings.",
    )

if plane_a is not None and plane_b is not None:
    topology_sections.diagrams(plane_a, plane_b, q, (label_a, label_b))
