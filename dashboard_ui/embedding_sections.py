"""Sections of the Embedding principle page: widen model A, then look at what changed and what did not.

UI only: ``landscape_core.embedding_principle`` widens the network and measures the split
directions, ``landscape_core.hessian`` gives the spectra, ``landscape_core.surface`` the planes,
``landscape_core.wide_demo`` trains the wide net from scratch on the digits demos.

- ``settings(problem, demo)`` -> dict or None: the form (layer, width, split, seed, spectrum, plane);
  its settings are kept across pages and travel in a link (``link(problem, usable)``).
- ``widened(problem, s)`` -> Problem: the widened model (cached per settings).
- ``scratch(s, demo)`` -> Problem or None: the same wide architecture trained from scratch.
- ``loss_unchanged(narrow, wide, scratch)``, ``spectra(...)``, ``planes(...)``, ``verdict(...)``.
"""

from __future__ import annotations

import altair as alt
import numpy as np
import pandas as pd
import streamlit as st
import torch

from dashboard_ui import links, theme, ui
from dashboard_ui.links import Choice, Number
from landscape_core import Cancelled, directions, hessian, jobs, surface, wide_demo
from landscape_core.embedding_principle import (
    most_active_copy,
    split_curvature,
    split_direction,
    widen,
    widenable_layers,
)
from landscape_core.problem import Problem

MODEL_COLORS = {
    "model A": None,  # per theme: theme.muted()
    "widened A": "#3b5bdb",
    "wide, trained from scratch": "#e8590c",
}


def _number(fmt: str = "%.6g"):
    return st.column_config.NumberColumn(format=fmt)


# -- settings -----------------------------------------------------------------------------------
SPLITS = ["random", "half"]
KINDS = ["incoming", "outgoing"]
STEPS = [11, 21, 31, 41]


@st.cache_data(max_entries=16, show_spinner=False)
def _layers(_problem, model_hash: str) -> dict[str, str | None]:
    return widenable_layers(_problem)


def _units(problem: Problem, layer: str) -> int:
    return int(problem.space[f"{layer}.weight"].shape[0])


