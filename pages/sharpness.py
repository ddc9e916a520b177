"""Sharpness & Hessian page: how curved the loss is at one model, measured several ways.

UI only: the form is ``dashboard_ui/sharpness_form.py``, the sections
``dashboard_ui/sharpness_sections.py``, their charts ``dashboard_ui/curvature_charts.py``. Every estimate is shown with its own error (residuals
and a converged flag, a standard error) and read out in plain words.
"""

from __future__ import annotations

import streamlit as st

from dashboard_ui import sharpness_sections as sections
from dashboard_ui import ui
from dashboard_ui.sharpness_form import link, settings_form

st.title("Sharpness & Hessian: how curved the loss is at one model")
st.caption(
    "The Hessian's extreme eigenvalues tell a minimum (all >= 0) from a saddle (some < 0); its trace is the total "
    "curvature; sharpness measures how much the loss can rise under a small perturbation of the weights."
)

ws = ui.workspace()
choices = sections.point_choices(ws)
names = list(choices)
ui.keep_settings("sharp", per_workspace={"sharp_point": names[0]}, link=link(names))
point_name, parts, s, log_density = settings_form(names)
if not parts:
    st.info("Tick at least one thing to compute.")
    st.stop()

point = choices[point_name]
base_problem = ui.problem_for_page(ws, point["which"])
st.subheader(point_name)
metrics_row = st.container()
preview_slot = st.empty()  # a first number while the exact measures run
boxes = {part: st.container() for part in sections.PARTS if part in parts}  # sections in reading order
early = "sharpness" in parts and sections.preview_first(point, base_problem, s)  # a cached one opens without
if early:
    with preview_slot.container():
        sections.preview(point_name, point, base_problem, s)
result = sections.compute(boxes, parts, point_name, point, base_problem, s)
with metrics_row:
    sections.metrics(result, parts, base_problem.space.size)
if "sharpness" in result:
    preview_slot.empty()  # the exact measures replace the preview
elif not early and "sharpness" in parts:  # at a checkpoint: once the parts are seen running
    with preview_slot.container():
        sections.preview(point_name, point, base_problem, s)

spectrum = result.get("eigenvalues")
if spectrum is not None:
    with boxes["eigenvalues"]:
        sections.eigenvalues(spectrum, ui.source(point["which"]), point, parts, s)
if "trace" in result:
    with boxes["trace"]:
        sections.trace(result["trace"])
if "density" in result:
    with boxes["density"]:
        sections.density(result["density"], log_density, spectrum)
if result.get("sharpness"):
    with boxes["sharpness"]:
        sections.sharpness(result["sharpness"], s)
