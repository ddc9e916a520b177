"""The settings form of the Sharpness & Hessian page (widget keys ``sharp_*``).

- ``link(names)`` -> the specs of the settings a shared link carries.
- ``settings_form(names)`` -> ``(point_name, parts, s, log_density)``: ``s`` holds the numbers
  ``landscape_core.curvature_parts.compute`` takes (defaults: ``curvature_parts.default_settings()``).
"""

from __future__ import annotations

import streamlit as st

from dashboard_ui import ui
from dashboard_ui.links import Choice, Flag, Many, Number
from dashboard_ui.sharpness_sections import CONVENTIONS, PART_LABELS, PARTS, WHICH
from landscape_core import curvature_parts

TOLS = [1e-2, 1e-3, 1e-4, 1e-5, 1e-6]
EPSILONS = [1e-4, 5e-4, 1e-3, 5e-3, 1e-2]
RHOS = [0.01, 0.02, 0.05, 0.1, 0.2, 0.5]
AVG_SIGMAS = [1e-3, 5e-3, 1e-2, 2e-2, 5e-2, 0.1]


def link(names: list[str]) -> dict:
    """The form's settings a link carries, with what each widget accepts (``ui.keep_settings(link=)``)."""
    return {
        "sharp_point": Choice(names),
        "sharp_parts": Many(list(PARTS)),
        "sharp_k": Number(1, 20),
        "sharp_which": Choice(WHICH),
        "sharp_tol": Choice(TOLS),
        "sharp_max_iter": Number(50, 5000),
        "sharp_budget": Number(6, 3000),
        "sharp_iters": Number(5, 500),
        "sharp_runs": Number(1, 20),
        "sharp_sigma": Number(0.0, 1e6, integer=False),
        "sharp_eps": Choice(EPSILONS),
        "sharp_rho": Choice(RHOS),
        "sharp_p": Choice(["2", "inf"]),
        "sharp_convention": Choice(list(CONVENTIONS)),
        "sharp_starts": Number(1, 50),
        "sharp_avg_sigma": Choice(AVG_SIGMAS),
        "sharp_samples": Number(4, 1000),
        "sharp_avg_adaptive": Flag(),
        "sharp_seed": Number(0, 10_000),
        "sharp_log": Flag(),
    }


def settings_form(names: list[str]) -> tuple[str, list[str], dict, bool]:
    """The settings form (keys ``sharp_*``): ``(point_name, parts, s, log_density)``."""
    D = curvature_parts.default_settings()
    with st.form("sharp_form"):
        top = st.columns([3, 3])
        point_name = top[0].selectbox("Model to analyse", names, key="sharp_point")
        parts = top[1].multiselect(
            "Compute", list(PARTS), default=list(PARTS), format_func=PART_LABELS.get, key="sharp_parts"
        )
        c1, c2, c3, c4 = st.columns(4)
        c1.markdown("**Eigenvalues**")
        k = c1.number_input(
            "k per end", 1, 20, D["k"], key="sharp_k", help="How many eigenvalues at each end asked for."
        )
        which = c1.radio(
            "Which end",
            WHICH,
            index=WHICH.index(D["which"]),
            key="sharp_which",
            help="'both' also finds the most negative eigenvalues: what tells a saddle from a minimum.",
        )
        tol = c1.select_slider("Tolerance (relative residual)", TOLS, value=D["tol"], key="sharp_tol")
        max_iter = c1.number_input(
            "Max Hessian-vector products", 50, 5000, D["max_iter"], step=50, key="sharp_max_iter"
        )
        c2.markdown("**Trace and density**")
        budget = c2.number_input("Trace budget (products)", 6, 3000, D["budget"], step=6, key="sharp_budget")
        iters = c2.number_input("Density: Lanczos steps per run", 5, 500, D["iters"], key="sharp_iters")
        runs = c2.number_input("Density: runs", 1, 20, D["runs"], key="sharp_runs")
        sigma = c2.number_input(
            "Density: smoothing sigma (0 = 1% of the range)",
            0.0,
            1e6,
            float(D["sigma"] or 0.0),
            format="%.4g",
            key="sharp_sigma",
        )
        c3.markdown("**Worst case**")
        eps = c3.select_slider("epsilon (Keskar box, relative)", EPSILONS, value=D["eps"], key="sharp_eps")
        rho = c3.select_slider("rho (adaptive radius)", RHOS, value=D["rho"], key="sharp_rho")
        p = c3.radio("Adaptive norm p", ["2", "inf"], index=["2", "inf"].index(D["p"]), horizontal=True, key="sharp_p")
        convention = c3.radio(
            "Adaptive scale",
            list(CONVENTIONS),
            index=list(CONVENTIONS).index(D["convention"]),
            format_func=CONVENTIONS.get,
            key="sharp_convention",
            help="How the perturbation scales with the weights: |w| + eta on every parameter (elementwise), or "
            "Kwon et al. 2021's ASAM: |w| + 0.01 on weight tensors and 1 on biases.",
        )
        starts = c3.number_input(
            "Random starts",
            1,
            50,
            D["starts"],
            key="sharp_starts",
            help="The worst case is found by local ascent, so it is a lower bound; more starts keep the best of several.",
        )
        c4.markdown("**Average case**")
        avg_sigma = c4.select_slider("sigma (Gaussian noise)", AVG_SIGMAS, value=D["avg_sigma"], key="sharp_avg_sigma")
        samples = c4.number_input("Samples", 4, 1000, D["samples"], key="sharp_samples")
        avg_adaptive = c4.checkbox("Scale noise by |w| (adaptive)", value=D["avg_adaptive"], key="sharp_avg_adaptive")
        seed = c4.number_input("Seed", 0, 10_000, D["seed"], key="sharp_seed")
        log_density = st.checkbox("Logarithmic density axis", value=True, key="sharp_log")
        st.form_submit_button(
            "Run", type="primary", icon=":material/play_arrow:", on_click=ui.save_settings, args=("sharp",)
        )
    s = {
        "k": int(k),
        "which": which,
        "tol": float(tol),
        "max_iter": int(max_iter),
        "budget": int(budget),
        "iters": int(iters),
        "runs": int(runs),
        "sigma": float(sigma) or None,
        "eps": float(eps),
        "rho": float(rho),
        "p": p,
        "convention": convention,
        "starts": int(starts),
        "avg_sigma": float(avg_sigma),
        "samples": int(samples),
        "avg_adaptive": bool(avg_adaptive),
        "seed": int(seed),
    }
    return point_name, parts, s, log_density
