"""Interpolation page: the loss on the straight line between two models, and its barrier.

UI only: the form and the sections live in ``dashboard_ui/interpolation_sections.py``, their
charts in ``dashboard_ui/interpolation_charts.py``. The user picks two endpoints (checkpoints of
A, or the final A and B models when they share an architecture), the span and steps, and how
BatchNorm statistics are set along the path.
"""

from __future__ import annotations

import streamlit as st

from dashboard_ui import gradient_sections, ui
from dashboard_ui import interpolation_sections as sections
from landscape_core.batchnorm import has_batchnorm

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
choices = sections.endpoint_choices(ws)
names = list(choices)
bn_model = has_batchnorm(problem)

if len(names) < 2:
    st.info(
        "This workspace has a single model and no checkpoints, so there is no second point to interpolate to. "
        "Pick a demo with checkpoints (e.g. digits-mlp) or load checkpoints on the Your model page."
    )
    st.stop()

first, second = sections.default_pair(names, ws)
ui.keep_settings(
    "interp", per_workspace={"interp_a": names[first], "interp_b": names[second]}, link=sections.link(names)
)
form = sections.settings_form(names, first, second, bn_model)
if form["name_a"] == form["name_b"]:
    st.error("Start and end are the same model: the path would have zero length. Pick two different models.")
    st.stop()

end_a, end_b = choices[form["name_a"]], choices[form["name_b"]]
bn = form["bn"]
modes = [bn] + ([m for m in sections.BN_MODES if m != bn] if form["compare_bn"] else [])
paths = sections.cached(problem, end_a, end_b, form, splits, modes)  # a cached path opens at once
if paths is None:
    slot = st.container()  # the preview, above the exact path's progress
    preview, preview_finished = sections.preview(problem, end_a, end_b, form, splits)
    if preview_finished:  # the exact path starts once the preview is drawn
        paths = sections.compute(problem, end_a, end_b, form, splits, modes, known=preview)
    if paths is None:
        if preview is not None:
            with slot:
                sections.preview_section(preview, problem, form, splits, modes)
        st.stop()
path = paths[bn]

chart = sections.path_section(path, splits, form["name_a"], form["name_b"], form["log_y"])
sections.barrier_table_section(path, splits)
if bn_model:
    sections.batchnorm_section(paths, splits)
sections.provenance(path, chart, end_a, end_b, form, splits)
gradient_sections.path_gradient(problem, end_a, end_b, paths, sections.job_settings(end_a, end_b, form, splits, modes))