def _widths(units: int) -> tuple[int, int, int]:
    """``(low, high, default)`` of the width after widening a layer of ``units`` units."""
    return units + 1, max(4 * units, units + 1), units + max(1, units // 4)


def link(problem: Problem, usable: list[str]) -> dict:
    """The form's settings a link carries, with what each widget accepts (``ui.keep_settings(link=)``);
    the width's range is that of the layer the link sets (or the first)."""
    low, high, _ = _widths(_units(problem, links.peek("embedding_layer", Choice(usable), usable[0])))
    return {
        "embedding_layer": Choice(usable),
        "embedding_width": Number(low, high),
        "embedding_split": Choice(SPLITS),
        "embedding_seed": Number(0, 10_000),
        "embedding_k": Number(1, 10),
        "embedding_kind": Choice(KINDS),
        "embedding_span": Number(0.1, 3.0, integer=False),
        "embedding_steps": Choice(STEPS),
    }


def settings(problem: Problem, demo: bool) -> dict | None:
    """The form; ``None`` (after saying why) when no layer of the model can be widened."""
    layers = _layers(problem, problem.model_hash())
    usable = [name for name, reason in layers.items() if reason is None]
    if not usable:
        st.warning("No layer of this model can be widened by neuron splitting:")
        for name, reason in layers.items():
            st.markdown(f"- `{name}`: {reason}")
        return None
    ui.keep_settings(
        "embedding",
        per_workspace={"embedding_layer": usable[0], "embedding_width": ui.WIDGET_DEFAULT},
        link=link(problem, usable),
    )
    with st.form("embedding_form"):
        c1, c2, c3 = st.columns(3)
        layer = c1.selectbox("Hidden layer to widen", usable, key="embedding_layer")
        units = _units(problem, layer)
        width = c1.number_input(
            f"Width after (now {units} units)",
            *_widths(units),
            key="embedding_width",
            help="Each new unit copies a unit's incoming weights; its outgoing weights are divided between them.",
        )
        split = c2.radio(
            "Shares of the outgoing weights",
            SPLITS,
            horizontal=True,
            key="embedding_split",
            help="random: uniform on the simplex for each split unit and its copies; half: equal shares.",
        )
        seed = c2.number_input("Seed (units split, shares, directions)", 0, 10_000, 0, key="embedding_seed")
        k = c2.number_input("Eigenvalues per end", 1, 10, 3, key="embedding_k")
        kind = c3.radio(
            "Splitting direction of the plane",
            KINDS,
            key="embedding_kind",
            help="outgoing: shift outgoing weight between a unit and its copy (exactly flat); incoming: move their "
            "incoming weights apart (curved).",
        )
        span = c3.slider("Span of the planes", 0.1, 3.0, 1.0, 0.1, key="embedding_span")
        steps = c3.select_slider("Steps per axis", STEPS, value=21, key="embedding_steps")
        st.form_submit_button(
            "Run", type="primary", icon=":material/play_arrow:", on_click=ui.save_settings, args=("embedding",)
        )
    skipped = {name: reason for name, reason in layers.items() if reason is not None}
    if skipped:
        with st.expander(f"{len(skipped)} layer(s) cannot be widened, and why"):
            for name, reason in skipped.items():
                st.markdown(f"- `{name}`: {reason}")
    return {
        "layer": layer,
        "units": units,
        "width": int(width),
        "split": split,
        "seed": int(seed),
        "k": int(k),
        "kind": kind,
        "span": float(span),
        "steps": int(steps),
        "scratch": demo,
    }


# -- models -------------------------------------------------------------------------------------
@st.cache_resource(max_entries=8, show_spinner="Widening the network...")
def _widen(_problem, model_hash: str, layer: str, width: int, seed: int, split: str) -> Problem:
    return widen(_problem, layer, width, seed=seed, split=split)


def widened(problem: Problem, s: dict) -> Problem | None:
    try:
        return _widen(problem, problem.model_hash(), s["layer"], s["width"], s["seed"], s["split"])
    except ValueError as exc:
        ui.error_box(exc, "Could not widen the model")
        return None


def _like_page(problem: Problem, source: dict) -> Problem:
    """The sidebar's device and evaluation subset applied to a problem built here."""
    if torch.device(source["device"]) != problem.device:
        data = {name: (sp.X.to(source["device"]), sp.y.to(source["device"])) for name, sp in problem.splits.items()}
        problem = Problem(problem.model, problem.loss, data["train"], data.get("val"), device=source["device"])
    return problem.subset(source["subset"], seed=0) if source["subset"] else problem


def scratch(s: dict, demo: str | None) -> Problem | None:
    """The wide net trained from scratch on a digits MLP demo (``demo``); ``None`` while it trains
    or when ``demo`` is ``None`` (another workspace: said so on the page)."""
    if demo is None:
        st.info(
            "A wide net trained from scratch is offered on the digits MLP demos (digits-mlp, digits-seeds), where "
            "the library knows how the model was trained. Here the widened model is shown alone."
        )
        return None

    def train(progress, cancel):
        result = wide_demo.load(demo, s["width"], progress=progress)
        if cancel.is_set():
            raise Cancelled("cancelled")
        return result

    trained = ui.run_job(
        jobs.job_key("embedding-scratch", {"demo": demo, "width": s["width"]}),
        train,
        f"training a 64-{s['width']}-10 net from scratch",
        unit="epochs",
    )
    return None if trained is None else _like_page(trained, ui.source("A"))


# -- 1. the loss -------------------------------------------------------------------------------
def loss_unchanged(narrow: Problem, wide: Problem, wide_scratch: Problem | None) -> None:
    st.subheader("1. The function and the loss are unchanged")
    info = wide.widening
    rows = {"parameters": [narrow.space.size, wide.space.size]}
    for q in narrow.base:
        rows[ui.quantity_label(q)] = [narrow.base[q], wide.base[q]]
    table = pd.DataFrame(rows, index=["model A", "widened A"]).T
    table["widened - A"] = table["widened A"] - table["model A"]
    if wide_scratch is not None:
        table["wide, trained from scratch"] = [
            wide_scratch.space.size,
            *(wide_scratch.base.get(q) for q in narrow.base),
        ]
    st.dataframe(table, width="stretch", column_config={c: _number() for c in table.columns})
    split_units = np.unique(info.sources)
    st.markdown(
        f"Layer `{info.layer}` went from {info.units} to {info.width} units: {len(split_units)} unit(s) were split "
        f"into {info.width - info.units} new ones (each copies its source's incoming weights; the source's outgoing "
        f"weights in `{info.consumer}` are divided between them, shares {info.split}). Every output is the same, "
        f"so the loss and accuracy differ only by rounding ({wide.dtype}): the differences above. The widened "
        "network is the narrow one, embedded in a larger parameter space (Zhang et al. 2021)."
    )


# -- 2. spectra ----------------------------------------------------------------------------------
def _spectra_job(models: dict[str, Problem], wide: Problem, s: dict):
    budget = 300

    def run(progress, cancel):
        total = budget * len(models) + 2
        out = {}
        for i, (label, problem) in enumerate(models.items()):
            out[label] = hessian.top_eigenvalues(
                problem,
                k=s["k"],
                which="both",
                tol=1e-3,
                max_iter=budget,
                seed=s["seed"],
                progress=lambda d, _t, i=i: progress(i * budget + min(d, budget), total),
                cancel=cancel,
            )
        out["split"] = split_curvature(wide, copy=most_active_copy(wide), seed=s["seed"], cancel=cancel)
        progress(total, total)
        return out

    return run


def spectra(models: dict[str, Problem], wide: Problem, s: dict, key: dict) -> dict | None:
    st.subheader("2. The Hessian before and after: new flat directions, and a saddle?")
    result = ui.run_job(
        jobs.job_key("embedding-spectra", key),
        _spectra_job(models, wide, s),
        "Hessian spectra",
        unit="Hessian-vector products",
    )
    if result is None:
        return None
    rows = []
    for label in models:
        spec = result[label]
        for rank, (value, end, res) in enumerate(zip(spec.values, spec.ends, spec.residuals)):
            rows.append({"model": label, "rank": rank + 1, "eigenvalue": value, "end": end, "residual": res})
    frame = pd.DataFrame(rows)
    colors = alt.Scale(domain=list(models), range=[MODEL_COLORS[m] or theme.muted() for m in models])
    chart = (
        alt.Chart(frame)
        .mark_bar()
        .encode(
            x=alt.X("rank:O", title="eigenvalue (largest first, then the most negative)"),
            xOffset="model:N",
            y=alt.Y("eigenvalue:Q", title="Hessian eigenvalue", scale=alt.Scale(type="symlog", constant=1e-4)),
            color=alt.Color("model:N", scale=colors),
            tooltip=["model:N", alt.Tooltip("eigenvalue:Q", format=".4g"), alt.Tooltip("residual:Q", format=".2e")],
        )
        .properties(title="Extreme eigenvalues (symmetric log axis)", width="container", height=300)
    )
    left, right = st.columns([3, 2])
    left.altair_chart(chart, width="stretch")
    summary = pd.DataFrame(
        {
            "lambda_max": [result[label].lambda_max for label in models],
            "lambda_min": [result[label].lambda_min for label in models],
            "converged": ["yes" if result[label].all_converged else "NO" for label in models],
            "products": [result[label].hvp_count for label in models],
        },
        index=list(models),
    )
    right.dataframe(summary, width="stretch", column_config={c: _number() for c in ("lambda_max", "lambda_min")})
    split = result["split"]
    right.dataframe(
        pd.DataFrame(
            {
                "direction": split.kinds,
                "curvature d^T H d": split.curvatures,
                "||H d - (d^T H d) d||": split.residuals,
            }
        ),
        hide_index=True,
        width="stretch",
        column_config={c: _number("%.3g") for c in ("curvature d^T H d", "||H d - (d^T H d) d||")},
    )
    for line in _spectra_readout(result, models):
        st.markdown(line)
    ui.downloads(result["widened A"], chart=chart, name="embedding_spectrum_widened")
    return result


def _spectra_readout(result: dict, models: dict) -> list[str]:
    narrow, wide, split = result["model A"], result["widened A"], result["split"]
    scale = max(abs(narrow.lambda_max), abs(wide.lambda_max), 1e-12)
    copy = split.settings["copy"]
    lines = [
        f"**Outgoing split direction** (new unit {copy}, the copy of the most active unit): curvature "
        f"{split.curvatures[0]:.2g} (vs lambda_max {wide.lambda_max:.3g}): moving outgoing weight between a unit and "
        "its copy leaves every output as it is, so the loss is exactly flat along it: a **new flat direction**. "
        f"||H d - (d^T H d) d|| = {split.residuals[0]:.2g}: it would be 0 (an exact zero eigenvalue, a line of "
        f"critical points) at a critical point; model A's gradient norm is {split.gradient_norm:.2g}. "
        f"**Incoming split direction**: curvature {split.curvatures[1]:.3g}"
        + (" (0 for ReLU, whose second derivative vanishes)." if abs(split.curvatures[1]) <= 1e-9 * scale else ".")
    ]
    negative = -1e-3 * scale
    text = f"**Smallest eigenvalue**: {narrow.lambda_min:.3g} for model A, {wide.lambda_min:.3g} widened."
    if wide.lambda_min < negative and narrow.lambda_min >= negative:
        text += " Model A was a minimum along every computed direction; the widened point is a **saddle**."
    elif wide.lambda_min < negative:
        text += (
            " Model A already has a direction of negative curvature (training stopped near, not at, a minimum); "
            "the widened point keeps it" + (" and goes lower." if wide.lambda_min < narrow.lambda_min else ".")
        )
    else:
        text += " No negative eigenvalue beyond 0.1% of lambda_max: not a saddle at this resolution."
    text += (
        " Theory (Zhang et al. 2021; Fukumizu & Amari 2000), at an exact critical point: each new unit adds "
        "q - r zero eigenvalues, r positive and r negative ones (q outputs of the next layer, r the rank of "
        "E[dL/d out s'(z) x^T], at most q - 1) and the curvature of the incoming split on the rest; the exact counts "
        "are checked on small nets in tests/test_embedding_principle.py."
    )
    lines.append(text)
    if "wide, trained from scratch" in result:
        sc = result["wide, trained from scratch"]
        lines.append(
            f"**Trained from scratch**: lambda_max {sc.lambda_max:.3g} vs {wide.lambda_max:.3g} for the widened model "
            f"({'flatter' if sc.lambda_max < wide.lambda_max else 'sharper'} at the top), lambda_min {sc.lambda_min:.3g}."
        )
    return lines


# -- 3. planes -----------------------------------------------------------------------------------
def _planes_job(wide: Problem, wide_scratch: Problem | None, s: dict):
    def run(progress, cancel):
        n = s["steps"] ** 2
        total = n * (3 if wide_scratch is not None else 2)
        span = (-s["span"], s["span"])
        split_d = split_direction(wide, s["kind"], copy=most_active_copy(wide), seed=s["seed"])
        random_wide = directions.random(wide, count=2, norm="filter", seed=s["seed"])
        out = {
            "split": surface.plane(
                wide, split_d, random_wide[0], span=span, steps=s["steps"], progress=progress, cancel=cancel
            ),
            "widened A": surface.plane(
                wide,
                random_wide[0],
                random_wide[1],
                span=span,
                steps=s["steps"],
                progress=lambda d, _t: progress(n + d, total),
                cancel=cancel,
            ),
        }
        if wide_scratch is not None:
            random_scratch = directions.random(wide_scratch, count=2, norm="filter", seed=s["seed"])
            out["wide, trained from scratch"] = surface.plane(
                wide_scratch,
                random_scratch[0],
                random_scratch[1],
                span=span,
                steps=s["steps"],
                progress=lambda d, _t: progress(2 * n + d, total),
                cancel=cancel,
            )
        return out

    return run


def planes(wide: Problem, wide_scratch: Problem | None, s: dict, key: dict) -> dict | None:
    st.subheader("3. Planes through the widened point, and through a wide minimum found from scratch")
    result = ui.run_job(jobs.job_key("embedding-planes", key), _planes_job(wide, wide_scratch, s), "planes")
    if result is None:
        return None
    q = "train_loss"
    split_chart = ui.heatmap(
        result["split"],
        q,
        log=True,
        title=f"Widened A: {s['kind']} split direction (alpha, parameter units) x random direction (beta)",
    )
    st.altair_chart(split_chart, width="stretch")
    alphas, values = result["split"].alphas, result["split"].values[q]
    centre = values[:, len(result["split"].betas) // 2]
    st.caption(
        f"Along alpha at beta = 0 the train loss ranges over [{np.nanmin(centre):.4g}, {np.nanmax(centre):.4g}] for "
        f"alpha in [{alphas[0]:g}, {alphas[-1]:g}]"
        + (": flat to rounding, as the theory says." if s["kind"] == "outgoing" else ".")
    )
    others = [label for label in ("widened A", "wide, trained from scratch") if label in result]
    domain = ui.value_domain([result[label] for label in others], q, True)
    cols = st.columns(len(others))
    charts = {}
    for col, label in zip(cols, others):
        charts[label] = ui.heatmap(result[label], q, log=True, shared_domain=domain, title=f"{label}: random plane")
        col.altair_chart(charts[label], width="stretch")
    with st.expander("Downloads: the planes"):
        ui.downloads(result["split"], chart=split_chart, name="embedding_split_plane")
        for label in others:
            ui.downloads(result[label], chart=charts[label], name=f"embedding_plane_{label.replace(',', '')}")
    return result


def rise(plane) -> float:
    """Mean train-loss increase from the centre to the border of a plane (how fast it climbs)."""
    values = plane.values["train_loss"]
    border = np.concatenate([values[0], values[-1], values[1:-1, 0], values[1:-1, -1]])
    return float(np.nanmean(border) - plane.center_value("train_loss"))


def verdict(narrow: Problem, wide: Problem, wide_scratch: Problem | None, spectra_result, planes_result) -> None:
    if wide_scratch is None or spectra_result is None or planes_result is None:
        return
    st.subheader("4. Embedded minimum vs a wide minimum found from scratch")
    label = "wide, trained from scratch"
    lower = wide_scratch.base["train_loss"] < wide.base["train_loss"]
    flatter = spectra_result[label].lambda_max < spectra_result["widened A"].lambda_max
    rise_w, rise_s = rise(planes_result["widened A"]), rise(planes_result[label])
    st.markdown(
        f"Trained from scratch with model A's recipe, the wide net ends at train loss "
        f"**{wide_scratch.base['train_loss']:.4g}** ({'lower' if lower else 'higher'} than the embedded "
        f"{wide.base['train_loss']:.4g}), val loss {wide_scratch.base.get('val_loss', float('nan')):.4g} vs "
        f"{wide.base.get('val_loss', float('nan')):.4g}. Its top eigenvalue is "
        f"**{spectra_result[label].lambda_max:.3g}** vs {spectra_result['widened A'].lambda_max:.3g} "
        f"({'flatter' if flatter else 'sharper'}), and on random planes of the same span its loss rises by "
        f"{rise_s:.3g} on average at the border vs {rise_w:.3g} ({'flatter' if rise_s < rise_w else 'steeper'}). "
        "The embedded point is one of many equivalent points of the wide landscape; training the wide net finds "
        "a minimum of its own."
    )
